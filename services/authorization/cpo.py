"""CPO role: AuthorizeStart/Stop for the node's charge point backend, and the authentication data EMP
peers push (DIGEST §9.6 with the hub's part done by this node).

``cpo.authorize.start`` — the SessionID is issued by this node before anything is sent (the
command's SessionID if the backend gave one, so a repeat is idempotent), in this order:

a. **offline**: a medium found in the authentication data EMP peers pushed (a QR code only with the
   matching PIN) → ``Authorized`` here, ProviderID of the data, ``decided_by`` ``auth_data``;
b. an identification with an **EvcoID** → AuthorizeStart to the EMP peer of its ProviderID (else the
   ``default_route`` peer, else NotAuthorized **300** "Partner not found"); its answer is passed on;
   an unreachable or failing peer → NotAuthorized **310** "Partner did not respond"; ``decided_by``
   ``peer``;
c. an **RFID UID** → AuthorizeStart to every enabled EMP peer with ``authorization: true``
   concurrently, all with the same SessionID; the first ``Authorized`` wins (the other calls are
   cancelled), unreachable or failing peers count as NotAuthorized, the whole answer within
   ``authorization.broadcast_timeout_seconds``. If nobody authorizes: the most specific refusal
   code an EMP gave (101, 103, 105, 110, 120-122, 200, 210), else **102**; with no EMP peer to ask
   **300**. ``decided_by`` ``broadcast``.

An ``Authorized`` outcome is recorded in the ledger (role cpo, kind authorize, peer_id = the EMP that
authorized, None for offline data) before the answer is returned.

``cpo.authorize.stop`` — the session from the ledger (unknown or not a CPO session: 400); an offline
session is stopped here, only with its own medium (else 101/102/105, DIGEST §6.2); otherwise the
AuthorizeStop goes to the EMP peer that authorized it and its answer is passed on (unreachable: 310).

``cpo.authdata.ingest`` — ActionType semantics per ProviderID (shared.stores.auth_data), 019 when an
EvcoID of a record is not of the record's ProviderID, 009 on insert/update conflicts; clear PINs are
stored only as bcrypt hashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from services.authorization.media import (
    STOP_MISMATCH_CODES,
    hash_pin,
    pin_matches,
    refusal_of_medium,
    same_medium,
    without_pin,
)
from services.authorization.outcomes import decided, record_authorized
from shared.bus.envelope import Envelope
from shared.bus.messages import (
    AuthDataIngest,
    AuthDataReceived,
    CommandReply,
    CpoAuthorizeStart,
    CpoAuthorizeStop,
    EventType,
)
from shared.oicp import (
    AuthorizationStartResponse,
    AuthorizationStatus,
    AuthorizationStopResponse,
    AuthorizeStartRequest,
    AuthorizeStopRequest,
    Identification,
    StatusCodeValue,
    new_session_id,
)
from shared.oicp.ids import evco_belongs_to, normalize_id
from shared.oicp.operations import OPERATIONS_BY_NAME
from shared.peers.client import PeerCallError
from shared.peers.routing import route_evco
from shared.settings import PeerConfig, Role
from shared.stores.push import MAX_KEYS_IN_INFO
from shared.stores.sessions import Session, SessionState

if TYPE_CHECKING:
    from services.authorization.app import AuthorizationDeps

logger = logging.getLogger(__name__)
CODE = StatusCodeValue
START_PATH = OPERATIONS_BY_NAME["AuthorizeStart"].path
STOP_PATH = OPERATIONS_BY_NAME["AuthorizeStop"].path
#: Refusals that say more than "unknown UID": passed on when no EMP of a broadcast authorizes.
SPECIFIC_REFUSALS = frozenset(
    {
        CODE.QR_CODE_AUTHENTICATION_FAILED_INVALID_CREDENTIALS,
        CODE.RFID_AUTHENTICATION_FAILED_CARD_NOT_READABLE,
        CODE.PLC_AUTHENTICATION_FAILED_INVALID_EVCO_ID,
        CODE.QR_CODE_APP_AUTHENTICATION_FAILED_TIME_OUT,
        CODE.PLC_AUTHENTICATION_FAILED_INVALID_UNDERLYING_EVCO_ID,
        CODE.PLC_AUTHENTICATION_FAILED_INVALID_CERTIFICATE,
        CODE.PLC_AUTHENTICATION_FAILED_TIME_OUT,
        CODE.EVCO_ID_LOCKED,
        CODE.NO_VALID_CONTRACT,
    }
)


def _operator_of(deps: AuthorizationDeps, evse_id: str | None, given: str | None) -> str:
    if given:
        return given
    own = deps.settings.own_operator_of(evse_id) if evse_id else None
    return own or deps.settings.operator_ids[0]


async def _call_start(
    deps: AuthorizationDeps, peer: PeerConfig, request: AuthorizeStartRequest
) -> AuthorizationStartResponse:
    """One AuthorizeStart to one EMP peer; a failed call is a NotAuthorized 310."""
    try:
        return await deps.client.call(
            peer, START_PATH.format(operatorID=request.operator_id), request, AuthorizationStartResponse
        )
    except PeerCallError as exc:
        logger.warning("AuthorizeStart to %s failed: %s", peer.id, exc)
        return AuthorizationStartResponse.not_authorized(CODE.PARTNER_DID_NOT_RESPOND, f"{peer.id}: {exc}")


async def _route_peer(deps: AuthorizationDeps, evco_id: str) -> PeerConfig | None:
    """The EMP peer of an EvcoID's ProviderID, else the default route (a hub), else None."""
    route = await route_evco(deps.registry, evco_id)
    return route.peer if route else None


async def _broadcast(
    deps: AuthorizationDeps, request: AuthorizeStartRequest
) -> tuple[AuthorizationStartResponse, PeerConfig | None]:
    """Ask every EMP peer with an authorization contract; the first ``Authorized`` wins."""
    peers = [p for p in await deps.registry.enabled(Role.EMP) if p.authorization]
    if not peers:
        return AuthorizationStartResponse.not_authorized(
            CODE.PARTNER_NOT_FOUND, "no EMP peer with an authorization contract"
        ), None
    tasks = {asyncio.create_task(_call_start(deps, peer, request), name=f"authorize:{peer.id}"): peer for peer in peers}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deps.settings.authorization.broadcast_timeout_seconds
    refusals: list[tuple[PeerConfig, AuthorizationStartResponse]] = []
    pending = set(tasks)
    try:
        while pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            done, pending = await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                answer = task.result()
                if answer.authorization_status is AuthorizationStatus.AUTHORIZED:
                    return answer, tasks[task]
                refusals.append((tasks[task], answer))
    finally:
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    silent = [tasks[t].id for t in pending]
    summary = "; ".join(f"{p.id}: {a.status_code.code.value}" for p, a in refusals)
    if silent:
        summary = "; ".join(filter(None, [summary, f"no answer in time from {', '.join(silent)}"]))
    specific = next((a.status_code.code for _, a in refusals if a.status_code.code in SPECIFIC_REFUSALS), None)
    code = specific or CODE.RFID_AUTHENTICATION_FAILED_INVALID_UID
    return AuthorizationStartResponse.not_authorized(code, f"no EMP authorized the UID ({summary})"[:1000]), None


async def authorize_start(
    deps: AuthorizationDeps, envelope: Envelope[CpoAuthorizeStart], correlation_id: str | None
) -> CommandReply:
    command = envelope.data
    identification = command.identification
    operator_id = _operator_of(deps, command.evse_id, command.operator_id)
    session_id = command.session_id or new_session_id()
    request = AuthorizeStartRequest(
        operator_id=operator_id,
        identification=identification,
        evse_id=command.evse_id,
        session_id=session_id,
        cpo_partner_session_id=command.cpo_partner_session_id,
        emp_partner_session_id=command.emp_partner_session_id,
        partner_product_id=command.partner_product_id,
    )
    partner: dict[str, Any] = {
        "cpo_partner_session_id": command.cpo_partner_session_id,
        "emp_partner_session_id": command.emp_partner_session_id,
    }
    peer: PeerConfig | None = None
    answer: AuthorizationStartResponse
    if normalize_id(operator_id) not in {normalize_id(o) for o in deps.settings.operator_ids}:
        decided_by = "node"
        answer = AuthorizationStartResponse.not_authorized(
            CODE.UNAUTHORIZED_ACCESS, f"OperatorID {operator_id} is not one of this node's operators", **partner
        )
    elif (refusal := refusal_of_medium(identification)) is not None:
        decided_by = "node"
        answer = AuthorizationStartResponse.not_authorized(*refusal, **partner)
    elif (offline := await _offline_match(deps, identification)) is not None:
        decided_by = "auth_data"
        answer = AuthorizationStartResponse.authorized(
            session_id, offline, authorization_stop_identifications=[without_pin(identification)], **partner
        )
    elif identification.evco_id is not None:
        decided_by = "peer"
        peer = await _route_peer(deps, identification.evco_id)
        if peer is None:
            answer = AuthorizationStartResponse.not_authorized(
                CODE.PARTNER_NOT_FOUND, f"no EMP peer for the EvcoID {identification.evco_id}", **partner
            )
        else:
            answer = await _call_start(deps, peer, request)
    else:
        decided_by = "broadcast"
        answer, peer = await _broadcast(deps, request)
    if answer.authorization_status is AuthorizationStatus.AUTHORIZED:
        # The EMP is expected to keep our SessionID; if it answered with another, that one is what it
        # will recognise in the AuthorizeStop and the CDR.
        session_id = answer.session_id or session_id
        answer = answer.model_copy(update={"session_id": session_id})
        stop_ids = answer.authorization_stop_identifications
        await record_authorized(
            deps,
            Session(
                session_id=session_id,
                role="cpo",
                state=SessionState.AUTHORIZED,
                kind="authorize",
                evse_id=command.evse_id,
                operator_id=operator_id,
                provider_id=answer.provider_id,
                peer_id=peer.id if peer is not None else None,
                identification=without_pin(identification).to_oicp(),
                cpo_partner_session_id=command.cpo_partner_session_id,
                emp_partner_session_id=answer.emp_partner_session_id or command.emp_partner_session_id,
                partner_product_id=command.partner_product_id,
                details={
                    "decided_by": decided_by,
                    "offline": decided_by == "auth_data",
                    "AuthorizationStopIdentifications": [i.to_oicp() for i in stop_ids or []],
                },
            ),
            correlation_id,
        )
    return await decided(
        deps,
        role="cpo",
        operation="AuthorizeStart",
        answer=answer,
        decided_by=decided_by,
        correlation_id=correlation_id,
        peer_id=peer.id if peer is not None else None,
        operator_id=operator_id,
        evse_id=command.evse_id,
        identification=identification,
    )


async def _offline_match(deps: AuthorizationDeps, identification: Identification) -> str | None:
    """The ProviderID whose pushed authentication data authorizes this medium, or None."""
    record = await deps.auth_data.lookup(identification)
    if record is None:
        return None
    qr = identification.qr_code_identification
    if qr is not None and not (qr.pin and pin_matches(qr.pin, record.identification)):
        return None  # a wrong PIN offline: the EMP itself may still know better (online)
    return record.provider_id


async def authorize_stop(
    deps: AuthorizationDeps, envelope: Envelope[CpoAuthorizeStop], correlation_id: str | None
) -> CommandReply:
    command = envelope.data
    identification = command.identification
    session = await deps.ledger.get(command.session_id)
    partner: dict[str, Any] = {
        "cpo_partner_session_id": command.cpo_partner_session_id,
        "emp_partner_session_id": command.emp_partner_session_id,
    }
    peer: PeerConfig | None = None
    answer: AuthorizationStopResponse
    decided_by = "session"
    if session is None or session.role != "cpo":
        answer = AuthorizationStopResponse.not_authorized(
            CODE.SESSION_IS_INVALID, f"no session {command.session_id} at this CPO", **partner
        )
    elif (refusal := refusal_of_medium(identification)) is not None:
        answer = AuthorizationStopResponse.not_authorized(*refusal, session_id=command.session_id, **partner)
    elif session.peer_id is None:
        # Authorized offline from pushed data: only the same medium may stop it (DIGEST §9.6 item 6).
        own = Identification.model_validate(session.identification) if session.identification else None
        if own is not None and same_medium(identification, own):
            answer = AuthorizationStopResponse.authorized(command.session_id, session.provider_id, **partner)
        else:
            answer = AuthorizationStopResponse.not_authorized(
                STOP_MISMATCH_CODES[identification.kind],
                "a session authorized offline may only be stopped with the same medium",
                session_id=command.session_id,
                **partner,
            )
    else:
        decided_by = "peer"
        peer = await deps.registry.get(Role.EMP, normalize_id(session.peer_id))
        if peer is None or not peer.enabled:
            answer = AuthorizationStopResponse.not_authorized(
                CODE.PARTNER_NOT_FOUND, f"the EMP {session.peer_id} of the session is no peer any more", **partner
            )
        else:
            request = AuthorizeStopRequest(
                session_id=command.session_id,
                operator_id=command.operator_id
                or session.operator_id
                or _operator_of(deps, command.evse_id or session.evse_id, None),
                identification=identification,
                evse_id=command.evse_id or session.evse_id,
                cpo_partner_session_id=command.cpo_partner_session_id or session.cpo_partner_session_id,
                emp_partner_session_id=command.emp_partner_session_id or session.emp_partner_session_id,
            )
            try:
                answer = await deps.client.call(
                    peer, STOP_PATH.format(operatorID=request.operator_id), request, AuthorizationStopResponse
                )
            except PeerCallError as exc:
                answer = AuthorizationStopResponse.not_authorized(
                    CODE.PARTNER_DID_NOT_RESPOND, f"{peer.id}: {exc}", session_id=command.session_id, **partner
                )
    return await decided(
        deps,
        role="cpo",
        operation="AuthorizeStop",
        answer=answer,
        decided_by=decided_by,
        correlation_id=correlation_id,
        peer_id=peer.id if peer is not None else session.peer_id if session is not None else None,
        operator_id=command.operator_id or (session.operator_id if session else None),
        evse_id=command.evse_id or (session.evse_id if session else None),
        identification=identification,
    )


async def ingest_auth_data(
    deps: AuthorizationDeps, envelope: Envelope[AuthDataIngest], correlation_id: str | None
) -> CommandReply:
    """A PushAuthenticationData from an EMP peer (ProviderID already checked to be the caller's)."""
    ingest = envelope.data
    request = ingest.request
    data = request.provider_authentication_data
    action = request.action_type.value
    identifications = [r.identification for r in data.authentication_data_record]
    foreign = [
        i.evco_id for i in identifications if i.evco_id is not None and not evco_belongs_to(i.evco_id, data.provider_id)
    ]
    if foreign:
        shown = ", ".join(foreign[:MAX_KEYS_IN_INFO])
        return CommandReply(
            ok=False, code=CODE.INCONSISTENT_EVCO_ID, info=f"EvcoIDs not of provider {data.provider_id}: {shown}"
        )
    stored = [_hashed(i) for i in identifications]
    result = await deps.auth_data.apply(action, data.provider_id, stored, ingest.peer_id)
    if not result.ok:
        return CommandReply(ok=False, code=CODE.DATA_TRANSACTION_ERROR, info=result.conflict_info(action))
    await deps.bus.emit_event(
        EventType.AUTH_DATA_RECEIVED,
        AuthDataReceived(
            peer_id=ingest.peer_id,
            provider_id=data.provider_id,
            action_type=request.action_type,
            stored=len(result.changed),
            deleted=len(result.deleted),
            received_at=ingest.received_at,
        ),
        correlation_id=correlation_id,
    )
    return CommandReply(ok=True, changed=len(result.changed), deleted=len(result.deleted))


def _hashed(identification: Identification) -> Identification:
    """A QR medium with a clear PIN is stored with its bcrypt hash instead (clear PINs are never kept)."""
    qr = identification.qr_code_identification
    if qr is None or not qr.pin:
        return identification
    return Identification.qr_code(qr.evco_id, hashed_pin=hash_pin(qr.pin))
