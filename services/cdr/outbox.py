"""CPO role: the CDR outbox - every CDR of the charge point backend reaches the EMP that owns the
session, at least once (ARCHITECTURE §5: never coalesced, never dropped; the EMP deduplicates by
SessionID).

``submit`` (``cpo.cdr.submit``):

* the EvseID must be of one of the node's operators: ``018`` Inconsistent EvseID otherwise;
* one CDR per SessionID (DIGEST §9.9): the identical CDR again is answered as the first time
  (``ok``, ``changed`` 0) and not queued twice; a *different* CDR for a SessionID that has one is
  ``009`` Data transaction error (HTTP 409 on the internal API) with the reason - the first stays;
* the owning EMP: the ledger's session (role cpo) → its EMP peer (or the peer of its ProviderID);
  else the ProviderID of the CDR's EvcoID (an RFID card may carry none) → that EMP peer; else the
  ``default_route`` EMP peer (a hub); else ``300`` Partner not found, and nothing is stored;
* stored durably with the OICP body exactly as submitted (time zones as sent), then published as
  ``cdr.submitted`` (and ``cdr.session.unknown`` when the ledger did not know the session: a session
  authorized offline, say - the CDR is still delivered), and the peer's lane is woken, so the CDR
  goes out at once when the peer is up.

``replay`` (``cpo.cdr.replay``): parked CDRs (the given SessionIDs, or all of a peer, or all) become
pending again with their attempts reset; ``changed`` says how many.

``CdrDelivery``: one lane per enabled EMP peer. A Redis lease per peer makes one replica the sender;
the lane sends the peer's due CDRs one at a time, earliest due first (new CDRs in submission order):

* ``Result=true`` → delivered ("forwarded" for GetChargeDetailRecords), the session ``cdr_sent``,
  ``cdr.delivered``;
* no answer, HTTP 429/5xx or any other HTTP failure, an unreadable answer, or an OICP refusal with a
  general code that says "not now" (``RETRYABLE_CODES``: 001, 002, 009, 021, 310, 320) → the CDR
  counts an attempt and the whole lane backs off exponentially with jitter (``cdr`` settings,
  Retry-After honoured): the peer is what fails, so the other CDRs wait too rather than hammer it.
  A failed CDR is due again when the lane retries; after ``cdr.max_attempts`` attempts it is parked
  (``cdr.parked`` with the last error);
* any other refusal (``400`` conflicting CDR / session invalid, ``017``, ``018``, ``022`` ...) is the
  EMP's definitive answer about this CDR: parked at once with the EMP's reason (sending it again
  would get the same answer), never silently dropped - ``cpo.cdr.replay`` sends it again once fixed.

A CDR leaves the due queue only with the EMP's acknowledgement: a worker killed mid-delivery leaves
it due, and the next lease holder (a restarted worker or another replica) sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from services.cdr.app import CdrDeps
from shared.bus.client import BusUnavailable
from shared.bus.envelope import Envelope
from shared.bus.messages import CdrEvent, CdrReplay, CdrSubmit, CommandReply, EventType
from shared.metrics import CDRS_PARKED_TOTAL, CDRS_SENT, PEER_DELIVERY_DURATION, PEER_DELIVERY_REQUESTS
from shared.oicp import Acknowledgement, OICPModel, StatusCodeValue
from shared.oicp.ids import provider_id_of_evco
from shared.oicp.operations import OPERATIONS_BY_NAME
from shared.peers.backoff import backoff_delay
from shared.peers.client import RATE_LIMITED, PeerCallError
from shared.peers.lanes import LaneSet, LeasedLane
from shared.peers.routing import DIRECT, pick
from shared.settings import PeerConfig, Role
from shared.stores.cdr_outbox import OPERATION, CdrEntry, OutboxCdr, SubmitOutcome
from shared.stores.sessions import InvalidTransition, Session, SessionState, UnknownSession

logger = logging.getLogger(__name__)

C = StatusCodeValue
PATH = OPERATIONS_BY_NAME[OPERATION].path
#: OICP refusals that say "not now" rather than "not this CDR" (DIGEST §6.2: general errors that can
#: occur on any call, and the partner-availability codes): retried with backoff, parked only after
#: ``cdr.max_attempts``. Every other refusal parks the CDR at once.
RETRYABLE_CODES = frozenset(
    {
        C.HUBJECT_SYSTEM_ERROR,
        C.HUBJECT_DATABASE_ERROR,
        C.DATA_TRANSACTION_ERROR,
        C.SYSTEM_ERROR,
        C.PARTNER_DID_NOT_RESPOND,
        C.SERVICE_NOT_AVAILABLE,
    }
)
DUE_BATCH = 50  # CDRs read per round trip while a lane works through its backlog


def _refused(code: StatusCodeValue, info: str, session_id: str | None) -> CommandReply:
    return CommandReply(ok=False, code=code, info=info, session_id=session_id)


def _accepted(session_id: str, info: str, new: bool) -> CommandReply:
    return CommandReply(ok=True, info=info, session_id=session_id, changed=1 if new else 0)


async def _emit(deps: CdrDeps, event: EventType, payload: CdrEvent, correlation_id: str | None = None) -> None:
    """Publish a CDR event from the lane. The store is the truth (GET /cdrs shows the state): an
    event lost to a broker outage is logged, the delivery itself is not held up or repeated for it."""
    try:
        await deps.bus.emit_event(event, payload, correlation_id=correlation_id or payload.session_id)
    except BusUnavailable as exc:
        logger.error("%s of CDR %s not published: %s", event.value, payload.session_id, exc)


def _event(
    record: OutboxCdr, *, attempts: int | None = None, error: str | None = None, at: datetime | None = None
) -> CdrEvent:
    return CdrEvent(
        session_id=record.session_id,
        peer_id=record.peer_id,
        provider_id=record.provider_id,
        cdr=record.cdr,
        session_known=record.session_known,
        source="replay" if record.source == "replay" else "submit",
        attempts=record.attempts if attempts is None else attempts,
        error=error,
        at=at or datetime.now(UTC),
    )


async def _owner(deps: CdrDeps, cdr: CdrSubmit, session: Session | None) -> tuple[PeerConfig | None, str | None, str]:
    """The EMP peer a CDR goes to, the ProviderID it is for (where known) and how it was found."""
    peers = await deps.registry.enabled(Role.EMP)

    def peer_of(wanted: str | None) -> PeerConfig | None:
        route = pick(peers, Role.EMP, wanted) if wanted else None
        return route.peer if route and route.via == DIRECT else None

    evco_id = cdr.identification.evco_id
    provider: str | None = None
    if evco_id:
        with contextlib.suppress(ValueError):
            provider = provider_id_of_evco(evco_id)
    if session is not None:
        # The session came from this peer (remote start, or AuthorizeStart answered by it).
        for wanted in (session.peer_id, session.provider_id):
            if (peer := peer_of(wanted)) is not None:
                return peer, session.provider_id or provider, "the session's EMP"
    if (peer := peer_of(provider)) is not None:
        return peer, provider, "the EvcoID's provider"
    hub = pick(peers, Role.EMP, "").peer
    if hub is not None:
        return hub, provider, "the default route"
    return None, provider, ""


async def submit(
    deps: CdrDeps, delivery: CdrDelivery, envelope: Envelope[CdrSubmit], correlation_id: str | None
) -> CommandReply:
    """cpo.cdr.submit: store the CDR for its EMP and wake that EMP's lane."""
    cdr = envelope.data
    sid = cdr.session_id
    operator_id = deps.settings.own_operator_of(cdr.evse_id)
    if operator_id is None:
        return _refused(
            C.INCONSISTENT_EVSE_ID,
            f"EvseID {cdr.evse_id} is not of this node's operators {deps.settings.operator_ids}",
            sid,
        )
    body = cdr.to_oicp()
    kept = await deps.outbox.get(sid)
    if kept is None:
        session = await deps.ledger.get(sid)
        if session is not None and session.role != "cpo":
            session = None  # a node with both roles: that is its EMP side's session, not one of this CPO
        peer, provider_id, route = await _owner(deps, cdr, session)
        if peer is None:
            return _refused(
                C.PARTNER_NOT_FOUND,
                f"Partner not found: no EMP peer owns session {sid}, none has the ProviderID "
                f"{provider_id or '(no EvcoID)'}, and there is no default route; the CDR is not stored",
                sid,
            )
        result = await deps.outbox.submit(
            CdrEntry(
                cdr=body,
                peer_id=peer.id,
                operator_id=operator_id,
                provider_id=provider_id,
                session_known=session is not None,
            )
        )
        outcome, info = result.outcome, f"stored; delivered to EMP {peer.id} ({route})"
        kept = await deps.outbox.get(sid)
        assert kept is not None
    else:  # a repeat, or a conflict: the store's own check below decides, as for a race of two submits
        outcome = (await deps.outbox.submit(CdrEntry(cdr=body, peer_id=kept.peer_id, operator_id=operator_id))).outcome
        info = f"CDR already submitted at {kept.submitted_at}; delivered to EMP {kept.peer_id}"
    if outcome is SubmitOutcome.CONFLICT:
        return _refused(
            C.DATA_TRANSACTION_ERROR,
            f"a different CDR for session {sid} was submitted at {kept.submitted_at}; only one CDR per "
            "SessionID (the first one is kept)",
            sid,
        )
    if outcome is SubmitOutcome.DUPLICATE and not await deps.outbox.unannounced(sid):
        return _accepted(sid, info, new=False)
    # Published after storing: if the broker fails here the command fails (no positive answer), and
    # its repeat finds the CDR stored but unannounced and publishes then - at least once, never lost.
    event = _event(kept, at=datetime.fromisoformat(kept.submitted_at))
    await deps.bus.emit_event(EventType.CDR_SUBMITTED, event, correlation_id=correlation_id or sid)
    if not kept.session_known:
        await deps.bus.emit_event(EventType.CDR_SESSION_UNKNOWN, event, correlation_id=correlation_id or sid)
    await deps.outbox.announced(sid)
    await delivery.changed(kept.peer_key)
    return _accepted(sid, info, new=outcome is SubmitOutcome.STORED)


async def replay(
    deps: CdrDeps, delivery: CdrDelivery, envelope: Envelope[CdrReplay], correlation_id: str | None
) -> CommandReply:
    """cpo.cdr.replay: parked CDRs back to their peers' due queues (attempts reset)."""
    request = envelope.data
    replayed = await deps.outbox.replay(request.session_ids, request.peer_id)
    for peer_key in replayed:
        await delivery.changed(peer_key)
    total = sum(replayed.values())
    scope = (
        f"{len(request.session_ids)} SessionIDs asked"
        if request.session_ids is not None
        else f"all parked CDRs of {request.peer_id}"
        if request.peer_id
        else "all parked CDRs"
    )
    logger.info("replay (%s): %d parked CDRs pending again", scope, total)
    return CommandReply(ok=True, changed=total, info=f"{total} parked CDRs pending again ({scope})")


class _Verbatim(OICPModel):
    """The stored OICP body, sent byte for byte as it was submitted (the client sends ``to_oicp()``)."""

    body: dict[str, Any]

    def to_oicp(self) -> dict[str, Any]:
        return self.body


class CdrLane(LeasedLane):
    """Sends one EMP peer's due CDRs, one request at a time, while this replica holds the peer's lease."""

    def __init__(self, delivery: CdrDelivery, peer: PeerConfig) -> None:
        super().__init__(peer, delivery.deps.delivery_store, OPERATION, delivery.owner, task_name=f"cdr-lane:{peer.id}")
        self.delivery = delivery
        self.deps = delivery.deps
        self._next_attempt = 0.0  # epoch seconds: the lane backs off after a failed delivery
        self._next_request = 0.0  # monotonic: the peer's rate limit
        self._lease_renewed = 0.0

    async def _run(self) -> None:
        self.wake.set()  # look at once: CDRs may have waited for this peer (or for a restarted worker)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=self.delivery.poll_interval)
            self.wake.clear()
            try:
                await self._drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis unreachable and the like: keep the lane, try again next round (nothing was
                # taken off the due queue, so nothing is lost).
                logger.exception("CDR lane %s failed; retrying", self.peer.id)

    async def _drain(self) -> None:
        outbox = self.deps.outbox
        wait = self._next_attempt - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        if not await outbox.due(self.peer.key, limit=1):
            return  # nothing due: no lease taken, so an idle lane costs one read per poll
        if not await self._hold_lease():
            return  # another replica is this peer's sender now
        while True:
            batch = await outbox.due(self.peer.key, limit=DUE_BATCH)
            if not batch:
                return
            for record in batch:
                if not await self._renew_lease_if_old():
                    return
                if not await self._deliver(record):
                    return  # the peer failed: the lane backs off before the next CDR

    async def _hold_lease(self) -> bool:
        """Take or renew the peer's lease, long enough for one request to finish within it."""
        settings = self.deps.settings.delivery
        ttl = settings.lease_seconds + self.peer.timeout_seconds
        held = await self.deps.delivery_store.acquire_lease(self.peer.key, OPERATION, self.delivery.owner, ttl)
        self._lease_renewed = time.monotonic() if held else 0.0
        return held

    async def _renew_lease_if_old(self) -> bool:
        if time.monotonic() - self._lease_renewed < self.deps.settings.delivery.lease_seconds / 3:
            return True
        return await self._hold_lease()

    async def _rate_limit(self) -> None:
        rate = self.peer.max_requests_per_second
        if rate:
            delay = self._next_request - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._next_request = max(time.monotonic(), self._next_request) + 1.0 / rate

    async def _deliver(self, record: OutboxCdr) -> bool:
        """Send one CDR. True: the peer answered (delivered, or refused for good: parked); False: it
        failed and the lane backs off."""
        await self._rate_limit()
        started = time.perf_counter()
        retry_after: float | None = None
        retryable = True
        try:
            answer = await self.deps.client.call(
                self.peer, PATH.format(operatorID=record.operator_id), _Verbatim(body=record.cdr), Acknowledgement
            )
        except PeerCallError as exc:
            if exc.kind == RATE_LIMITED:
                # Our own cap for this peer, not its failure: the CDR waits for the slot and no attempt
                # is counted (a CDR is never parked because this node throttled itself).
                self._next_attempt = time.time() + (exc.retry_after or 1.0)
                PEER_DELIVERY_REQUESTS.labels(self.peer.id, OPERATION, RATE_LIMITED).inc()
                return False
            error, outcome, retry_after = str(exc), exc.kind, exc.retry_after
        else:
            status = answer.status_code
            error = (
                None
                if answer.result
                else f"refused: {status.code.value} {status.additional_info or status.description or ''}".strip()
            )
            retryable = status.code in RETRYABLE_CODES
            outcome = "success" if answer.result else "refused"
        PEER_DELIVERY_DURATION.labels(self.peer.id, OPERATION).observe(time.perf_counter() - started)
        PEER_DELIVERY_REQUESTS.labels(self.peer.id, OPERATION, outcome).inc()
        if error is None:
            await self._delivered(record)
            return True
        if not retryable:
            await self._refused(record, error)
            return True
        await self._failed(record, error, retry_after)
        return False

    async def _delivered(self, record: OutboxCdr) -> None:
        deps, sid = self.deps, record.session_id
        if not await deps.outbox.mark_delivered(sid):
            return  # delivered already (another sender before a lease handover): announced then
        await deps.delivery_store.record_success(self.peer.key, OPERATION)
        CDRS_SENT.labels(self.peer.id).inc()
        self._next_attempt = 0.0
        if record.session_known:
            try:
                await deps.ledger.transition(sid, SessionState.CDR_SENT, f"CDR delivered to {self.peer.id}")
            except (UnknownSession, InvalidTransition) as exc:
                logger.info("CDR of session %s delivered; ledger not moved: %s", sid, exc)
        await _emit(deps, EventType.CDR_DELIVERED, _event(record, attempts=record.attempts + 1))

    async def _refused(self, record: OutboxCdr, error: str) -> None:
        """The EMP refused this CDR for good: parked with its reason; the lane goes on (the peer works)."""
        reason = f"{self.peer.id} {error}"
        attempts = await self.deps.outbox.park(record.session_id, reason)
        if attempts is None:
            return
        CDRS_PARKED_TOTAL.labels(self.peer.id).inc()
        logger.warning("CDR %s parked: %s", record.session_id, reason)
        await _emit(self.deps, EventType.CDR_PARKED, _event(record, attempts=attempts, error=reason))

    async def _failed(self, record: OutboxCdr, error: str, retry_after: float | None) -> None:
        deps, settings = self.deps, self.deps.settings.cdr
        store = deps.delivery_store
        state = await store.state(self.peer.id, self.peer.key, OPERATION)
        delay = backoff_delay(state.consecutive_failures + 1, settings, retry_after)
        self._next_attempt = time.time() + delay
        # The CDR is due again when the lane tries again: once the peer is back, nothing of its
        # backlog waits for a backoff of its own.
        attempts, parked = await deps.outbox.record_failure(
            record.session_id,
            error,
            datetime.fromtimestamp(self._next_attempt, UTC),
            park_after=settings.max_attempts,
        )
        failures, _ = await store.record_failure(self.peer.key, OPERATION, error, self._next_attempt)
        logger.warning(
            "CDR %s to %s failed (%s): attempt %d of %d, lane failure %d, next in %.1fs",
            record.session_id,
            self.peer.id,
            error,
            attempts,
            settings.max_attempts,
            failures,
            delay,
        )
        if parked:
            CDRS_PARKED_TOTAL.labels(self.peer.id).inc()
            reason = f"{attempts} deliveries failed; last: {error}"
            await _emit(deps, EventType.CDR_PARKED, _event(record, attempts=attempts, error=reason))
        # Go round again at once: the next round sleeps exactly the backoff, not a poll interval more.
        self.wake.set()


class CdrDelivery(LaneSet[str, CdrLane]):
    """One CDR lane per enabled EMP peer, following the registry; woken on submit and replay."""

    def __init__(self, deps: CdrDeps) -> None:
        super().__init__(deps.delivery_store, deps.redis, "cdr", logger)
        self.deps = deps
        self.owner = f"{deps.settings.name}-cdr-{uuid.uuid4().hex[:8]}"

    async def changed(self, peer_key: str | None = None) -> None:
        """New or replayed CDRs: wake the lane here and, through Redis, those of the other replicas
        (the replica that stored the CDR may not hold the peer's lease)."""
        self._wake_peer(peer_key)
        await self.store.notify(f"{OPERATION}:{peer_key or ''}")

    def _wake_peer(self, peer_key: str | None) -> None:
        if not peer_key:
            self.wake()
        elif (lane := self.lanes.get(peer_key)) is not None:
            lane.wake.set()

    # ---- the LaneSet hooks --------------------------------------------------------------------

    @property
    def poll_interval(self) -> float:
        return self.deps.settings.delivery.poll_interval_seconds

    async def wanted_lanes(self) -> dict[str, PeerConfig]:
        return {p.key: p for p in await self.deps.registry.enabled(Role.EMP)}

    def new_lane(self, key: str, peer: PeerConfig) -> CdrLane:
        return CdrLane(self, peer)

    def on_wake_message(self, data: bytes) -> None:
        operation, _, peer_key = data.decode(errors="replace").partition(":")
        if operation == OPERATION:
            self._wake_peer(peer_key or None)

    async def lane_removed(self, key: str, lane: CdrLane) -> None:
        # A disabled or removed peer's CDRs stay pending in its due queue (never dropped, never
        # sent elsewhere): its lane sends them when the peer is enabled again, or they are visible
        # as pending in GET /cdrs.
        logger.info("CDR lane of %s stopped; %d CDRs wait", lane.peer.id, await self.deps.outbox.count_pending(key))
