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
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
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


class PeerConfig(Strict):
    """A roaming partner: a CPO peer (we are its EMP) or an EMP peer (we are its CPO)."""

    role: Role  # before id: the id's validator needs it
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
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    max_requests_per_second: float | None = Field(
        default=None, gt=0, description="rate limit of this node's calls to the peer (per operation lane)"
    )
    pull: PullSchedule | None = Field(
        default=None, description="scheduled PullEvseData/PullEvseStatus from the peer (CPO peers only)"
    )
    enabled: bool = True
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
        return self

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


class HttpListen(Strict):
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)


class OicpApiSettings(HttpListen):
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="larger bodies get HTTP 413")
    publish_timeout_seconds: float = Field(default=5.0, gt=0, description="wait for the broker's confirm")
    request_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="wait for a worker's reply to a push that needs a synchronous answer"
    )


class InternalApiSettings(HttpListen):
    token: SecretStr = Field(description="bearer token of the internal API")


class RabbitSettings(Strict):
    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    prefix: str = Field(
        default="", pattern=r"^[A-Za-z0-9_.\-]*$", description="prefix of every exchange and queue name"
    )
    delivery_limit: int = Field(default=5, ge=1, le=100, description="x-delivery-limit of work queues")
    prefetch: int = Field(default=32, ge=1, le=1000)


class RedisSettings(Strict):
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field(default="oicp:", pattern=r"^[A-Za-z0-9_.:\-]*$")
    max_connections: int = Field(default=32, ge=2)


class DeliverySettings(Strict):
    poll_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    backoff_initial_seconds: float = Field(default=0.5, gt=0)
    backoff_max_seconds: float = Field(default=60.0, gt=0)
    lease_seconds: float = Field(default=15.0, ge=1)
    linger_seconds: float = Field(
        default=0.02, ge=0, le=5, description="a woken lane waits this long for more changes before it sends"
    )
    resync_after_seconds: float = Field(
        default=900.0, gt=0, description="a peer failing for longer than this is resynced with a fullLoad"
    )


class AuthorizationSettings(Strict):
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


class NodeSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OICP_P2P_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
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
    peers: list[PeerConfig] = Field(default_factory=list)
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")

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
        return self

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
