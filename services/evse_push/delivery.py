"""Delivery lanes: EVSE status fan-out to every EMP peer that takes pushes (ARCHITECTURE §5).

* one lane (an asyncio task) per peer, so a slow or dead peer never delays another;
* strictly sequential per (peer, operation): a lane sends one request at a time, and a Redis lease
  makes one replica the sender of a (peer, operation) when several ``evse_push`` replicas run;
* latest status wins: the outbox is a hash per (peer, operation) keyed by EvseID, sent in batches;
* exponential backoff with jitter, honouring HTTP 429 / ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from datetime import datetime

import orjson

from shared.bus.client import Bus, BusUnavailable
from shared.bus.messages import EventType, PeerDelivery
from shared.metrics import (
    EVSE_STATUS_PROPAGATION,
    PEER_DELIVERY_BACKLOG,
    PEER_DELIVERY_DURATION,
    PEER_DELIVERY_REQUESTS,
)
from shared.oicp import Acknowledgement, PushEvseStatusRequest
from shared.oicp.operations import OPERATIONS_BY_NAME
from shared.peers.client import PeerCallError, PeerClient
from shared.peers.registry import PeerRegistry
from shared.settings import DeliverySettings, PeerConfig, PushOperation, Role
from shared.stores.delivery import DeliveryStore
from shared.stores.evse_status import EvseStatusStore

logger = logging.getLogger(__name__)

STATUS_OPERATION = PushOperation.PUSH_EVSE_STATUS


def backoff_delay(failures: int, settings: DeliverySettings, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter between 50 % and 100 %; never shorter than Retry-After."""
    base = min(settings.backoff_max_seconds, settings.backoff_initial_seconds * 2 ** max(0, failures - 1))
    delay = base * random.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.backoff_max_seconds * 10))
    return delay


class StatusLane:
    """Sends the pending status changes of one peer, one request at a time."""

    def __init__(self, manager: DeliveryManager, peer: PeerConfig) -> None:
        self.manager = manager
        self.peer = peer
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._next_attempt = 0.0

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"lane:{self.peer.id}:{STATUS_OPERATION}")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        with contextlib.suppress(Exception):
            await self.manager.store.release_lease(self.peer.key, STATUS_OPERATION, self.manager.owner)

    async def _run(self) -> None:
        settings = self.manager.settings
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=settings.poll_interval_seconds)
            self.wake.clear()
            try:
                await self._drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis unreachable and the like: log, keep the lane alive, try again next round.
                logger.exception("delivery lane %s failed; retrying", self.peer.id)

    async def _drain(self) -> None:
        store, settings, owner = self.manager.store, self.manager.settings, self.manager.owner
        while True:
            wait = self._next_attempt - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not await store.acquire_lease(self.peer.key, STATUS_OPERATION, owner, settings.lease_seconds):
                return  # another replica is this peer's sender now
            batch = await store.take_batch(self.peer.key, STATUS_OPERATION, self.peer.batch_size)
            PEER_DELIVERY_BACKLOG.labels(self.peer.id, STATUS_OPERATION).set(
                await store.backlog(self.peer.key, STATUS_OPERATION)
            )
            if not batch:
                return
            await self._send(batch)

    async def _send(self, batch: dict[bytes, bytes]) -> None:
        """One PushEvseStatus per operator in the batch (the body carries a single OperatorID)."""
        by_operator: dict[str, list[tuple[bytes, bytes, dict[str, str]]]] = {}
        for field, raw in batch.items():
            value = orjson.loads(raw)
            by_operator.setdefault(value["o"], []).append((field, raw, value))
        for operator_id, entries in by_operator.items():
            request = PushEvseStatusRequest.model_validate(
                {
                    "ActionType": "update",
                    "OperatorEvseStatus": {
                        "OperatorID": operator_id,
                        "EvseStatusRecord": [
                            {"EvseID": field.decode(), "EvseStatus": value["s"]} for field, _, value in entries
                        ],
                    },
                }
            )
            if not await self._call(request, len(entries)):
                return
            await self.manager.store.ack_sent(self.peer.key, STATUS_OPERATION, {f: r for f, r, _ in entries})
            now = time.time()
            for _, _, value in entries:
                EVSE_STATUS_PROPAGATION.labels(self.peer.id).observe(
                    max(0.0, now - datetime.fromisoformat(value["t"]).timestamp())
                )

    async def _call(self, request: PushEvseStatusRequest, records: int) -> bool:
        manager, operation = self.manager, OPERATIONS_BY_NAME["PushEvseStatus"]
        path = operation.path.format(operatorID=request.operator_evse_status.operator_id)
        started = time.perf_counter()
        retry_after = None
        try:
            answer = await manager.client.call(self.peer, path, request, Acknowledgement)
            error = (
                None if answer.result else f"refused: {answer.status_code.code} {answer.status_code.description or ''}"
            )
            outcome = "success" if answer.result else "refused"
        except PeerCallError as exc:
            error, outcome, retry_after = str(exc), exc.kind, exc.retry_after
        PEER_DELIVERY_DURATION.labels(self.peer.id, STATUS_OPERATION).observe(time.perf_counter() - started)
        PEER_DELIVERY_REQUESTS.labels(self.peer.id, STATUS_OPERATION, outcome).inc()
        if error is None:
            self._next_attempt = 0.0
            await manager.store.record_success(self.peer.key, STATUS_OPERATION)
            return True
        state = await manager.store.state(self.peer.id, self.peer.key, STATUS_OPERATION)
        delay = backoff_delay(state.consecutive_failures + 1, manager.settings, retry_after)
        self._next_attempt = time.time() + delay
        failures = await manager.store.record_failure(self.peer.key, STATUS_OPERATION, error, self._next_attempt)
        logger.warning("push to %s failed (%s), attempt %d, next in %.1fs", self.peer.id, error, failures, delay)
        with contextlib.suppress(BusUnavailable):
            await manager.bus.emit_event(
                EventType.PEER_DELIVERY_FAILED,
                PeerDelivery(
                    peer_id=self.peer.id, operation=STATUS_OPERATION, records=records, error=error, attempt=failures
                ),
            )
        return False


class DeliveryManager:
    """Keeps one lane per enabled EMP peer that takes status pushes, following the registry."""

    def __init__(
        self,
        settings: DeliverySettings,
        store: DeliveryStore,
        registry: PeerRegistry,
        client: PeerClient,
        bus: Bus,
        own_status: EvseStatusStore,
    ) -> None:
        self.settings = settings
        self.store = store
        self.own_status = own_status
        self.registry = registry
        self.client = client
        self.bus = bus
        self.owner = f"{uuid.uuid4()}"
        self.lanes: dict[str, StatusLane] = {}
        self._supervisor: asyncio.Task[None] | None = None

    async def push_peers(self) -> list[PeerConfig]:
        return [p for p in await self.registry.enabled(Role.EMP) if STATUS_OPERATION in p.push]

    async def start(self) -> None:
        await self._sync_lanes()
        self._supervisor = asyncio.create_task(self._supervise(), name="delivery-supervisor")

    async def stop(self) -> None:
        if self._supervisor:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await asyncio.gather(*(lane.stop() for lane in self.lanes.values()))
        self.lanes.clear()

    def wake(self) -> None:
        for lane in self.lanes.values():
            lane.wake.set()

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_seconds)
            try:
                await self._sync_lanes()
            except Exception:
                logger.exception("could not refresh the peer list")

    async def _sync_lanes(self) -> None:
        peers = {p.key: p for p in await self.push_peers()}
        for key in list(self.lanes):
            lane = self.lanes[key]
            if key not in peers or peers[key] != lane.peer:
                await lane.stop()
                del self.lanes[key]
        for key, peer in peers.items():
            if key not in self.lanes:
                # A peer seen for the first time gets the current status of every EVSE, not only
                # the changes from now on. The lane exists only after this registry read, so every
                # later change is queued for it by the command handler (same registry, same cache).
                if await self.store.seed(peer.key, STATUS_OPERATION, await self.own_status.as_pending()):
                    logger.info("queued the current EVSE statuses for new peer %s", peer.id)
                lane = StatusLane(self, peer)
                self.lanes[key] = lane
                lane.start()
