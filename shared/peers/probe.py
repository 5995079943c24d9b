"""Peer probes: is a peer reachable, and does it speak OICP as Hubject's schema says?

A probe runs four steps in order and stops at the first that fails:

* ``dns`` — the base URL's host resolves;
* ``tcp`` — a connection to the port opens (each resolved address in turn);
* ``tls`` — https peers only: a handshake with the peer's configured client certificate and CA (as the
  node's real calls use, shared/peers/tls.py); the server certificate's ``notAfter`` and the days left;
* ``oicp`` — one OICP round trip that changes nothing at the peer, through :class:`PeerClient` (the
  peer's token, timeout and outbound rate limit), its answer parsed by the node's pydantic models, which
  mirror Hubject's OpenAPI schema (tests/unit/test_oicp_openapi_conformance.py):

  * a CPO peer (we are its EMP): ``PullEvseStatusById`` for a random EvseID of its operator that it
    cannot know (expected: a valid eRoamingEvseStatusById, e.g. ``EvseNotFound``);
  * an EMP peer (we are its CPO): ``AuthorizeStop`` for a random SessionID and a random RFID UID
    (expected: a valid eRoamingAuthorizationStop, ``NotAuthorized`` — an EMP only stops sessions it
    knows, so nothing changes; the peer may count or log the refusal).

  ``probe.operation`` of the peer picks another (or ``none``). An answer whose StatusCode says the peer
  refuses us or is broken (001, 002, 009, 017, 018, 019, 021, 022) fails the step as well.

A step that is not run is ``skipped`` (TLS for plain-HTTP peers, OICP with ``operation: none``, every step
after a failure). The result is plain data (``as_dict``), stored by shared/stores/probes.py.
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import re
import secrets
import socket
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from shared.oicp import OICPModel
from shared.oicp.ids import normalize_id
from shared.oicp.messages import (
    AuthorizationStopResponse,
    AuthorizeStopRequest,
    EvseStatusByIdResponse,
    PullEvseStatusByIdRequest,
)
from shared.oicp.operations import OPERATIONS_BY_NAME
from shared.peers.client import PeerCallError, PeerClient
from shared.peers.tls import CLIENT_CONTEXTS
from shared.settings import NodeSettings, PeerConfig, ProbeOperation, Role

STEPS = ("dns", "tcp", "tls", "oicp")
#: StatusCodes that say the peer refuses this node or cannot work: the probe fails on them.
FAILING_STATUS_CODES = frozenset({"001", "002", "009", "017", "018", "019", "021", "022"})
SECONDS_PER_DAY = 86_400.0


StepStatus = Literal["ok", "failed", "skipped"]


@dataclass
class StepResult:
    """One step of a probe: dns, tcp, tls or oicp."""

    name: str
    status: StepStatus
    duration_seconds: float = 0.0
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class ProbeResult:
    """A probe of one peer: ``ok`` when every step that ran passed, else the first ``failed_step`` and
    its ``reason``; the OICP answer's validity and StatusCode; the server certificate's expiry."""

    peer_id: str
    role: str
    base_url: str
    started_at: float
    ok: bool = False
    failed_step: str | None = None
    reason: str | None = None
    duration_seconds: float = 0.0
    operation: str | None = None  # the OICP operation of the round trip, None when not run
    answer_valid: bool | None = None  # the answer parsed as Hubject's schema says (None: no answer)
    status_code: str | None = None  # the OICP StatusCode of the answer
    certificate_not_after: float | None = None  # the peer's server certificate (https), UNIX time
    certificate_days_left: float | None = None
    client_certificate_not_after: float | None = None  # ours for this peer (tls.client_cert_file), UNIX time
    client_certificate_days_left: float | None = None
    address: str | None = None  # the address connected to
    steps: list[StepResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StepFailed(Exception):
    pass


_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)


def _der_element(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of the content, end of the content) of the DER element at ``offset``."""
    tag, length = data[offset], data[offset + 1]
    offset += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[offset : offset + count], "big")
        offset += count
    return tag, offset, offset + length


def certificate_not_after(pem_file: Path) -> float | None:
    """The notAfter (UNIX time) of the first certificate in a PEM file, read from its DER (the ssl module
    decodes only a peer's certificate, and the project does not depend on ``cryptography``); None if the
    file does not hold a readable certificate."""
    try:
        match = _PEM_CERTIFICATE.search(pem_file.read_bytes())
        if match is None:
            return None
        der = base64.b64decode(b"".join(match.group(1).split()))
        _, start, _ = _der_element(der, 0)  # Certificate ::= SEQUENCE
        _, position, _ = _der_element(der, start)  # tbsCertificate ::= SEQUENCE
        tag, _, end = _der_element(der, position)
        if tag == 0xA0:  # [0] version
            position = end
        for _ in range(3):  # serialNumber, signature, issuer
            position = _der_element(der, position)[2]
        _, validity, _ = _der_element(der, position)  # validity ::= SEQUENCE { notBefore, notAfter }
        not_before_end = _der_element(der, validity)[2]
        tag, start, end = _der_element(der, not_before_end)
        text = der[start:end].decode("ascii").rstrip("Z")
        if tag == 0x17:  # UTCTime YYMMDDHHMMSS: years 50-99 are 19xx
            text = ("19" if int(text[:2]) >= 50 else "20") + text
        return float(calendar.timegm(time.strptime(text[:14], "%Y%m%d%H%M%S")))
    except (OSError, ValueError, IndexError):
        return None


def probe_operation(peer: PeerConfig) -> ProbeOperation:
    """The OICP round trip the peer is probed with (``auto``: by its role)."""
    operation = peer.probe.operation
    if operation is ProbeOperation.AUTO:
        return ProbeOperation.PULL_EVSE_STATUS_BY_ID if peer.role is Role.CPO else ProbeOperation.AUTHORIZE_STOP
    return operation


def unknown_evse_id(operator_id: str) -> str:
    """A random EvseID of ``operator_id`` that no operator has (ISO ``DE*ABC*EPROBE…``, DIN digits)."""
    if operator_id.lstrip("+")[:1].isdigit():
        return f"{operator_id}*{secrets.randbelow(10**12):012d}"
    key = normalize_id(operator_id)
    return f"{key[:2]}*{key[2:]}*EPROBE{secrets.token_hex(6).upper()}"


class PeerProber:
    """Probes one peer at a time with the node's own identity (its IDs, the peer's credentials)."""

    def __init__(self, settings: NodeSettings, client: PeerClient) -> None:
        self.settings = settings
        self.client = client

    async def probe(self, peer: PeerConfig) -> ProbeResult:
        url = urlsplit(str(peer.base_url))
        host = url.hostname or ""
        https = url.scheme == "https"
        port = url.port or (443 if https else 80)
        result = ProbeResult(peer.id, peer.role.value, str(peer.base_url), started_at=time.time())
        begun = time.monotonic()
        addresses: list[tuple[str, int]] = []

        async def dns() -> str:
            loop = asyncio.get_running_loop()
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            for _family, _type, _proto, _name, sockaddr in infos:
                address = (str(sockaddr[0]), int(sockaddr[1]))
                if address not in addresses:
                    addresses.append(address)
            if not addresses:
                raise StepFailed(f"{host} has no address")
            return f"{host} → {', '.join(a for a, _ in addresses)}"

        async def tcp() -> str:
            errors = []
            for address, address_port in addresses:
                try:
                    _, writer = await asyncio.open_connection(address, address_port)
                except OSError as exc:
                    errors.append(f"{address}:{address_port}: {exc.strerror or exc}")
                    continue
                writer.close()
                result.address = address
                return f"connected to {address}:{address_port}"
            raise StepFailed("connection failed: " + "; ".join(errors))

        async def tls() -> str:
            if peer.tls is not None and peer.tls.client_cert_file is not None:
                own = certificate_not_after(peer.tls.client_cert_file)
                if own is not None:
                    result.client_certificate_not_after = own
                    result.client_certificate_days_left = round((own - time.time()) / SECONDS_PER_DAY, 2)
            context = CLIENT_CONTEXTS.for_peer(peer) or ssl.create_default_context()
            try:
                _, writer = await asyncio.open_connection(
                    result.address, port, ssl=context, server_hostname=host, ssl_handshake_timeout=peer.timeout_seconds
                )
            except ssl.SSLCertVerificationError as exc:
                raise StepFailed(f"server certificate not accepted: {exc.verify_message or exc}") from exc
            except (ssl.SSLError, OSError) as exc:
                raise StepFailed(f"handshake failed: {exc}") from exc
            try:
                ssl_object = writer.get_extra_info("ssl_object")
                certificate = ssl_object.getpeercert() if ssl_object else None
                version = ssl_object.version() if ssl_object else None
            finally:
                writer.close()
            if certificate and certificate.get("notAfter"):
                not_after = float(ssl.cert_time_to_seconds(str(certificate["notAfter"])))
                result.certificate_not_after = not_after
                result.certificate_days_left = round((not_after - time.time()) / SECONDS_PER_DAY, 2)
                return f"{version}, server certificate valid until {certificate['notAfter']}"
            return f"{version}, server certificate without notAfter"

        async def oicp() -> str:
            return await self._round_trip(peer, result)

        steps: list[tuple[str, Callable[[], Awaitable[str]] | None]] = [
            ("dns", dns),
            ("tcp", tcp),
            ("tls", tls if https else None),
            ("oicp", oicp if probe_operation(peer) is not ProbeOperation.NONE else None),
        ]
        for name, run in steps:
            if run is None or result.failed_step is not None:
                result.steps.append(StepResult(name, "skipped"))
                continue
            started = time.monotonic()
            try:
                async with asyncio.timeout(peer.timeout_seconds):
                    detail = await run()
            except TimeoutError:
                detail, failed = f"no answer within {peer.timeout_seconds}s", True
            except StepFailed as exc:
                detail, failed = str(exc), True
            except (OSError, ssl.SSLError) as exc:
                detail, failed = f"{type(exc).__name__}: {exc}", True
            else:
                failed = False
            status: StepStatus = "failed" if failed else "ok"
            step = StepResult(name, status, round(time.monotonic() - started, 4), detail)
            result.steps.append(step)
            if failed:
                result.failed_step, result.reason = name, f"{name}: {detail}"
        result.ok = result.failed_step is None
        result.duration_seconds = round(time.monotonic() - begun, 4)
        return result

    async def _round_trip(self, peer: PeerConfig, result: ProbeResult) -> str:
        operation = probe_operation(peer)
        result.operation = operation.value
        path: str
        body: OICPModel
        answer_model: type[EvseStatusByIdResponse] | type[AuthorizationStopResponse]
        if operation is ProbeOperation.PULL_EVSE_STATUS_BY_ID:
            provider_id = (peer.pull.provider_id if peer.pull else None) or next(iter(self.settings.provider_ids), None)
            if provider_id is None:
                raise StepFailed("PullEvseStatusById needs a ProviderID of this node (provider_ids)")
            evse_id = unknown_evse_id(peer.id)
            path = OPERATIONS_BY_NAME["PullEvseStatusById"].path.format(providerID=provider_id)
            body = PullEvseStatusByIdRequest.model_validate({"ProviderID": provider_id, "EvseID": [evse_id]})
            answer_model = EvseStatusByIdResponse
        else:
            operator_id = next(iter(self.settings.operator_ids), None)
            if operator_id is None:
                raise StepFailed("AuthorizeStop needs an OperatorID of this node (operator_ids)")
            path = OPERATIONS_BY_NAME["AuthorizeStop"].path.format(operatorID=operator_id)
            body = AuthorizeStopRequest.model_validate(
                {
                    "SessionID": str(uuid.uuid4()),
                    "OperatorID": operator_id,
                    "Identification": {"RFIDMifareFamilyIdentification": {"UID": secrets.token_hex(7).upper()}},
                }
            )
            answer_model = AuthorizationStopResponse
        try:
            answer = await self.client.call(peer, path, body, answer_model)
        except PeerCallError as exc:
            if exc.kind == "invalid_response":
                result.answer_valid = False
                raise StepFailed(f"{operation.value}: answer does not conform to the OICP schema: {exc}") from exc
            raise StepFailed(f"{operation.value}: {exc}") from exc
        result.answer_valid = True
        code = answer.status_code.code.value if answer.status_code is not None else None
        result.status_code = code
        summary = f"{operation.value}: valid {type(answer).__name__}, StatusCode {code or '(none)'}"
        if isinstance(answer, AuthorizationStopResponse):
            summary += f", {answer.authorization_status.value}"
        elif answer.evse_status_records.evse_status_record:
            summary += f", {answer.evse_status_records.evse_status_record[0].evse_status.value}"
        if code in FAILING_STATUS_CODES:
            description = answer.status_code.description if answer.status_code else None
            raise StepFailed(f"{summary}: the peer answers with error {code} ({description or 'no description'})")
        return summary
