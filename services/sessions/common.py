"""What both roles of the sessions service share: replies, events, the Progress interval rule and
how a charging notification moves the ledger."""

from __future__ import annotations

import logging
from typing import Any

from services.sessions.app import SessionsDeps
from shared.bus.client import BusUnavailable
from shared.bus.messages import ChargingNotification, CommandReply, EventType, SessionEvent
from shared.oicp import StatusCodeValue
from shared.oicp.status import Acknowledgement
from shared.stores.sessions import InvalidTransition, Session, SessionState, UnknownSession

logger = logging.getLogger(__name__)

S = SessionState
#: Hubject's refusal text for a Progress notification sent too early (DIGEST §6.2, §9.11).
PROGRESS_TOO_EARLY = "Progress Notification can be sent only at interval of at least {minutes} min"
#: What a notification type makes of the session (End: energy flow over, the CDR is due).
NOTIFICATION_STATE = {"Start": S.STARTED, "Progress": S.CHARGING, "End": S.ENDED}
#: An Error notification before the start means the start failed; during charging it is noted and
#: the state kept (OICP: errors "before charging starts, during charging or as an abrupt end").
ERROR_ENDS_START = frozenset({S.REQUESTED, S.AUTHORIZED, S.RESERVED})
#: Events that accompany a state change (besides session.notification).
STATE_EVENTS = {
    S.STARTED: EventType.SESSION_STARTED,
    S.ENDED: EventType.SESSION_STOPPED,
    S.ERROR: EventType.SESSION_FAILED,
}


def refused(code: StatusCodeValue, info: str, session_id: str | None = None) -> CommandReply:
    """A refusal with the acknowledgement the OICP caller gets (the gateway passes ``answer`` on)."""
    answer = Acknowledgement.error(code, info, session_id=session_id).to_oicp()
    return CommandReply(ok=False, code=code, info=info, session_id=session_id, answer=answer)


def accepted(session: Session, info: str | None = None) -> CommandReply:
    answer = Acknowledgement.ok(
        session.session_id,
        cpo_partner_session_id=session.cpo_partner_session_id,
        emp_partner_session_id=session.emp_partner_session_id,
    ).to_oicp()
    return CommandReply(ok=True, info=info, session_id=session.session_id, answer=answer)


def from_acknowledgement(ack: Acknowledgement, session_id: str) -> CommandReply:
    """The partner's acknowledgement as the command's reply (passed back unchanged in ``answer``)."""
    status = ack.status_code
    return CommandReply(
        ok=ack.result and status.is_success,
        code=status.code,
        info=status.additional_info or status.description,
        session_id=session_id,
        answer=ack.to_oicp(),
    )


async def emit(
    deps: SessionsDeps,
    event: EventType,
    session: Session,
    previous: SessionState | None = None,
    *,
    code: StatusCodeValue | str | None = None,
    info: str | None = None,
    notification: dict[str, Any] | None = None,
    correlation_id: str | None = None,
) -> None:
    """Publish a session event. The ledger is the truth; an event lost to a broker outage is logged,
    not retried by failing the command (that could re-send a remote start)."""
    payload = SessionEvent(
        session=session.as_dict(),
        previous_state=previous.value if previous else None,
        code=str(code.value if isinstance(code, StatusCodeValue) else code) if code is not None else None,
        info=info,
        notification=notification,
    )
    try:
        await deps.bus.emit_event(event, payload, correlation_id=correlation_id or session.session_id)
    except BusUnavailable as exc:
        logger.error("%s of session %s not published: %s", event.value, session.session_id, exc)


async def progress_allowed(deps: SessionsDeps, session_id: str) -> bool:
    """The 5-minute rule (DIGEST §9.11), enforced atomically across replicas: the first Progress of a
    window takes the slot (SET NX with the interval as expiry); every other one in it is refused."""
    interval = deps.settings.sessions.progress_min_interval_seconds
    if interval <= 0:
        return True
    taken = await deps.redis.set(deps.key("progress", session_id), b"1", nx=True, px=max(1, int(interval * 1000)))
    return bool(taken)


async def release_progress(deps: SessionsDeps, session_id: str) -> None:
    """Give the slot back (the Progress never reached the EMP, so the next one may go at once)."""
    await deps.redis.delete(deps.key("progress", session_id))


def progress_refusal(deps: SessionsDeps, session_id: str) -> CommandReply:
    minutes = deps.settings.sessions.progress_min_interval_seconds / 60
    text = PROGRESS_TOO_EARLY.format(minutes=f"{minutes:g}")
    return refused(StatusCodeValue.DATA_ERROR, text, session_id)


async def apply_notification(
    deps: SessionsDeps, session: Session, notification: ChargingNotification, direction: str
) -> tuple[Session, SessionState | None]:
    """Move the ledger for a charging notification; returns (session, previous state) where the
    state changed, else (session, None).

    OICP specifies no order for notifications: one that the state machine does not allow (a Progress
    after the End, a Start after a CDR) is still accepted and passed on, and the ledger keeps its
    state with a note in the history."""
    kind = notification.type
    wanted = NOTIFICATION_STATE.get(kind)
    if kind == "Error":
        wanted = S.ERROR if session.state in ERROR_ENDS_START else session.state
    note = f"{kind} notification {direction}"
    if kind == "Error":
        note += f": {notification.error_type}"  # type: ignore[union-attr]
    fields: dict[str, Any] = {}
    if kind == "Progress":
        fields["details"] = {**session.details, "last_progress_at": notification.event_occurred.isoformat()}  # type: ignore[union-attr]
    assert wanted is not None
    try:
        stored, previous = await deps.ledger.transition(session.session_id, wanted, note, **fields)
    except InvalidTransition as exc:
        logger.info("session %s: %s", session.session_id, exc)
        try:
            stored, _ = await deps.ledger.transition(
                session.session_id, exc.current, f"{note}; out of order, state kept", **fields
            )
        except (InvalidTransition, UnknownSession):  # changed meanwhile: the other change stands
            return session, None
        return stored, None
    return stored, previous if previous is not stored.state else None


async def emit_notification(
    deps: SessionsDeps,
    session: Session,
    previous: SessionState | None,
    notification: ChargingNotification,
    reply: CommandReply,
    correlation_id: str | None,
) -> None:
    """session.notification, plus the event of the state change it caused."""
    body = notification.to_oicp()
    if previous is not None and session.state in STATE_EVENTS:
        await emit(
            deps, STATE_EVENTS[session.state], session, previous, notification=body, correlation_id=correlation_id
        )
    await emit(
        deps,
        EventType.SESSION_NOTIFICATION,
        session,
        previous,
        code=reply.code,
        info=reply.info,
        notification=body,
        correlation_id=correlation_id,
    )


SETTLE_EVENTS = {
    S.STARTED: EventType.SESSION_STARTED,
    S.RESERVED: EventType.SESSION_RESERVED,
    S.REFUSED: EventType.SESSION_REFUSED,
    S.ERROR: EventType.SESSION_FAILED,
}


async def settle(
    deps: SessionsDeps,
    session: Session,
    to: SessionState,
    reply: CommandReply,
    note: str,
    correlation_id: str | None,
    extra: dict[str, str] | None = None,
) -> Session:
    """Record the outcome of the one request (it answers any repeat of the command) and publish it.
    Applies only while the session is still ``requested``."""
    details = {**session.details, "outcome": reply.model_dump(mode="json")}
    try:
        stored, previous = await deps.ledger.transition(
            session.session_id, to, note, only_from={S.REQUESTED}, details=details, **(extra or {})
        )
    except InvalidTransition as exc:
        # A notification got here first (e.g. Start before the answer): keep its state, keep the outcome.
        logger.info("session %s: outcome %s not applied: %s", session.session_id, to.value, exc)
        stored, _ = await deps.ledger.transition(session.session_id, exc.current, note, details=details)
        return stored
    await emit(
        deps, SETTLE_EVENTS[to], stored, previous, code=reply.code, info=reply.info, correlation_id=correlation_id
    )
    return stored


async def stopped(
    deps: SessionsDeps,
    session: Session,
    reservation: bool,
    note: str,
    correlation_id: str | None,
    info: str | None = None,
) -> None:
    """A stop the CPO accepted: the session is over and waits for its CDR (also a reservation's:
    DIGEST §9.8, "After a ReservationStop the CPO MUST send a CDR")."""
    try:
        stored, previous = await deps.ledger.transition(session.session_id, S.ENDED, note)
    except InvalidTransition as exc:  # ended or has its CDR already
        logger.info("session %s: %s", session.session_id, exc)
        return
    if previous is S.ENDED:
        return
    event = EventType.SESSION_RESERVATION_ENDED if reservation else EventType.SESSION_STOPPED
    await emit(deps, event, stored, previous, info=info or note, correlation_id=correlation_id)
