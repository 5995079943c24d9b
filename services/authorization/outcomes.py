"""What every authorization decision leaves behind: the session in the ledger (when authorized), the
``session.authorized`` event, the ``authorization.decided`` event and the worker's reply."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from shared.bus.messages import AuthorizationDecided, CommandReply, EventType, SessionEvent
from shared.metrics import AUTHORIZATIONS
from shared.oicp import AuthorizationStartResponse, AuthorizationStatus, AuthorizationStopResponse, Identification
from shared.oicp.ids import normalize_id
from shared.stores.sessions import Session

if TYPE_CHECKING:
    from services.authorization.app import AuthorizationDeps

Role = Literal["cpo", "emp"]


async def record_authorized(deps: AuthorizationDeps, session: Session, correlation_id: str | None) -> Session:
    """Write the authorized session before the answer goes out (a CDR or stop must find it), then
    publish ``session.authorized`` - at least once: the SessionID is marked unannounced before the
    write and unmarked after the event, so the redelivery of a command whose worker died (or whose
    broker failed) between the two finds its session recorded and publishes the event then. A
    SessionID that exists and was announced (a repeat) keeps its record and publishes nothing; nor
    does a request of another peer that reuses a SessionID."""
    unannounced = deps.keys.key("sessions", "authorized", "unannounced")
    marked = bool(await deps.redis.sadd(unannounced, session.session_id))
    created, stored = await deps.ledger.create(session, note=f"authorized ({session.role})")
    same = stored.role == session.role and normalize_id(stored.peer_id or "") == normalize_id(session.peer_id or "")
    # Not created: unannounced only if the mark was there already, left by an earlier attempt.
    announce = created or (same and not marked)
    if announce:
        await deps.bus.emit_event(
            EventType.SESSION_AUTHORIZED,
            SessionEvent(session=stored.as_dict(), previous_state=None, code="000"),
            correlation_id=correlation_id,
        )
    if announce or marked:
        await deps.redis.srem(unannounced, session.session_id)
    return stored


async def decided(
    deps: AuthorizationDeps,
    *,
    role: Role,
    operation: Literal["AuthorizeStart", "AuthorizeStop"],
    answer: AuthorizationStartResponse | AuthorizationStopResponse,
    decided_by: str,
    correlation_id: str | None,
    peer_id: str | None = None,
    operator_id: str | None = None,
    evse_id: str | None = None,
    identification: Identification | None = None,
) -> CommandReply:
    """Publish ``authorization.decided`` and build the reply whose ``answer`` is the OICP answer."""
    status = answer.status_code
    authorized = answer.authorization_status is AuthorizationStatus.AUTHORIZED
    AUTHORIZATIONS.labels(role, operation, answer.authorization_status.value).inc()
    await deps.bus.emit_event(
        EventType.AUTHORIZATION_DECIDED,
        AuthorizationDecided(
            role=role,
            operation=operation,
            authorization_status=answer.authorization_status.value,
            code=status.code.value,
            info=status.additional_info,
            decided_by=decided_by,
            session_id=answer.session_id,
            peer_id=peer_id,
            operator_id=operator_id,
            provider_id=answer.provider_id,
            evse_id=evse_id,
            identification_kind=identification.kind if identification is not None else None,
            decided_at=datetime.now(UTC),
        ),
        correlation_id=correlation_id,
    )
    return CommandReply(
        ok=authorized,
        code=status.code,
        info=status.additional_info,
        session_id=answer.session_id,
        answer=answer.to_oicp(),
    )
