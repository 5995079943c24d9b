"""EMP role: remote start/stop and reservations sent to CPO peers, charging notifications received.

Sending is never retried (ARCHITECTURE §5: remote start is not idempotent). The session is recorded
as ``requested`` before the one call; a command that finds its SessionID in the ledger (a repeat by
the caller, or a redelivery after a crash) is answered from the ledger and not sent again. A timeout
or an unreachable CPO leaves the session in ``error``, not deleted: the CPO may have started it, and
its notifications and CDR must still find it here.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from services.sessions.app import SessionsDeps
from services.sessions.common import (
    accepted,
    apply_notification,
    emit,
    emit_notification,
    from_acknowledgement,
    progress_allowed,
    progress_refusal,
    refused,
    settle,
    stopped,
)
from shared.bus.envelope import Envelope
from shared.bus.messages import (
    CommandReply,
    EventType,
    NotificationIngest,
    RemoteStart,
    RemoteStop,
    ReservationStart,
    ReservationStop,
)
from shared.oicp import (
    AuthorizeRemoteReservationStartRequest,
    AuthorizeRemoteReservationStopRequest,
    AuthorizeRemoteStartRequest,
    AuthorizeRemoteStopRequest,
    OICPModel,
    StatusCodeValue,
)
from shared.oicp.ids import new_session_id, normalize_id
from shared.oicp.operations import OPERATIONS_BY_NAME
from shared.oicp.status import Acknowledgement
from shared.peers.client import PeerCallError
from shared.peers.routing import route_evse
from shared.settings import PeerConfig, Role
from shared.stores.sessions import Session, SessionState

logger = logging.getLogger(__name__)

S = SessionState
#: A reservation in these states is over: stopping it is refused without asking the CPO.
RESERVATION_OVER = frozenset({S.EXPIRED, S.ENDED, S.CDR_RECEIVED})
#: A stop/reservation stop command already sent once (by event_id) is never sent again.
SENT_MARKER_SECONDS = 86_400


def _own_provider(deps: SessionsDeps, provider_id: str | None) -> str | CommandReply:
    """The ProviderID to send as (default: the node's first), or a 017 refusal for a foreign one."""
    if provider_id is None:
        return deps.settings.provider_ids[0]
    if normalize_id(provider_id) not in {normalize_id(p) for p in deps.settings.provider_ids}:
        return refused(
            StatusCodeValue.UNAUTHORIZED_ACCESS,
            f"ProviderID {provider_id} is not one of this node's providers {deps.settings.provider_ids}",
        )
    return provider_id


async def cpo_peer_for(deps: SessionsDeps, evse_id: str) -> PeerConfig | None:
    """The CPO peer of the EvseID's operator, else the default-route (hub) peer, else None."""
    route = await route_evse(deps.registry, evse_id)
    return route.peer if route else None


async def _session_peer(deps: SessionsDeps, session: Session) -> PeerConfig | None:
    """The CPO peer a session's requests went to (stops follow the start), else route by EvseID."""
    if session.peer_id:
        peer = await deps.registry.get(Role.CPO, normalize_id(session.peer_id))
        if peer is not None and peer.enabled:
            return peer
    return await cpo_peer_for(deps, session.evse_id) if session.evse_id else None


def _path(operation: str, provider_id: str) -> str:
    return OPERATIONS_BY_NAME[operation].path.format(providerID=provider_id)


def _recorded(existing: Session, kind: str, evse_id: str) -> CommandReply:
    """The answer to a start whose SessionID is in the ledger already: never sent twice."""
    sid = existing.session_id
    if existing.role != "emp" or existing.kind != kind or existing.evse_id != evse_id:
        return refused(StatusCodeValue.SESSION_IS_INVALID, f"SessionID {sid} belongs to another session", sid)
    outcome = existing.details.get("outcome")
    if outcome is not None:
        return CommandReply.model_validate(outcome)
    # Recorded but no outcome: in flight in another worker, or its worker stopped between recording
    # and answering. Sending again could start a second charge: it is not sent.
    return refused(
        StatusCodeValue.PARTNER_DID_NOT_RESPOND,
        f"session {sid} was requested already and its outcome is not known yet; it is not sent again",
        sid,
    )


async def start(
    deps: SessionsDeps, envelope: Envelope[RemoteStart] | Envelope[ReservationStart], correlation_id: str | None
) -> CommandReply:
    """emp.remote_start.request / emp.reservation.start.request: one AuthorizeRemote(Reservation)Start."""
    command = envelope.data
    reservation = isinstance(command, ReservationStart)
    kind = "reservation" if reservation else "remote"
    provider_id = _own_provider(deps, command.provider_id)
    if isinstance(provider_id, CommandReply):
        return provider_id
    session_id = command.session_id or new_session_id()
    existing = await deps.ledger.get(session_id)
    if existing is not None:
        return _recorded(existing, kind, command.evse_id)
    peer = await cpo_peer_for(deps, command.evse_id)
    if peer is None:
        # Nothing is sent, so nothing is recorded: the caller may try again once the peer exists.
        return refused(
            StatusCodeValue.PARTNER_NOT_FOUND,
            f"no CPO peer for EvseID {command.evse_id} and no default route",
            session_id,
        )
    request: OICPModel
    fields = command.model_dump(by_alias=True, exclude_none=True)
    fields.update(ProviderID=provider_id, SessionID=session_id)
    if reservation:
        request = AuthorizeRemoteReservationStartRequest.model_validate(fields)
        operation = "AuthorizeRemoteReservationStart"
    else:
        request = AuthorizeRemoteStartRequest.model_validate(fields)
        operation = "AuthorizeRemoteStart"
    session = Session(
        session_id=session_id,
        role="emp",
        state=S.REQUESTED,
        evse_id=command.evse_id,
        operator_id=peer.id if not peer.default_route else None,
        provider_id=provider_id,
        peer_id=peer.id,
        kind=kind,
        identification=command.identification.to_oicp(),
        emp_partner_session_id=command.emp_partner_session_id,
        partner_product_id=command.partner_product_id,
    )
    created, stored = await deps.ledger.create(session, note=f"{operation} sent to {peer.id}")
    if not created:  # a concurrent command took the SessionID first
        return _recorded(stored, kind, command.evse_id)
    await emit(deps, EventType.SESSION_REQUESTED, stored, correlation_id=correlation_id)

    try:
        ack = await deps.client.call(peer, _path(operation, provider_id), request, Acknowledgement)
    except PeerCallError as exc:
        # Outcome unknown (the CPO may have started): keep the session, mark it error, never resend.
        reply = refused(
            StatusCodeValue.PARTNER_DID_NOT_RESPOND,
            f"CPO {peer.id} did not answer {operation} ({exc}); the session is kept for its notifications and CDR",
            session_id,
        )
        await settle(deps, stored, S.ERROR, reply, f"no answer from {peer.id}: {exc.kind}", correlation_id)
        return reply

    reply = from_acknowledgement(ack, session_id)
    extra: dict[str, str] = {}
    if ack.cpo_partner_session_id:
        extra["cpo_partner_session_id"] = ack.cpo_partner_session_id
    if not reply.ok:
        await settle(deps, stored, S.REFUSED, reply, f"refused by {peer.id}: {reply.code.value}", correlation_id, extra)
    elif reservation:
        minutes = command.duration or deps.settings.sessions.default_reservation_minutes  # type: ignore[union-attr]
        extra["reservation_until"] = (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()
        await settle(deps, stored, S.RESERVED, reply, f"reserved for {minutes} min", correlation_id, extra)
    else:
        await settle(deps, stored, S.STARTED, reply, f"accepted by {peer.id}", correlation_id, extra)
    return reply


async def stop(
    deps: SessionsDeps, envelope: Envelope[RemoteStop] | Envelope[ReservationStop], correlation_id: str | None
) -> CommandReply:
    """emp.remote_stop.request / emp.reservation.stop.request for a session this EMP started."""
    command = envelope.data
    reservation = isinstance(command, ReservationStop)
    sid = command.session_id
    session = await deps.ledger.get(sid)
    kinds = {"reservation"} if reservation else {"remote", "authorize"}
    if session is None or session.role != "emp" or session.kind not in kinds:
        what = "reservation" if reservation else "charging session"
        return refused(StatusCodeValue.SESSION_IS_INVALID, f"no {what} {sid} of this EMP", sid)
    if reservation and session.state in RESERVATION_OVER:
        return refused(StatusCodeValue.SESSION_IS_INVALID, f"reservation {sid} is {session.state.value}", sid)
    provider_id = _own_provider(deps, command.provider_id or session.provider_id)
    if isinstance(provider_id, CommandReply):
        return provider_id
    evse_id = command.evse_id or session.evse_id
    if evse_id is None or (session.evse_id and normalize_id(evse_id) != normalize_id(session.evse_id)):
        return refused(StatusCodeValue.SESSION_IS_INVALID, f"EvseID {evse_id} is not the EVSE of session {sid}", sid)
    peer = await _session_peer(deps, session)
    if peer is None:
        return refused(
            StatusCodeValue.PARTNER_NOT_FOUND, f"the CPO peer {session.peer_id} of session {sid} is gone", sid
        )
    # Sent once per command: a redelivery after a crash mid-call is not sent again.
    marker = deps.key("sent", str(envelope.event_id))
    if not await deps.redis.set(marker, b"1", nx=True, ex=SENT_MARKER_SECONDS):
        return refused(
            StatusCodeValue.PARTNER_DID_NOT_RESPOND, f"this stop of session {sid} was sent already; not sent again", sid
        )
    operation = "AuthorizeRemoteReservationStop" if reservation else "AuthorizeRemoteStop"
    model = AuthorizeRemoteReservationStopRequest if reservation else AuthorizeRemoteStopRequest
    request = model(
        session_id=sid,
        provider_id=provider_id,
        evse_id=evse_id,
        cpo_partner_session_id=command.cpo_partner_session_id or session.cpo_partner_session_id,
        emp_partner_session_id=command.emp_partner_session_id or session.emp_partner_session_id,
    )
    try:
        ack = await deps.client.call(peer, _path(operation, provider_id), request, Acknowledgement)
    except PeerCallError as exc:
        return refused(
            StatusCodeValue.PARTNER_DID_NOT_RESPOND, f"CPO {peer.id} did not answer {operation} ({exc})", sid
        )
    reply = from_acknowledgement(ack, sid)
    if reply.ok:
        await stopped(deps, session, reservation, f"{operation} accepted by {peer.id}", correlation_id)
    return reply


def _from_session_cpo(session: Session, caller: str) -> bool:
    caller_key = normalize_id(caller)
    return any(normalize_id(i) == caller_key for i in (session.peer_id, session.operator_id) if i)


async def ingest_notification(
    deps: SessionsDeps, envelope: Envelope[NotificationIngest], correlation_id: str | None
) -> CommandReply:
    """A ChargingNotification from a CPO peer (validated and ID-checked by the gateway).

    Accepted for any session this EMP recorded with that CPO - also one whose remote start timed
    out or was refused (the timeout case: the charge point did start after all)."""
    notification = envelope.data.request
    sid = notification.session_id
    session = await deps.ledger.get(sid)
    if session is None or session.role != "emp" or not _from_session_cpo(session, envelope.data.peer_id):
        return refused(StatusCodeValue.SESSION_IS_INVALID, f"session {sid} is not a session of this EMP with you", sid)
    if session.evse_id and normalize_id(session.evse_id) != normalize_id(notification.evse_id):
        return refused(
            StatusCodeValue.SESSION_IS_INVALID, f"EvseID {notification.evse_id} is not the EVSE of session {sid}", sid
        )
    if notification.type == "Progress" and not await progress_allowed(deps, sid):
        return progress_refusal(deps, sid)
    stored, previous = await apply_notification(deps, session, notification, f"from {envelope.data.peer_id}")
    reply = accepted(stored)
    await emit_notification(deps, stored, previous, notification, reply, correlation_id)
    return reply
