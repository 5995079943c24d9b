"""EMP role: charge detail records from CPO peers, exactly one per SessionID (DIGEST §9.9).

``accept`` is the one way into the inbox, for pushed CDRs (``emp.cdr.ingest``, from the gateway) and
fetched ones (GetChargeDetailRecords, ``services.cdr.fetch``) alike:

* the CDR's EvseID must be of the calling CPO (``018``; a ``default_route`` hub relays others');
* a session of this EMP that another CPO owns is ``400`` "Session is invalid";
* the same CDR again is acknowledged again (``000``) without a second record or event;
* a different CDR for a SessionID that has one is ``400`` with the reason (DIGEST §6.2: "only one CDR
  per SessionID"; the first one stays);
* a CDR of a session the ledger does not know is accepted - the session may have been authorized
  offline with data this EMP pushed - and flagged (``cdr.session.unknown``, ``GET /cdrs/unknown-sessions``);
* a stored CDR is published as ``cdr.received`` (for billing) and closes the session in the ledger
  (``cdr_received``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from services.cdr.app import CdrDeps
from shared.bus.envelope import Envelope
from shared.bus.messages import CdrEvent, CdrIngest, CommandReply, EventType
from shared.metrics import CDRS_RECEIVED
from shared.oicp import Acknowledgement, ChargeDetailRecord, StatusCodeValue
from shared.oicp.ids import evse_belongs_to, normalize_id
from shared.settings import PeerConfig, Role
from shared.stores.cdr_inbox import Stored
from shared.stores.sessions import InvalidTransition, SessionState

logger = logging.getLogger(__name__)

C = StatusCodeValue


def _refused(code: StatusCodeValue, info: str, session_id: str) -> CommandReply:
    answer = Acknowledgement.error(code, info, session_id=session_id).to_oicp()
    return CommandReply(ok=False, code=code, info=info, session_id=session_id, answer=answer)


def _accepted(cdr: ChargeDetailRecord, duplicate_of: str | None = None) -> CommandReply:
    """000; ``changed`` is 1 for a new record, 0 for a repeat (received before at ``duplicate_of``)."""
    answer = Acknowledgement.ok(
        cdr.session_id,
        cpo_partner_session_id=cdr.cpo_partner_session_id,
        emp_partner_session_id=cdr.emp_partner_session_id,
    ).to_oicp()
    info = f"CDR already received at {duplicate_of}" if duplicate_of else None
    return CommandReply(ok=True, info=info, session_id=cdr.session_id, changed=0 if duplicate_of else 1, answer=answer)


async def accept(
    deps: CdrDeps,
    peer: PeerConfig,
    cdr: ChargeDetailRecord,
    source: str,
    received_at: datetime,
    correlation_id: str | None = None,
) -> CommandReply:
    """Put one CDR of ``peer`` into the inbox; the reply is what the peer is answered."""
    outcome, reply = await _accept(deps, peer, cdr, source, received_at, correlation_id)
    CDRS_RECEIVED.labels(peer.id, outcome).inc()
    return reply


async def _accept(
    deps: CdrDeps,
    peer: PeerConfig,
    cdr: ChargeDetailRecord,
    source: str,
    received_at: datetime,
    correlation_id: str | None,
) -> tuple[str, CommandReply]:
    """(what became of the CDR: stored | duplicate | conflict | refused, the reply)"""
    sid = cdr.session_id
    if not peer.default_route and not evse_belongs_to(cdr.evse_id, peer.id):
        return "refused", _refused(C.INCONSISTENT_EVSE_ID, f"EvseID {cdr.evse_id} is not of operator {peer.id}", sid)
    session = await deps.ledger.get(sid)
    if session is not None and session.role == "emp" and session.peer_id and not peer.default_route:
        if normalize_id(session.peer_id) != peer.key:
            return "refused", _refused(
                C.SESSION_IS_INVALID, f"session {sid} is not a session of operator {peer.id}", sid
            )
    body = cdr.to_oicp()
    outcome, kept = await deps.inbox.store(
        body,
        peer_id=peer.id,
        peer_key=peer.key,
        received_at=received_at,
        source=source,
        session_known=session is not None,
    )
    if outcome is Stored.CONFLICT:
        return "conflict", _refused(
            C.SESSION_IS_INVALID,
            f"a different CDR for session {sid} was received at {kept.received_at}; only one CDR per SessionID",
            sid,
        )
    if outcome is Stored.DUPLICATE and not await deps.inbox.unannounced(sid):
        return "duplicate", _accepted(cdr, duplicate_of=kept.received_at)

    if session is not None and outcome is Stored.STORED:
        try:
            await deps.ledger.transition(sid, SessionState.CDR_RECEIVED, f"CDR from {peer.id} ({source})")
        except InvalidTransition as exc:  # e.g. a node with both roles that sent this CDR itself
            logger.info("CDR of session %s stored; ledger not moved: %s", sid, exc)
    # Published after storing; if the broker fails here the command fails (no positive answer), and
    # its repeat finds the CDR stored but unannounced and publishes then: at least once, never lost.
    event = CdrEvent(
        session_id=sid,
        peer_id=kept.peer_id,
        provider_id=session.provider_id if session else None,
        cdr=kept.cdr,
        session_known=kept.session_known,
        source=kept.source,  # type: ignore[arg-type]
        at=datetime.fromisoformat(kept.received_at),
    )
    await deps.bus.emit_event(EventType.CDR_RECEIVED, event, correlation_id=correlation_id or sid)
    if not kept.session_known:
        await deps.bus.emit_event(EventType.CDR_SESSION_UNKNOWN, event, correlation_id=correlation_id or sid)
    await deps.inbox.announced(sid)
    return outcome.value, _accepted(cdr, duplicate_of=kept.received_at if outcome is Stored.DUPLICATE else None)


async def ingest(deps: CdrDeps, envelope: Envelope[CdrIngest], correlation_id: str | None) -> CommandReply:
    """emp.cdr.ingest: a ChargeDetailRecord a CPO peer pushed (the gateway checked its identity)."""
    ingest = envelope.data
    peer = await deps.registry.get(Role.CPO, normalize_id(ingest.peer_id))
    if peer is None:  # removed between the gateway's check and now
        return _refused(C.UNAUTHORIZED_ACCESS, f"{ingest.peer_id} is not a CPO peer", ingest.request.session_id)
    return await accept(deps, peer, ingest.request, "push", ingest.received_at.astimezone(UTC), correlation_id)
