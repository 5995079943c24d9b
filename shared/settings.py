"""Node configuration: one YAML file plus environment overrides.

The file is named by ``OICP_P2P_CONFIG`` (or passed explicitly); any key can be overridden by an
environment variable ``OICP_P2P_<SECTION>__<KEY>`` (for example ``OICP_P2P_RABBITMQ__URL``).
Environment wins over the file, so a container image can ship the file and take secrets from the
environment.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.oicp.ids import OPERATOR_ID_PATTERN, PROVIDER_ID_PATTERN, evse_belongs_to, normalize_id
from shared.oicp.types import GeoCoordinatesResponseFormat
from shared.peers.profiles import (
    BUILTIN_PROFILES,
    DEFAULT_PROFILE,
    CompatibilityProfile,
    inbound_aliases,
    resolve_profiles,
)

CONFIG_ENV = "OICP_P2P_CONFIG"

OperatorIdStr = Annotated[str, StringConstraints(pattern=OPERATOR_ID_PATTERN)]
ProviderIdStr = Annotated[str, StringConstraints(pattern=PROVIDER_ID_PATTERN)]


class Role(StrEnum):
    CPO = "cpo"
    EMP = "emp"


class PushOperation(StrEnum):
    """The OICP push operations a CPO node can deliver to an EMP peer."""

    PUSH_EVSE_DATA = "PushEvseData"
    PUSH_EVSE_STATUS = "PushEvseStatus"
    PUSH_PRICING_PRODUCT_DATA = "PushPricingProductData"
    PUSH_EVSE_PRICING = "PushEVSEPricing"
    # EMP role: the node's tokens, to a CPO peer that authorizes offline
    PUSH_AUTHENTICATION_DATA = "PushAuthenticationData"


#: What a CPO node pushes to EMP peers; PushAuthenticationData goes the other way.
CPO_PUSH_OPERATIONS = frozenset(
    {
        PushOperation.PUSH_EVSE_DATA,
        PushOperation.PUSH_EVSE_STATUS,
        PushOperation.PUSH_PRICING_PRODUCT_DATA,
        PushOperation.PUSH_EVSE_PRICING,
    }
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def token_digest(token: str) -> str:
    """Peers' bearer tokens are compared and stored as SHA-256 digests, never in clear."""
    return hashlib.sha256(token.encode()).hexdigest()


MAX_PULL_PAGE_SIZE = 2000


#: Hubject's acceptable-use limits in calls per minute, under this node's operation names (the
#: catalogue of shared.oicp.operations). The reservations are not on Hubject's list: they get the limits
#: of the remote start and stop they resemble. The dispatching ``PullEvseStatus`` path is limited by the
#: variant its body asks for, so ``PullEvseStatus`` here is the plain (full) pull.
HUBJECT_RATE_LIMITS: dict[str, int] = {
    "PullEvseStatusById": 300,
    "PullEvseStatusByOperatorId": 75,
    "PullEvseStatus": 6,
    "PullEvseData": 100,
    "PushEvseStatus": 2000,
    "PushEvseData": 375,
    "AuthorizeStart": 200,
    "AuthorizeStop": 50,
    "AuthorizeRemoteStart": 100,
    "AuthorizeRemoteStop": 200,
    "AuthorizeRemoteReservationStart": 100,
    "AuthorizeRemoteReservationStop": 200,
    "PushAuthenticationData": 50,
    "ChargeDetailRecord": 350,
    "GetChargeDetailRecords": 200,
    "ChargingNotification": 100,
    "PullEVSEPricing": 280,
    "PullPricingProductData": 300,
    "PushEVSEPricing": 6,
    "PushPricingProductData": 6,
}
#: Hubject's spellings of the same operations, accepted in configuration files.
RATE_LIMIT_ALIASES: dict[str, str] = {
    "PullEVSEStatusByID": "PullEvseStatusById",
    "PullEVSEStatusByOperatorID": "PullEvseStatusByOperatorId",
    "PullEVSEStatus": "PullEvseStatus",
    "PullEVSEData": "PullEvseData",
    "PushEVSEStatus": "PushEvseStatus",
    "PushEVSEData": "PushEvseData",
    "AuthorizationStart": "AuthorizeStart",
    "AuthorizationStop": "AuthorizeStop",
    "ChargingNotifications": "ChargingNotification",
}
#: The limiter keeps one Redis entry per call of the last minute: this bounds its memory per key.
MAX_CALLS_PER_MINUTE = 60_000

CallsPerMinute = Annotated[int, Field(ge=1, le=MAX_CALLS_PER_MINUTE)]


def canonical_rate_limits(limits: dict[str, int | None]) -> dict[str, int | None]:
    """Operation names as the catalogue spells them; an unknown name is refused (a typo must not leave
    an operation silently unlimited). ``None`` means no limit for that operation."""
    canonical: dict[str, int | None] = {}
    for name, calls in limits.items():
        operation = RATE_LIMIT_ALIASES.get(name, name)
        if operation not in HUBJECT_RATE_LIMITS:
            raise ValueError(f"{name!r} is not a rate-limited OICP operation (known: {', '.join(HUBJECT_RATE_LIMITS)})")
        canonical[operation] = calls
    return canonical


class RateLimits(Strict):
    """Calls per minute per peer and operation, inbound (HTTP 429 beyond it) and outbound (never more).

    A peer's ``rate_limits`` override these per operation; which direction an entry governs follows from
    the operation: what the peer calls on this node is limited inbound, what this node calls on the
    peer outbound."""

    enabled: bool = Field(default=True, description="false: no rate limits at all, inbound or outbound")
    per_minute: dict[str, CallsPerMinute | None] = Field(
        default_factory=lambda: dict(HUBJECT_RATE_LIMITS),
        description="node-wide calls per minute by operation, merged over Hubject's limits (null: unlimited)",
    )

    @field_validator("per_minute")
    @classmethod
    def _known_operations(cls, value: dict[str, int | None]) -> dict[str, int | None]:
        return {**HUBJECT_RATE_LIMITS, **canonical_rate_limits(value)}


class PullSchedule(Strict):
    """Scheduled pulls from a CPO peer that does not push (we are its EMP): PullEvseData (LastCall deltas,
    paged) and PullEvseStatus (DIGEST §9.2, §9.3, §9.5)."""

    evse_data_interval_seconds: float = Field(
        default=86_400.0, ge=1, description="PullEvseData every so often (the spec recommends once a day)"
    )
    evse_status_interval_seconds: float = Field(
        default=60.0, ge=1, description="PullEvseStatus every so often (the spec recommends 1 to 5 minutes)"
    )
    page_size: int = Field(
        default=MAX_PULL_PAGE_SIZE, ge=1, le=MAX_PULL_PAGE_SIZE, description="records per PullEvseData page"
    )
    geo_format: GeoCoordinatesResponseFormat = Field(
        default=GeoCoordinatesResponseFormat.DECIMAL_DEGREE, description="GeoCoordinatesResponseFormat asked for"
    )
    provider_id: ProviderIdStr | None = Field(
        default=None, description="the ProviderID the peer knows this node by (default: the first provider_ids)"
    )


def readable_file(value: Path | None) -> Path | None:
    """A certificate, key or CA file must exist and be readable when the node starts (relative paths
    are taken from the working directory, the repository root under ``make``)."""
    if value is None:
        return None
    if not value.is_file():
        raise ValueError(f"file {value} does not exist")
    if not os.access(value, os.R_OK):
        raise ValueError(f"file {value} is not readable")
    return value


def check_cert_chain(cert_file: Path, key_file: Path) -> None:
    """The certificate and its key load together (a mismatched key is caught at start, not at the
    first handshake)."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"{cert_file} and {key_file} do not load as certificate and key: {exc}") from exc


def check_ca_bundle(ca_file: Path) -> None:
    try:
        ssl.create_default_context(cafile=str(ca_file))
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"{ca_file} is not a PEM CA bundle: {exc}") from exc


class PeerTlsSettings(Strict):
    """How this node calls the peer over HTTPS: the client certificate it presents (mutual TLS) and the
    CA the peer's server certificate must chain to. Files are re-read when they change."""

    client_cert_file: Path | None = Field(default=None, description="PEM client certificate (chain) presented")
    client_key_file: Path | None = Field(default=None, description="PEM private key of client_cert_file")
    ca_file: Path | None = Field(
        default=None, description="PEM CA bundle the peer's server certificate must chain to (default: system CAs)"
    )

    @field_validator("client_cert_file", "client_key_file", "ca_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        return readable_file(value)

    @model_validator(mode="after")
    def _check_pair(self) -> PeerTlsSettings:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("client_cert_file and client_key_file go together")
        if self.client_cert_file is not None and self.client_key_file is not None:
            check_cert_chain(self.client_cert_file, self.client_key_file)
        if self.ca_file is not None:
            check_ca_bundle(self.ca_file)
        return self


class ProbeOperation(StrEnum):
    """The OICP round trip of a peer probe (shared/peers/probe.py): a call that changes nothing at the peer."""

    AUTO = "auto"  # PullEvseStatusById for CPO peers, AuthorizeStop for EMP peers
    PULL_EVSE_STATUS_BY_ID = "PullEvseStatusById"  # CPO peers: a random, unknown EvseID of the operator
    AUTHORIZE_STOP = "AuthorizeStop"  # EMP peers: a random, unknown SessionID (answer: NotAuthorized)
    NONE = "none"  # DNS, TCP and TLS only


class PeerProbeSettings(Strict):
    """The peer probe: DNS, TCP, TLS (certificate expiry) and an OICP round trip that changes nothing."""

    enabled: bool = Field(default=True, description="false: the periodic probe skips this peer (on demand still works)")
    operation: ProbeOperation = Field(
        default=ProbeOperation.AUTO,
        description="OICP round trip: auto (PullEvseStatusById to CPO peers, AuthorizeStop to EMP peers), "
        "PullEvseStatusById, AuthorizeStop or none",
    )


class PeerAuth(StrEnum):
    """How a peer proves who it is when it calls this node (ARCHITECTURE §7)."""

    CERTIFICATE = "certificate"  # only its TLS client certificate
    TOKEN = "token"  # only its bearer token
    EITHER = "either"  # whichever it has configured (both must name this peer if both are presented)


class PeerConfig(Strict):
    """A roaming partner: a CPO peer (we are its EMP) or an EMP peer (we are its CPO)."""

    role: Role = Field(description="cpo: the peer is a CPO (we are its EMP); emp: the peer is an EMP")  # before id
    id: str = Field(description="the peer's OperatorID (role cpo) or ProviderID (role emp)")
    base_url: AnyHttpUrl = Field(description="the peer's OICP base URL, without /api/oicp")
    inbound_token: SecretStr | None = Field(
        default=None, description="bearer token the peer presents when it calls this node"
    )
    inbound_token_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="alternative to inbound_token: its SHA-256"
    )
    outbound_token: SecretStr | None = Field(
        default=None, description="bearer token this node presents when it calls the peer"
    )
    push: list[PushOperation] = Field(
        default_factory=list,
        description="operations this node pushes to the peer: EVSE data, status and pricing to EMP peers, "
        "PushAuthenticationData to CPO peers that authorize offline",
    )
    batch_size: int = Field(default=500, ge=1, le=10_000, description="maximum records in one push request")
    timeout_seconds: float = Field(default=10.0, gt=0, le=120, description="deadline of every call to this peer")
    max_requests_per_second: float | None = Field(
        default=None, gt=0, description="rate limit of this node's calls to the peer (per operation lane)"
    )
    rate_limits: dict[str, CallsPerMinute | None] = Field(
        default_factory=dict,
        description="calls per minute by operation, overriding the node's rate_limits.per_minute for this peer: "
        "the peer's calls to this node (inbound) and this node's calls to the peer (outbound)",
    )

    @field_validator("rate_limits")
    @classmethod
    def _known_operations(cls, value: dict[str, int | None]) -> dict[str, int | None]:
        return canonical_rate_limits(value)

    pull: PullSchedule | None = Field(
        default=None, description="scheduled PullEvseData/PullEvseStatus from the peer (CPO peers only)"
    )
    enabled: bool = Field(default=True, description="false: no traffic with this peer (also switched at run time)")
    default_route: bool = Field(default=False, description="hub peer: route IDs without a direct peer here")
    cdr_fetch_interval_seconds: float | None = Field(
        default=None,
        ge=1,
        description="CPO peers: fetch CDRs with GetChargeDetailRecords this often (absent: only on demand)",
    )
    authorization: bool = Field(
        default=True,
        description="EMP peers: has an authorization contract with this CPO node (RFID AuthorizeStart is "
        "broadcast to every such peer)",
    )
    certificate_identity: str | None = Field(
        default=None,
        min_length=1,
        description="the value of oicp.tls.identity_field (subject CN, DNS or URI SAN) in the peer's TLS "
        "client certificate; a request with such a certificate is this peer's",
    )
    auth: PeerAuth = Field(
        default=PeerAuth.EITHER,
        description="how the peer is identified when it calls: certificate, token, or either",
    )
    tls: PeerTlsSettings | None = Field(
        default=None,
        description="outbound HTTPS: client certificate presented to the peer and the CA it is checked against",
    )
    probe: PeerProbeSettings = Field(
        default_factory=PeerProbeSettings, description="the peer probe (DNS, TCP, TLS, an OICP round trip)"
    )
    profile: str = Field(
        default=DEFAULT_PROFILE,
        description="compatibility profile of the peer's implementation: strict (OICP as written), hubject, or "
        "a name from the top-level profiles section (docs/compatibility.md)",
    )
    #: the resolved profile, attached by NodeSettings (or the registry) where the name is known
    _compat: CompatibilityProfile | None = PrivateAttr(default=None)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str, info: ValidationInfo) -> str:
        role = info.data.get("role")
        if role is not None:
            pattern = OPERATOR_ID_PATTERN if role is Role.CPO else PROVIDER_ID_PATTERN
            if not re.fullmatch(pattern, value):
                kind = "OperatorID" if role is Role.CPO else "ProviderID"
                raise ValueError(f"{value!r} is not a valid {kind} for a {role.value} peer")
        return value

    @model_validator(mode="after")
    def _check_push(self) -> PeerConfig:
        cpo_pushes = [op for op in self.push if op in CPO_PUSH_OPERATIONS]
        if cpo_pushes and self.role is not Role.EMP:
            raise ValueError(f"{cpo_pushes[0].value} can only be pushed to EMP peers")
        if PushOperation.PUSH_AUTHENTICATION_DATA in self.push and self.role is not Role.CPO:
            raise ValueError("PushAuthenticationData can only be pushed to CPO peers")
        if self.cdr_fetch_interval_seconds is not None and self.role is not Role.CPO:
            raise ValueError(
                "cdr_fetch_interval_seconds can only be configured for CPO peers (this node fetches their CDRs)"
            )
        if self.pull is not None and self.role is not Role.CPO:
            raise ValueError("pull can only be configured for CPO peers (this node pulls their EVSE data)")
        if self.auth is PeerAuth.CERTIFICATE and self.certificate_identity is None:
            raise ValueError("auth: certificate needs certificate_identity")
        if self.auth is PeerAuth.TOKEN and self.token_sha256 is None:
            raise ValueError("auth: token needs inbound_token or inbound_token_sha256")
        if self.probe.operation is ProbeOperation.PULL_EVSE_STATUS_BY_ID and self.role is not Role.CPO:
            raise ValueError("probe.operation PullEvseStatusById can only be used with CPO peers")
        if self.probe.operation is ProbeOperation.AUTHORIZE_STOP and self.role is not Role.EMP:
            raise ValueError("probe.operation AuthorizeStop can only be used with EMP peers")
        if self.tls is not None and self.base_url.scheme != "https":
            raise ValueError(f"tls is configured but base_url {self.base_url} is not https")
        return self

    @property
    def compat(self) -> CompatibilityProfile:
        """The peer's compatibility profile (a built-in by name until one is attached)."""
        if self._compat is not None:
            return self._compat
        return BUILTIN_PROFILES.get(self.profile) or BUILTIN_PROFILES[DEFAULT_PROFILE]

    def attach_profile(self, profiles: dict[str, CompatibilityProfile]) -> None:
        """Resolve ``profile`` among ``profiles`` (built-ins included); ValueError if it is unknown."""
        if self.profile not in profiles:
            raise ValueError(
                f"peer {self.id} names profile {self.profile!r}, which is not defined "
                f"(known: {', '.join(sorted(profiles))})"
            )
        self._compat = profiles[self.profile]

    def batch_size_for(self, operation: str) -> int:
        """Records per push request of ``operation``: batch_size, or less where the profile limits it."""
        limit = self.compat.batch_limit(operation)
        return self.batch_size if limit is None else min(self.batch_size, limit)

    @property
    def key(self) -> str:
        """Separator-free, upper-case form of the ID: DE*GEF and DEGEF are the same peer."""
        return normalize_id(self.id)

    @property
    def token_sha256(self) -> str | None:
        if self.inbound_token is not None:
            return token_digest(self.inbound_token.get_secret_value())
        return self.inbound_token_sha256

    def storage_dict(self) -> dict[str, Any]:
        """What the registry keeps in Redis: the outbound secret (needed to call the peer), and
        the inbound token only as its digest."""
        data = self.model_dump(mode="json", exclude={"inbound_token"})
        data["inbound_token_sha256"] = self.token_sha256
        data["outbound_token"] = self.outbound_token.get_secret_value() if self.outbound_token else None
        return data

    def public_view(self) -> dict[str, Any]:
        """What the internal API shows: everything but secrets."""
        data = self.model_dump(mode="json", exclude={"inbound_token", "outbound_token", "inbound_token_sha256"})
        data["has_inbound_token"] = self.token_sha256 is not None
        data["has_outbound_token"] = self.outbound_token is not None
        return data


class ClientCertificates(StrEnum):
    REQUIRED = "required"  # a client without a certificate of client_ca_file fails the TLS handshake
    OPTIONAL = "optional"  # a certificate is verified if presented; peers may use bearer tokens instead
    NONE = "none"  # server TLS only; peers are identified by bearer tokens


class IdentityField(StrEnum):
    """Which part of a client certificate names the peer (PeerConfig.certificate_identity)."""

    SUBJECT_CN = "subject_cn"
    SAN_DNS = "san_dns"
    SAN_URI = "san_uri"


class OicpTlsSettings(Strict):
    """HTTPS on the OICP port, with client certificates (mutual TLS, DIGEST §10). The files are
    re-read when they change: new connections see a replaced certificate or CA bundle, no restart."""

    cert_file: Path = Field(description="PEM server certificate (chain)")
    key_file: Path = Field(description="PEM private key of cert_file")
    client_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle client certificates must chain to (not with client_certificates: none)"
    )
    client_certificates: ClientCertificates = Field(
        default=ClientCertificates.REQUIRED, description="required | optional | none"
    )
    identity_field: IdentityField = Field(
        default=IdentityField.SUBJECT_CN,
        description="subject_cn | san_dns | san_uri: where a client certificate carries the peer's identity",
    )
    reload_interval_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="look for changed certificate/CA files at most this often"
    )

    @field_validator("cert_file", "key_file", "client_ca_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        return readable_file(value)

    @model_validator(mode="after")
    def _check_files(self) -> OicpTlsSettings:
        check_cert_chain(self.cert_file, self.key_file)
        if self.client_certificates is ClientCertificates.NONE:
            if self.client_ca_file is not None:
                raise ValueError("client_ca_file is given but client_certificates is none")
        elif self.client_ca_file is None:
            raise ValueError(f"client_certificates: {self.client_certificates.value} needs client_ca_file")
        else:
            check_ca_bundle(self.client_ca_file)
        return self


class HttpListen(Strict):
    host: str = Field(default="127.0.0.1", description="interface to listen on (0.0.0.0 in a container)")
    port: int = Field(ge=1, le=65535, description="TCP port to listen on")


class OicpApiSettings(HttpListen):
    """The OICP port the partners call: both faces (CPO and EMP), by the node's roles."""

    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="larger bodies get HTTP 413")
    max_json_depth: int = Field(
        default=32, ge=8, le=256, description="deeper JSON gets 400 (OICP bodies nest about 8 levels)"
    )
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, description="larger request headers get HTTP 431")
    read_timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, description="a body not received within this gets HTTP 408"
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="a connection whose request headers take longer is closed"
    )
    publish_timeout_seconds: float = Field(default=5.0, gt=0, description="wait for the broker's confirm")
    request_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="wait for a worker's reply to a push that needs a synchronous answer"
    )
    tls: OicpTlsSettings | None = Field(default=None, description="HTTPS and client certificates (absent: plain HTTP)")


class InternalApiSettings(HttpListen):
    """The internal API: the company's own systems, operators, the CLI and the probes."""

    token: SecretStr = Field(description="bearer token of the internal API")
    monitoring_token: SecretStr | None = Field(
        default=None,
        description="a second bearer token good only for /readyz and /metrics (give it to Prometheus and "
        "to the orchestrator's probes, not the one that can send commands)",
    )

    def monitoring_tokens(self) -> list[bytes]:
        """What /readyz and every /metrics (gateway and workers) accept: either token."""
        tokens = [self.token.get_secret_value().encode()]
        if self.monitoring_token is not None:
            tokens.append(self.monitoring_token.get_secret_value().encode())
        return tokens


#: The worker services, each its own process with its own metrics port (the gateway serves /metrics on
#: the internal API's port).
WORKER_SERVICES = ("evse_push", "authorization", "sessions", "cdr")


class WorkerMetricsPorts(Strict):
    """One port per worker service. Different ports where the workers share a host (``make run``, the
    tests); in containers every worker has its own address and they can all use the same port."""

    evse_push: int = Field(default=9201, ge=1, le=65535, description="metrics port of the evse_push worker")
    authorization: int = Field(default=9202, ge=1, le=65535, description="metrics port of the authorization worker")
    sessions: int = Field(default=9203, ge=1, le=65535, description="metrics port of the sessions worker")
    cdr: int = Field(default=9204, ge=1, le=65535, description="metrics port of the cdr worker")


class MetricsSettings(Strict):
    """Where each worker process serves ``/metrics`` (Prometheus; the internal token or
    ``internal.monitoring_token``) and ``/healthz`` (liveness, no token)."""

    host: str = Field(default="127.0.0.1", description="interface of the workers' metrics endpoints")
    ports: WorkerMetricsPorts = Field(default_factory=WorkerMetricsPorts)

    def port_of(self, service: str) -> int:
        return int(getattr(self.ports, service))


class RabbitSettings(Strict):
    """The message broker every service of the node shares."""

    url: str = Field(
        default="amqp://guest:guest@127.0.0.1:5672/", description="AMQP URL; a virtual host goes at its end"
    )
    prefix: str = Field(
        default="", pattern=r"^[A-Za-z0-9_.\-]*$", description="prefix of every exchange and queue name"
    )
    delivery_limit: int = Field(default=5, ge=1, le=100, description="x-delivery-limit of work queues")
    prefetch: int = Field(default=32, ge=1, le=1000, description="unacknowledged deliveries per consumer")
    outage_retry_seconds: float = Field(
        default=300.0,
        ge=0,
        le=1500,
        description="a handler failing because Redis or RabbitMQ is unreachable is run again in place, the "
        "message held, for up to this long before it is requeued (one delivery used); below RabbitMQ's "
        "consumer_timeout (30 min)",
    )
    consumer_check_seconds: float = Field(
        default=10.0,
        ge=1,
        le=300,
        description="each worker checks this often that every queue it consumes has a consumer, and "
        "subscribes again if not (consumers lost in a RabbitMQ restart)",
    )


class RedisSettings(Strict):
    """The store of the node's state (ledger, outboxes, EVSE data, delivery lanes); use AOF persistence."""

    url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis URL (redis:// or rediss://)")
    key_prefix: str = Field(
        default="oicp:", pattern=r"^[A-Za-z0-9_.:\-]*$", description="prefix of every key (two nodes, one Redis)"
    )
    max_connections: int = Field(default=32, ge=2, description="connection pool size per process")


class DeliverySettings(Strict):
    """The per-peer delivery lanes of EVSE data, status, pricing and authentication data."""

    poll_interval_seconds: float = Field(
        default=1.0, gt=0, le=60, description="a lane looks for work this often even without a wake-up"
    )
    backoff_initial_seconds: float = Field(default=0.5, gt=0, description="first retry after a failed delivery")
    backoff_max_seconds: float = Field(default=60.0, gt=0, description="retries back off exponentially up to this")
    lease_seconds: float = Field(
        default=15.0, ge=1, description="a lane's lease in Redis: one replica sends to a peer at a time"
    )
    linger_seconds: float = Field(
        default=0.02, ge=0, le=5, description="a woken lane waits this long for more changes before it sends"
    )
    resync_after_seconds: float = Field(
        default=900.0, gt=0, description="a peer failing for longer than this is resynced with a fullLoad"
    )
    concurrent_rounds: int = Field(
        default=4,
        ge=1,
        le=1024,
        description="evse_push: lanes working on a round at once per process (waiting for a peer's answer "
        "does not count); fewer leave the CPU to incoming changes, so lanes send fewer, larger requests",
    )


class AuthorizationSettings(Strict):
    """AuthorizeStart/Stop in both roles and the offline tokens (authorization service)."""

    decider_timeout_seconds: float = Field(
        default=3.0, gt=0, le=30, description="EMP role: wait this long for the internal decider's answer"
    )
    fallback: Literal["not_authorized", "authorized", "tokens"] = Field(
        default="tokens",
        description="EMP role, when no decider answers: 'tokens' decides from the token store alone "
        "(unknown media are refused), 'not_authorized' refuses, 'authorized' lets every medium charge",
    )
    use_decider: bool = Field(
        default=False, description="EMP role: ask the internal decider for media the token store does not know"
    )
    broadcast_timeout_seconds: float = Field(
        default=5.0, gt=0, le=30, description="CPO role: deadline of an RFID broadcast to EMP peers"
    )
    resync_interval_seconds: float = Field(
        default=3600.0, ge=1, description="EMP role: PushAuthenticationData fullLoad to offline peers this often"
    )


class SessionSettings(Strict):
    """Remote start/stop, reservations, charging notifications and the session ledger (sessions service)."""

    backend_timeout_seconds: float = Field(
        default=8.0,
        gt=0,
        le=60,
        description="CPO role: wait this long for the charge point backend (OICP: whole round trip under 10 s)",
    )
    progress_min_interval_seconds: float = Field(
        default=300.0, ge=0, description="Progress notifications of one session at most this often (OICP: 5 min)"
    )
    default_reservation_minutes: int = Field(default=15, ge=1, le=99, description="when Duration is omitted")
    cdr_missing_after_seconds: float = Field(
        default=3600.0, gt=0, description="an ended session without a CDR this long raises session.cdr.missing"
    )
    check_interval_seconds: float = Field(
        default=30.0, gt=0, description="how often expired reservations and missing CDRs are looked for"
    )


class CdrSettings(Strict):
    """Charge detail records: the CPO outbox, the EMP inbox, GetChargeDetailRecords (cdr service)."""

    max_attempts: int = Field(
        default=60,
        ge=1,
        le=10_000,
        description="CPO role: deliveries of a CDR before it is parked (then replayed); with the default "
        "backoff about 4.5 hours of an unreachable EMP",
    )
    backoff_initial_seconds: float = Field(default=1.0, gt=0, description="first retry after a failed delivery")
    backoff_max_seconds: float = Field(default=300.0, gt=0, description="retries back off exponentially up to this")
    fetch_lookback_seconds: float = Field(
        default=7 * 86_400.0, gt=0, description="EMP role: a fetch without a time range covers this much of the past"
    )


class ProbeSettings(Strict):
    """The periodic peer probes (shared/peers/probe.py), run by one sessions worker at a time (a lease in
    Redis); ``POST /peers/{role}/{id}/probe`` runs one on demand."""

    enabled: bool = Field(default=True, description="false: no periodic probes (on demand still works)")
    interval_seconds: float = Field(default=300.0, ge=1, le=86_400, description="probe every peer this often")


class JournalSettings(Strict):
    """The exchange journal: every OICP request and answer, both faces, hash-chained (README, Exchange journal)."""

    enabled: bool = Field(default=True, description="false: nothing is journaled (search and export stay available)")
    retention_days: float = Field(
        default=90.0, gt=0, description="journal entries (bodies, indexes) older than this are deleted"
    )
    store_bodies: bool = Field(
        default=True, description="false: only the bodies' SHA-256 digests are kept, not the bodies (zlib-compressed)"
    )
    queue_size: int = Field(
        default=10_000,
        ge=10,
        le=1_000_000,
        description="entries a process holds for the journal writer; more are dropped (oicp_journal_dropped_total)",
    )
    unsealed_max_entries: int = Field(
        default=1_000_000,
        ge=1000,
        description="entries waiting for the sealer kept at most (approximately); older ones are lost",
    )
    seal_interval_seconds: float = Field(
        default=0.5, gt=0, le=60, description="the sealer looks for new entries this often"
    )
    signing_key_file: Path | None = Field(
        default=None,
        description="PEM Ed25519 private key that signs exported bundles (oicp-p2p journal keygen); "
        "absent: export is refused",
    )


class NodeSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OICP_P2P_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="the node's name: in connection names and log lines"
    )
    operator_ids: list[OperatorIdStr] = Field(default_factory=list, description="own OperatorIDs: CPO role")
    provider_ids: list[ProviderIdStr] = Field(default_factory=list, description="own ProviderIDs: EMP role")
    oicp: OicpApiSettings
    internal: InternalApiSettings
    rabbitmq: RabbitSettings = Field(default_factory=RabbitSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    authorization: AuthorizationSettings = Field(default_factory=AuthorizationSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    cdr: CdrSettings = Field(default_factory=CdrSettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    probes: ProbeSettings = Field(default_factory=ProbeSettings)
    peers: list[PeerConfig] = Field(default_factory=list)
    profiles: dict[str, CompatibilityProfile] = Field(
        default_factory=dict,
        description="compatibility profiles by name, for peers' profile keys (built in: strict, hubject; "
        "docs/compatibility.md)",
    )
    log_level: str = Field(
        default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$", description="log level of every service"
    )

    @field_validator("peers")
    @classmethod
    def _unique_peers(cls, peers: list[PeerConfig]) -> list[PeerConfig]:
        seen: set[tuple[str, str]] = set()
        for peer in peers:
            if (peer.key, peer.role) in seen:
                raise ValueError(f"peer {peer.id} ({peer.role.value}) is configured twice")
            seen.add((peer.key, peer.role))
        return peers

    @model_validator(mode="after")
    def _check_roles(self) -> NodeSettings:
        if not self.operator_ids and not self.provider_ids:
            raise ValueError("a node needs at least one of operator_ids (CPO role) or provider_ids (EMP role)")
        if self.oicp.port == self.internal.port:
            raise ValueError("oicp.port and internal.port must differ")
        own = {(Role.CPO, normalize_id(i)) for i in self.operator_ids} | {
            (Role.EMP, normalize_id(i)) for i in self.provider_ids
        }
        for index, peer in enumerate(self.peers):
            if (peer.role, peer.key) in own:
                raise ValueError(f"peers.{index}.id: {peer.id} is this node's own ID, not a peer's")
            if peer.pull is not None:
                # A pull names this node's ProviderID in its path and body: it needs the EMP role.
                if not self.provider_ids:
                    raise ValueError(f"peers.{index}.pull: pulling needs provider_ids (the EMP role)")
                if peer.pull.provider_id is not None and (Role.EMP, normalize_id(peer.pull.provider_id)) not in own:
                    raise ValueError(f"peers.{index}.pull.provider_id: {peer.pull.provider_id} is not in provider_ids")
        self._check_certificate_identities()
        self._attach_profiles()
        return self

    def _attach_profiles(self) -> None:
        """Every peer's profile must exist; each peer gets its resolved profile."""
        resolved = self.resolved_profiles()
        for index, peer in enumerate(self.peers):
            try:
                peer.attach_profile(resolved)
            except ValueError as exc:
                raise ValueError(f"peers.{index}.profile: {exc}") from exc

    def resolved_profiles(self) -> dict[str, CompatibilityProfile]:
        """The built-in profiles and the file's, each merged over its base (ValueError naming the profile)."""
        try:
            resolved = resolve_profiles(self.profiles)
            inbound_aliases(resolved)
        except ValueError as exc:
            raise ValueError(f"profiles: {exc}") from exc
        return resolved

    def _check_certificate_identities(self) -> None:
        """A client certificate must map to exactly one peer, and only a node that asks for client
        certificates can identify a peer by one."""
        tls = self.oicp.tls
        takes_certificates = tls is not None and tls.client_certificates is not ClientCertificates.NONE
        owners: dict[str, int] = {}
        for index, peer in enumerate(self.peers):
            if peer.certificate_identity is None or peer.auth is PeerAuth.TOKEN:
                continue
            if not takes_certificates:
                raise ValueError(
                    f"peers.{index}.certificate_identity: oicp.tls.client_certificates must be required or "
                    "optional to identify peers by certificate"
                )
            if (other := owners.get(peer.certificate_identity)) is not None:
                raise ValueError(
                    f"peers.{index}.certificate_identity: {peer.certificate_identity!r} is peers.{other}'s already"
                )
            owners[peer.certificate_identity] = index

    def listen_ports(self) -> dict[str, int]:
        """Every port the node's processes listen on, by the key that sets it."""
        ports = {"oicp.port": self.oicp.port, "internal.port": self.internal.port}
        ports.update({f"metrics.ports.{s}": self.metrics.port_of(s) for s in WORKER_SERVICES})
        return ports

    @property
    def roles(self) -> frozenset[Role]:
        roles = set()
        if self.operator_ids:
            roles.add(Role.CPO)
        if self.provider_ids:
            roles.add(Role.EMP)
        return frozenset(roles)

    def own_operator_of(self, evse_id: str) -> str | None:
        """The node's own OperatorID that this EvseID belongs to, or None."""
        return next((o for o in self.operator_ids if evse_belongs_to(evse_id, o)), None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file is passed as init kwargs by load_settings(); environment overrides it.
        return (env_settings, init_settings)


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


def _format_error(source: str, exc: ValidationError) -> str:
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"  {key}: {err['msg']}")
    return "\n".join(lines)


def load_settings(path: str | os.PathLike[str] | None = None) -> NodeSettings:
    """Read the YAML file (``path`` or ``$OICP_P2P_CONFIG``) and apply environment overrides."""
    path = path or os.environ.get(CONFIG_ENV)
    data: dict[str, Any] = {}
    source = "environment"
    if path:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file {path} does not exist") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"configuration file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"configuration file {path} must hold a mapping at the top level")
        data = loaded or {}
    try:
        # pydantic-settings deep-merges the environment over these init values (see
        # settings_customise_sources), so OICP_P2P_REDIS__URL replaces only redis.url.
        return NodeSettings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_error(source, exc)) from exc
