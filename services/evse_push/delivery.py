"""Delivery lanes: the fan-out of the node's own EVSE data, status and pricing to every EMP peer that
takes pushes (ARCHITECTURE §5).

* one lane (an asyncio task) per (peer, operation): a slow or dead peer never delays another;
* strictly sequential per (peer, operation): a lane sends one request at a time and waits for the
  answer, and a Redis lease makes one replica the sender of a (peer, operation) when several
  ``evse_push`` replicas run;
* latest wins: the outbox coalesces per record key and the lane reads the record's current state
  when it sends, in batches of at most the peer's ``batch_size`` records (or its profile's ``batch_limits``);
* ActionTypes from what the peer holds (the ``known`` set): ``insert`` for a record it does not
  hold, ``update`` for one it does, ``delete`` for one it holds that is gone;
* a ``fullLoad`` resync when the peer is new, was failing longer than ``resync_after_seconds``,
  was disabled, or refused a push with ``009`` (it lost data): the first request of an operator is a
  ``fullLoad`` and further chunks of ``batch_size`` records are ``insert``s;
* exponential backoff with jitter, honouring HTTP 429 / ``Retry-After``; a per-peer rate limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import orjson
import redis.asyncio as aioredis
from prometheus_client import Histogram

from services.evse_push.sources import Item, PushSource
from shared.bus.client import Bus, BusUnavailable
from shared.bus.messages import EventType, PeerDelivery
from shared.metrics import (
    EVSE_STATUS_PROPAGATION,
    PEER_DELIVERY_DURATION,
    PEER_DELIVERY_REQUESTS,
)
from shared.oicp import Acknowledgement, AssembledBody, OICPModel, StatusCodeValue
from shared.peers.backoff import backoff_delay
from shared.peers.client import RATE_LIMITED, PeerCallError, PeerClient
from shared.peers.lanes import LaneSet, LeasedLane
from shared.peers.registry import PeerRegistry
from shared.settings import NodeSettings, PeerConfig, PushOperation, Role
from shared.stores.delivery import DeliveryStore

logger = logging.getLogger(__name__)


class LaneFailed(Exception):
    """A request of the lane failed; the lane backs off (already recorded)."""


class RateLimiter:
    """At most ``rate`` requests per second: a minimum interval between two requests."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if self.interval:
            delay = self._next - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._next = max(time.monotonic(), self._next) + self.interval


class RoundSlot:
    """One lane's place among the rounds running at once (see :class:`RoundSlots`)."""

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore = semaphore
        self.holding = False

    @contextlib.asynccontextmanager
    async def released(self) -> AsyncIterator[None]:
        """Give the place up while waiting for a peer's answer: a slow peer holds no place."""
        self.holding = False
        self._semaphore.release()
        try:
            yield
        finally:
            await self._semaphore.acquire()  # cancelled here: not holding, nothing to give back
            self.holding = True


class RoundSlots:
    """At most ``n`` lanes of this process in a round at once, not counting the wait for a peer.

    A round is CPU work on the one event loop (outbox reads, the request body, the bookkeeping after
    it). With every lane woken by every change, 100 lanes' rounds crowded out the command consumer:
    commands queued in RabbitMQ and the latency grew without bound (bench status_fanout, 100 peers:
    p99 21.8 s). With a few places the commands come first and a lane that waits for its place finds
    more records in its outbox: fewer, larger requests, and a latency that stays bounded.
    """

    def __init__(self, n: int) -> None:
        self._semaphore = asyncio.Semaphore(n)

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[RoundSlot]:
        slot = RoundSlot(self._semaphore)
        await self._semaphore.acquire()
        slot.holding = True
        try:
            yield slot
        finally:
            if slot.holding:
                self._semaphore.release()


class PushLane(LeasedLane):
    """Sends one operation's pending records to one peer, one request at a time."""

    def __init__(self, manager: DeliveryManager, peer: PeerConfig, source: PushSource) -> None:
        super().__init__(
            peer, manager.store, source.operation, manager.owner, task_name=f"lane:{peer.id}:{source.operation}"
        )
        self.manager = manager
        self.source = source
        self.operation = source.operation
        self.limiter = RateLimiter(peer.max_requests_per_second)
        self._next_attempt = 0.0
        self._lease_renewed = 0.0
        self._propagation: Histogram | None = None
        self._slot: RoundSlot | None = None

    async def _run(self) -> None:
        settings = self.manager.settings
        self.wake.set()  # look at once: there may be a backlog or a resync from before
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=settings.poll_interval_seconds)
            self.wake.clear()
            try:
                await self._drain()
            except asyncio.CancelledError:
                raise
            except LaneFailed:
                pass
            except Exception:
                # Redis unreachable and the like: log, keep the lane alive, try again next round.
                logger.exception("delivery lane %s/%s failed; retrying", self.peer.id, self.operation)

    async def _drain(self) -> None:
        settings = self.manager.settings
        if settings.linger_seconds:
            # Let a burst of changes gather: one request with many records costs the peer and us far
            # less than many requests with one each (at most this much latency is added).
            await asyncio.sleep(settings.linger_seconds)
        wait = self._next_attempt - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        async with self.manager.round_slots.held() as self._slot:
            try:
                await self._round()
            finally:
                self._slot = None

    async def _round(self) -> None:
        store, settings = self.manager.store, self.manager.settings
        # Taken or renewed only when a third of its period has passed (as before every request): a
        # lease renewed that recently is still ours, since only its holder renews or releases it. One
        # Redis round trip less per round, which counts at ~100 lanes woken by every change.
        if not await self._renew_lease_if_old():
            return  # another replica is this lane's sender now
        # Read once per round: while this replica holds the lease only this lane changes the state.
        reason = await store.resync_reason(self.peer.key, self.operation, settings.resync_after_seconds)
        if reason is not None:
            await self._resync(reason)
        while True:
            # (the backlog gauge is node-wide: the gateway reads it from the store when scraped)
            batch = await store.take_batch(self.peer.key, self.operation, self.peer.batch_size_for(self.operation))
            if not batch:
                return
            await self._deliver(batch)
            if len(batch) < self.peer.batch_size_for(self.operation):
                return  # that was all; the next change wakes the lane

    async def _hold_lease(self) -> bool:
        """Take or renew the lane's lease, long enough for one request to finish within it."""
        ttl = self.manager.settings.lease_seconds + self.peer.timeout_seconds
        held = await self.manager.store.acquire_lease(self.peer.key, self.operation, self.manager.owner, ttl)
        self._lease_renewed = time.monotonic() if held else 0.0
        return held

    async def _renew_lease_if_old(self) -> bool:
        if time.monotonic() - self._lease_renewed < self.manager.settings.lease_seconds / 3:
            return True
        return await self._hold_lease()

    # ---- normal delivery: the pending changes -------------------------------------------------

    async def _deliver(self, batch: dict[bytes, bytes]) -> None:
        store, source = self.manager.store, self.source
        keys = [k.decode() for k in batch]
        current = source.from_outbox(batch) or await source.current(keys)
        if source.documents:
            for key in keys:
                item = current[key]
                if item.record is not None:
                    await self._send("fullLoad", item.operator_id, None, [item])
                await store.after_sent(self.peer.key, self.operation, [], [], {key.encode(): batch[key.encode()]})
            return
        held = dict(zip(keys, await store.known(self.peer.key, self.operation, keys), strict=True))
        live = [current[k] for k in keys if current[k].record is not None]
        removed = [k for k in keys if current[k].record is None and held[k]]
        if removed and not source.sends_deletes:
            await store.request_resync(self.peer.key, self.operation, f"{len(removed)} records deleted")
            return
        groups: dict[tuple[str, str], list[Item]] = {}
        for item in live:
            groups.setdefault(("update" if held[item.key] else "insert", item.operator_id), []).append(item)
        if removed:
            for item in (await source.gone(removed)).values():
                groups.setdefault(("delete", item.operator_id), []).append(item)
        sent: set[str] = set()
        for (action, operator_id), items in groups.items():
            await self._send(action, operator_id, items[0].operator_name, items)
            sent_keys = [i.key for i in items]
            sent.update(sent_keys)
            # Keys that needed nothing (deleted before the peer ever held them) leave the outbox too.
            done = [k for k in keys if k not in sent and current[k].record is None and not held[k]]
            await store.after_sent(
                self.peer.key,
                self.operation,
                held=[] if action == "delete" else sent_keys,
                gone=sent_keys if action == "delete" else [],
                sent={k.encode(): batch[k.encode()] for k in (*sent_keys, *done)},
            )
            self._observe_propagation([current[k] for k in sent_keys if k in current])
        if not groups:
            await store.ack_sent(self.peer.key, self.operation, batch)

    def _observe_propagation(self, items: list[Item]) -> None:
        if self.operation is not PushOperation.PUSH_EVSE_STATUS:
            return
        now = time.time()
        histogram = self._propagation or EVSE_STATUS_PROPAGATION.labels(self.peer.id)
        self._propagation = histogram  # (the labelled child, looked up once per lane)
        for item in items:
            if item.changed_at is not None:  # (read from the outbox once, in from_outbox)
                histogram.observe(max(0.0, now - item.changed_at))

    # ---- resync: a fullLoad of everything meant for the peer ------------------------------------

    async def _resync(self, reason: str) -> None:
        store, source, size = self.manager.store, self.source, self.peer.batch_size_for(self.operation)
        logger.info("resyncing %s/%s with a fullLoad: %s", self.peer.id, self.operation, reason)
        # The outbox snapshot comes first: a change queued after it stays queued and is sent after
        # the resync (at worst once more than needed, never lost).
        snapshot = await store.pending_snapshot(self.peer.key, self.operation)
        sent: list[str] = []
        for operator_id in self.manager.node.operator_ids:
            keys = [k for k in await source.keys_of_operator(operator_id, self.peer) if source.relevant(self.peer, k)]
            if source.documents:
                for key in keys:
                    item = (await source.current([key]))[key]
                    if item.record is not None:
                        await self._send("fullLoad", item.operator_id, None, [item])
                continue
            if not keys and not source.empty_full_load:
                continue
            names = [None]
            for start in range(0, max(1, len(keys)), size):
                chunk = keys[start : start + size]
                current = await source.current(chunk)
                items = [current[k] for k in chunk if current[k].record is not None]
                names = [items[0].operator_name] if items else names
                await self._send("fullLoad" if start == 0 else "insert", operator_id, names[0], items)
                sent += [i.key for i in items]
        if not source.documents:
            await store.replace_known(self.peer.key, self.operation, sent)
        await store.ack_sent(self.peer.key, self.operation, snapshot)
        await store.record_success(self.peer.key, self.operation)
        await store.record_resync(self.peer.key, self.operation)

    # ---- one request --------------------------------------------------------------------------

    async def _send(self, action: str, operator_id: str, operator_name: str | None, items: list[Item]) -> None:
        """Send one request; raise LaneFailed (after recording the failure) if it did not succeed."""
        manager = self.manager
        request: OICPModel | AssembledBody = self.source.request(action, operator_id, operator_name, items)
        await self.limiter.wait()
        # Renewed before every request: a resync of many chunks outlives one lease period, and a
        # replica that lost its lease (it stalled) must not send alongside the new holder.
        if not await self._renew_lease_if_old():
            raise LaneFailed("lease lost to another replica")
        started = time.perf_counter()
        retry_after = None
        conflict = False
        try:
            async with self._slot.released() if self._slot else contextlib.nullcontext():
                answer = await manager.client.call(self.peer, self.source.path(operator_id), request, Acknowledgement)
            error = None
            if not answer.result:
                code, status = answer.status_code.code, answer.status_code
                error = f"refused: {code.value} {status.additional_info or status.description or ''}"
                conflict = code is StatusCodeValue.DATA_TRANSACTION_ERROR
            outcome = "success" if answer.result else "refused"
        except PeerCallError as exc:
            if exc.kind == RATE_LIMITED:
                # Our own cap for this peer, not its failure: wait for the slot, no backoff, no event,
                # and no step towards a resync (the records stay queued, coalesced).
                self._next_attempt = time.time() + (exc.retry_after or 1.0)
                PEER_DELIVERY_REQUESTS.labels(self.peer.id, self.operation, RATE_LIMITED).inc()
                raise LaneFailed(str(exc)) from exc
            error, outcome, retry_after = str(exc), exc.kind, exc.retry_after
        PEER_DELIVERY_DURATION.labels(self.peer.id, self.operation).observe(time.perf_counter() - started)
        PEER_DELIVERY_REQUESTS.labels(self.peer.id, self.operation, outcome).inc()
        if error is None:
            self._next_attempt = 0.0
            return
        await self._failed(error, len(items), retry_after, conflict)
        raise LaneFailed(error)

    async def _failed(self, error: str, records: int, retry_after: float | None, conflict: bool) -> None:
        manager, store = self.manager, self.manager.store
        state = await store.state(self.peer.id, self.peer.key, self.operation)
        delay = backoff_delay(state.consecutive_failures + 1, manager.settings, retry_after)
        self._next_attempt = time.time() + delay
        failures, _ = await store.record_failure(self.peer.key, self.operation, error, self._next_attempt)
        if conflict:
            # The peer does not hold what we think it holds (it lost or changed data): resync.
            await store.request_resync(self.peer.key, self.operation, f"peer answered 009: {error}")
        logger.warning(
            "push %s to %s failed (%s), attempt %d, next in %.1fs", self.operation, self.peer.id, error, failures, delay
        )
        with contextlib.suppress(BusUnavailable):
            await manager.bus.emit_event(
                EventType.PEER_DELIVERY_FAILED,
                PeerDelivery(
                    peer_id=self.peer.id, operation=self.operation, records=records, error=error, attempt=failures
                ),
            )


class DeliveryManager(LaneSet[tuple[str, PushOperation], PushLane]):
    """Keeps one lane per (enabled EMP peer, operation it takes by push), following the registry."""

    def __init__(
        self,
        node: NodeSettings,
        store: DeliveryStore,
        registry: PeerRegistry,
        client: PeerClient,
        bus: Bus,
        sources: dict[PushOperation, PushSource],
        redis: aioredis.Redis,
    ) -> None:
        super().__init__(store, redis, "delivery", logger)
        self.node = node
        self.settings = node.delivery
        self.registry = registry
        self.client = client
        self.bus = bus
        self.sources = sources
        self.owner = f"{uuid.uuid4()}"
        self.round_slots = RoundSlots(self.settings.concurrent_rounds)

    async def push_peers(self, operation: PushOperation) -> list[PeerConfig]:
        return [p for p in await self.registry.enabled(Role.EMP) if operation in p.push]

    async def pending_keys(self, operation: PushOperation, record_keys: list[str]) -> dict[str, list[str]]:
        """Outbox key → the record keys to queue there, for every peer that takes this operation."""
        source = self.sources[operation]
        queued: dict[str, list[str]] = {}
        for peer in await self.push_peers(operation):
            keys = [k for k in record_keys if source.relevant(peer, k)]
            if keys:
                queued[self.store.pending_key(peer.key, operation)] = keys
        return queued

    async def enqueue(self, operation: PushOperation, record_keys: list[str], changed_at: datetime) -> None:
        """Queue changed records for every peer that takes them, then wake the lanes (all replicas)."""
        stamp = orjson.dumps({"t": changed_at.isoformat(), "n": uuid.uuid4().hex[:8]})
        for pending_key, keys in (await self.pending_keys(operation, record_keys)).items():
            await self.store.enqueue([pending_key], keys, stamp)
        self.wake(operation)
        await self.store.notify(operation)

    def wake(self, operation: PushOperation | None = None) -> None:
        for (_, op), lane in self.lanes.items():
            if operation is None or op == operation:
                lane.wake.set()

    # ---- the LaneSet hooks --------------------------------------------------------------------

    @property
    def poll_interval(self) -> float:
        return self.settings.poll_interval_seconds

    async def wanted_lanes(self) -> dict[tuple[str, PushOperation], PeerConfig]:
        wanted: dict[tuple[str, PushOperation], PeerConfig] = {}
        for peer in await self.registry.enabled(Role.EMP):
            for operation in peer.push:
                wanted[(peer.key, PushOperation(operation))] = peer
        return wanted

    def new_lane(self, key: tuple[str, PushOperation], peer: PeerConfig) -> PushLane:
        return PushLane(self, peer, self.sources[key[1]])

    def on_wake_message(self, data: bytes) -> None:
        with contextlib.suppress(ValueError):
            self.wake(PushOperation(data.decode()))

    async def lane_removed(self, key: tuple[str, PushOperation], lane: PushLane) -> None:
        # Disabled or removed: changes are no longer queued for it, so whenever it comes back it
        # must be resynced.
        await self.store.request_resync(lane.peer.key, lane.operation, "peer was disabled or removed")
