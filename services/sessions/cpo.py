"""CPO role: remote start/stop and reservations from EMP peers, answered by the charge point backend;
charging notifications from the backend, sent to the session's EMP.

The session is recorded as ``requested`` *before* the backend is asked (ARCHITECTURE §6), so whatever
the timing the session exists: a backend that answers after the deadline is adopted
(``adopt_late_reply``: error → started), and its notifications and CDR find the session and its EMP.

Decisions (DIGEST §6.2, §9.7, §9.8):

* SessionID: in P2P the EMP node issues it. A request without one (a hub-style EMP) gets one issued
  here, returned in the acknowledgement's SessionID.
* EVSE: an EvseID that is not of this node's operators is ``603``; once any own EVSE data exists, an
  EvseID not among it is ``603`` too, and one with IsHubjectCompatible=false ``604``.
* Backend answers: accepted → started (reservation: reserved until now + Duration, default
  ``default_reservation_minutes``); refused → its code passed through if it is one a CPO may give
  (501, 510, 601, 602, 603, 604, 700), anything else becomes ``501`` (the original code in
  AdditionalInfo); session refused.
* No backend bound to the request: ``320 Service not available``, session refused - nothing reached a
  charge point, so nothing can start. No answer in time: ``501 Communication to EVSE failed``,
  session error (the charge point may still start: a late answer is adopted).
* Remote stop / reservation stop: only the EMP that owns the session (``400 Session is invalid``);
  accepted → ended, waiting for the CDR. A reservation's end publishes ``session.reservation.ended``:
  that event hands the CDR request on to the backend (DIGEST §9.8: after a ReservationStop the CPO
  MUST send a CDR), which submits it through the cdr service.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

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
    release_progress,
    settle,
    stopped,
)
from shared.bus.client import BusUnavailable
from shared.bus.envelope import Envelope
from shared.bus.messages import (
    BackendReply,
    CommandReply,
    EventType,
    InternalRequest,
    RemoteStartIngest,
    RemoteStopIngest,
    ReservationStartIngest,
    ReservationStopIngest,
    SessionNotify,
)
from shared.bus.rpc import NoResponder, RequestTimeout
from shared.oicp import StatusCodeValue
from shared.oicp.ids import new_session_id, normalize_id
from shared.oicp.operations import OPERATIONS_BY_NAME
from shared.oicp.status import Acknowledgement
from shared.peers.client import PeerCallError
from shared.peers.routing import DIRECT, pick
from shared.settings import PeerConfig, Role
from shared.stores.sessions import InvalidTransition, Session, SessionState

logger = logging.getLogger(__name__)

S = SessionState
C = StatusCodeValue
#: Refusal codes a charge point backend may give (DIGEST §6.2: "500-700" from the CPO).
BACKEND_CODES = frozenset({C.COMMUNICATION_TO_EVSE_FAILED, C.NO_EV_CONNECTED_TO_EVSE, C.EVSE_ALREADY_RESERVED,
                           C.EVSE_ALREADY_IN_USE, C.UNKNOWN_EVSE_ID, C.EVSE_ID_NOT_HUBJECT_COMPATIBLE,
                           C.EVSE_OUT_OF_SERVICE})  # fmt: skip
NOTIFICATION_PATH = OPERATIONS_BY_NAME["ChargingNotification"].path
#: A reservation in these states is over: a stop is refused without asking the backend.
RESERVATION_OVER = frozenset({S.EXPIRED, S.ENDED, S.CDR_SENT})
#: Backend request ids of stops carry this marker; a start's request id is its SessionID.
STOP_MARK = "|stop|"


async def _evse_problem(deps: SessionsDeps, evse_id: str, session_id: str | None) -> CommandReply | None:
    if deps.settings.own_operator_of(evse_id) is None:
        return refused(C.UNKNOWN_EVSE_ID, f"EvseID {evse_id} is not an EVSE of this CPO", session_id)
    if await deps.own_data.count() == 0:
        return None  # no EVSE data kept here: the backend decides (OICP: 603 only once data exists)
    stored = (await deps.own_data.get_many([evse_id]))[evse_id]
    if stored is None:
        return refused(C.UNKNOWN_EVSE_ID, f"EvseID {evse_id} is not among this CPO's EVSE data", session_id)
    if stored.record.get("IsHubjectCompatible") is False:
        return refused(C.EVSE_ID_NOT_HUBJECT_COMPATIBLE, f"EvseID {evse_id} is not open to roaming", session_id)
    return None


def _recorded(existing: Session, kind: str, peer_id: str, evse_id: str) -> CommandReply:
    """A start whose SessionID is known: the same request again gets the recorded answer (the
    backend is not asked twice); a different one finds the SessionID taken."""
    sid = existing.session_id
    same = (
        existing.role == "cpo"
        and existing.kind == kind
        and normalize_id(existing.peer_id or "") == normalize_id(peer_id)
        and existing.evse_id == evse_id
    )
    if not same:
        return refused(C.SESSION_IS_INVALID, f"SessionID {sid} belongs to another session", sid)
    outcome = existing.details.get("outcome")
    if outcome is not None:
        return CommandReply.model_validate(outcome)
    return refused(C.COMMUNICATION_TO_EVSE_FAILED, f"session {sid} is being started already; not asked again", sid)


async def _ask_backend(
    deps: SessionsDeps, request: InternalRequest, payload: Any, request_id: str, correlation_id: str | None
) -> BackendReply | CommandReply:
    """Ask the charge point backend; its BackendReply, or the refusal that stands in for it."""
    timeout = deps.settings.sessions.backend_timeout_seconds
    body: Envelope[Any] = Envelope(type=request.value, node=deps.settings.name, data=payload)
    try:
        raw = await deps.rpc.ask(
            deps.topology.requests.name,
            request.value,
            body.to_bus(),
            timeout,
            request_id=request_id,
            correlation_id=correlation_id,
        )
    except NoResponder:
        return CommandReply(
            ok=False, code=C.SERVICE_NOT_AVAILABLE, info=f"no charge point backend takes {request.value}"
        )
    except RequestTimeout:
        return CommandReply(
            ok=False,
            code=C.COMMUNICATION_TO_EVSE_FAILED,
            info=f"the charge point backend did not answer in {timeout:g}s",
        )
    except BusUnavailable as exc:
        return CommandReply(ok=False, code=C.SYSTEM_ERROR, info=f"message bus unavailable: {exc}")
    try:
        return BackendReply.model_validate(raw)
    except ValidationError:
        return CommandReply(
            ok=False, code=C.COMMUNICATION_TO_EVSE_FAILED, info="the charge point backend's answer is invalid"
        )


def _refusal_of(backend: BackendReply) -> tuple[C, str]:
    info = backend.info or backend.code.description
    if backend.code in BACKEND_CODES:
        return backend.code, info
    return C.COMMUNICATION_TO_EVSE_FAILED, f"backend refused with code {backend.code.value}: {info}"


async def start(
    deps: SessionsDeps,
    envelope: Envelope[RemoteStartIngest] | Envelope[ReservationStartIngest],
    correlation_id: str | None,
) -> CommandReply:
    """cpo.remote_start.ingest / cpo.reservation.start.ingest: an EMP peer's (reservation) start."""
    ingest = envelope.data
    reservation = isinstance(ingest, ReservationStartIngest)
    kind = "reservation" if reservation else "remote"
    request = ingest.request
    if problem := await _evse_problem(deps, request.evse_id, request.session_id):
        return problem
    session_id = request.session_id or new_session_id()
    existing = await deps.ledger.get(session_id)
    if existing is not None:
        return _recorded(existing, kind, ingest.peer_id, request.evse_id)
    request = request.model_copy(update={"session_id": session_id})
    minutes = (request.duration or deps.settings.sessions.default_reservation_minutes) if reservation else None  # type: ignore[union-attr]
    session = Session(
        session_id=session_id,
        role="cpo",
        state=S.REQUESTED,
        evse_id=request.evse_id,
        operator_id=deps.settings.own_operator_of(request.evse_id),
        provider_id=request.provider_id,
        peer_id=ingest.peer_id,
        kind=kind,
        identification=request.identification.to_oicp(),
        cpo_partner_session_id=request.cpo_partner_session_id,
        emp_partner_session_id=request.emp_partner_session_id,
        partner_product_id=request.partner_product_id,
        details={"duration_minutes": minutes} if minutes else {},
    )
    created, stored = await deps.ledger.create(session, note=f"{kind} start from {ingest.peer_id}")
    if not created:
        return _recorded(stored, kind, ingest.peer_id, request.evse_id)
    await emit(deps, EventType.SESSION_REQUESTED, stored, correlation_id=correlation_id)

    what = InternalRequest.CPO_BACKEND_RESERVATION_START if reservation else InternalRequest.CPO_BACKEND_REMOTE_START
    answer = await _ask_backend(deps, what, ingest.model_copy(update={"request": request}), session_id, correlation_id)
    if isinstance(answer, CommandReply):
        reply = refused(answer.code, answer.info or answer.code.description, session_id)
        # Nobody listening means nothing happened (refused); otherwise the outcome is unknown (error).
        to = S.REFUSED if answer.code is C.SERVICE_NOT_AVAILABLE else S.ERROR
        await settle(deps, stored, to, reply, answer.info or "", correlation_id)
        return reply
    if not answer.accepted:
        code, info = _refusal_of(answer)
        reply = refused(code, info, session_id)
        await settle(deps, stored, S.REFUSED, reply, f"refused by the backend: {answer.code.value}", correlation_id)
        return reply
    extra: dict[str, str] = {}
    if answer.cpo_partner_session_id:
        # The backend's own key of the session: the EMP gets it in the acknowledgement (DIGEST §9.12).
        stored.cpo_partner_session_id = extra["cpo_partner_session_id"] = answer.cpo_partner_session_id
    reply = accepted(stored)
    if reservation:
        extra["reservation_until"] = (datetime.now(UTC) + timedelta(minutes=minutes or 0)).isoformat()
        await settle(deps, stored, S.RESERVED, reply, f"reserved for {minutes} min", correlation_id, extra)
    else:
        await settle(deps, stored, S.STARTED, reply, "accepted by the backend", correlation_id, extra)
    return reply


async def adopt_late_reply(deps: SessionsDeps, request_id: str, reply: dict[str, Any]) -> None:
    """The backend answered a start after the deadline (the EMP was told 501): a confirmation makes
    the session real - error → started (reservation: reserved), with its event - never dropped."""
    if STOP_MARK in request_id:
        logger.info("late backend answer to stop request %s: %s", request_id, reply)
        return
    session = await deps.ledger.get(request_id)
    if session is None or session.role != "cpo":
        logger.warning("late backend answer for unknown session %s ignored", request_id)
        return
    try:
        backend = BackendReply.model_validate(reply)
    except ValidationError:
        logger.warning("late backend answer for session %s is invalid: %s", request_id, reply)
        return
    if not backend.accepted:
        logger.info(
            "late backend refusal for session %s (%s): state %s kept", request_id, backend.code.value, session.state
        )
        return
    fields: dict[str, Any] = {}
    to = S.STARTED
    if session.kind == "reservation":
        to = S.RESERVED
        minutes = session.details.get("duration_minutes") or deps.settings.sessions.default_reservation_minutes
        fields["reservation_until"] = (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()
    try:
        stored, previous = await deps.ledger.transition(
            request_id, to, "late confirmation by the charge point backend", only_from={S.ERROR, S.REQUESTED}, **fields
        )
    except InvalidTransition as exc:
        logger.info("late confirmation of session %s not applied: %s", request_id, exc)
        return
    if previous is not to:
        event = EventType.SESSION_RESERVED if to is S.RESERVED else EventType.SESSION_STARTED
        await emit(deps, event, stored, previous, code=C.SUCCESS, info="late confirmation by the charge point backend")


async def stop(
    deps: SessionsDeps,
    envelope: Envelope[RemoteStopIngest] | Envelope[ReservationStopIngest],
    correlation_id: str | None,
) -> CommandReply:
    """cpo.remote_stop.ingest / cpo.reservation.stop.ingest: only the EMP that owns the session."""
    ingest = envelope.data
    reservation = isinstance(ingest, ReservationStopIngest)
    request = ingest.request
    sid = request.session_id
    session = await deps.ledger.get(sid)
    kinds = {"reservation"} if reservation else {"remote", "authorize"}
    if (
        session is None
        or session.role != "cpo"
        or session.kind not in kinds
        or normalize_id(session.peer_id or "") != normalize_id(ingest.peer_id)
        or (session.evse_id is not None and normalize_id(session.evse_id) != normalize_id(request.evse_id))
    ):
        return refused(C.SESSION_IS_INVALID, f"session {sid} is not a session of yours at EVSE {request.evse_id}", sid)
    if reservation and session.state in RESERVATION_OVER:
        return refused(C.SESSION_IS_INVALID, f"reservation {sid} is {session.state.value}", sid)
    what = InternalRequest.CPO_BACKEND_RESERVATION_STOP if reservation else InternalRequest.CPO_BACKEND_REMOTE_STOP
    answer = await _ask_backend(deps, what, ingest, f"{sid}{STOP_MARK}{envelope.event_id}", correlation_id)
    if isinstance(answer, CommandReply):
        return refused(answer.code, answer.info or answer.code.description, sid)
    if not answer.accepted:
        return refused(*_refusal_of(answer), sid)
    note = "reservation stop accepted by the backend" if reservation else "remote stop accepted by the backend"
    info = "CDR due: the charge point backend sends the reservation's CDR" if reservation else None
    await stopped(deps, session, reservation, note, correlation_id, info)
    return accepted(session)


async def _emp_peer(deps: SessionsDeps, session: Session) -> PeerConfig | None:
    """The EMP peer that owns the session: the one it came from, else the one of its ProviderID,
    else the default-route (hub) EMP peer."""
    peers = await deps.registry.enabled(Role.EMP)
    for wanted in (session.peer_id, session.provider_id):
        if wanted and (route := pick(peers, Role.EMP, wanted)).via == DIRECT:
            return route.peer
    return pick(peers, Role.EMP, "").peer  # the default route, if any


async def notify(deps: SessionsDeps, envelope: Envelope[SessionNotify], correlation_id: str | None) -> CommandReply:
    """cpo.session.notify: a charging notification of the backend, sent to the session's EMP.

    The ledger moves first (the backend's report is a fact whether or not the EMP takes it); a Progress
    within ``progress_min_interval_seconds`` of the previous one is refused here and not sent."""
    notification = envelope.data.notification
    sid = notification.session_id
    if normalize_id(notification.operator_id) not in {normalize_id(o) for o in deps.settings.operator_ids}:
        return refused(C.UNAUTHORIZED_ACCESS, f"OperatorID {notification.operator_id} is not this node's", sid)
    session = await deps.ledger.get(sid)
    if session is None or session.role != "cpo":
        return refused(C.SESSION_IS_INVALID, f"no session {sid} at this CPO: not sent", sid)
    if session.evse_id and normalize_id(session.evse_id) != normalize_id(notification.evse_id):
        return refused(
            C.SESSION_IS_INVALID, f"EvseID {notification.evse_id} is not the EVSE of session {sid}: not sent", sid
        )
    peer = await _emp_peer(deps, session)
    if peer is None:
        return refused(C.PARTNER_NOT_FOUND, f"no EMP peer for session {sid} ({session.peer_id})", sid)
    progress = notification.type == "Progress"
    if progress and not await progress_allowed(deps, sid):
        return progress_refusal(deps, sid)
    # The EMP knows the session by its partner session IDs too: carry them when the backend did not.
    notification = notification.model_copy(
        update={
            "cpo_partner_session_id": notification.cpo_partner_session_id or session.cpo_partner_session_id,
            "emp_partner_session_id": notification.emp_partner_session_id or session.emp_partner_session_id,
        }
    )
    stored, previous = await apply_notification(deps, session, notification, f"sent to {peer.id}")
    try:
        ack = await deps.client.call(peer, NOTIFICATION_PATH, notification, Acknowledgement)
    except PeerCallError as exc:
        if progress and exc.kind != "timeout":  # it never arrived: the next Progress may go at once
            await release_progress(deps, sid)
        reply = refused(C.PARTNER_DID_NOT_RESPOND, f"EMP {peer.id} did not take the notification ({exc})", sid)
    else:
        reply = from_acknowledgement(ack, sid)
    await emit_notification(deps, stored, previous, notification, reply, correlation_id)
    return reply
