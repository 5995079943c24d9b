"""A set of delivery lanes that follows the peer registry.

A lane is one asyncio task that pushes one kind of data to one peer. A ``LaneSet`` keeps exactly the
lanes the registry currently calls for: it starts them, re-syncs them every poll interval, and wakes
them when another replica announces a change on the delivery store's Redis wake-up channel.
Subclasses say only what differs: which lanes are wanted, how a lane is built, which lanes a wake-up
message concerns, what a removed lane leaves to do, and the poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

import redis.asyncio as aioredis

from shared.settings import PeerConfig
from shared.stores.delivery import DeliveryStore

logger = logging.getLogger(__name__)


class Lane(Protocol):
    """What a ``LaneSet`` needs of a lane."""

    peer: PeerConfig
    wake: asyncio.Event

    def start(self) -> None: ...

    async def stop(self) -> None: ...


class LeasedLane(ABC):
    """A lane's task and its lease: started by its LaneSet, stopped (lease released, so another
    replica can take over at once) when the peer goes away or the service stops."""

    def __init__(self, peer: PeerConfig, store: DeliveryStore, operation: str, owner: str, task_name: str) -> None:
        self.peer = peer
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._lease = (store, operation, owner)
        self._task_name = task_name

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=self._task_name)

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        store, operation, owner = self._lease
        with contextlib.suppress(Exception):
            await store.release_lease(self.peer.key, operation, owner)

    @abstractmethod
    async def _run(self) -> None:
        """The lane's loop: wait to be woken (or for its next attempt), send under the lease."""


K = TypeVar("K", bound=Hashable)
L = TypeVar("L", bound=Lane)


class LaneSet(ABC, Generic[K, L]):
    """Keeps one lane per wanted key, following the registry; wakes them on the store's channel."""

    def __init__(self, store: DeliveryStore, redis: aioredis.Redis, name: str, log: logging.Logger = logger) -> None:
        self.store = store
        self.redis = redis
        self.lanes: dict[K, L] = {}
        self._name = name  # prefix of the task names
        self._log = log
        self._tasks: list[asyncio.Task[None]] = []

    # ---- what subclasses provide ----------------------------------------------------------------

    @property
    @abstractmethod
    def poll_interval(self) -> float:
        """Seconds between two re-syncs with the registry (and before reconnecting the channel)."""

    @abstractmethod
    async def wanted_lanes(self) -> dict[K, PeerConfig]:
        """Lane key → the peer it sends to, for every lane the registry calls for now."""

    @abstractmethod
    def new_lane(self, key: K, peer: PeerConfig) -> L:
        """A lane for ``key`` (not started yet)."""

    @abstractmethod
    def on_wake_message(self, data: bytes) -> None:
        """Wake the lanes a message on the wake-up channel concerns."""

    @abstractmethod
    async def lane_removed(self, key: K, lane: L) -> None:
        """The peer of a stopped lane is no longer wanted (disabled or removed)."""

    # ---- the scaffolding -------------------------------------------------------------------------

    def wake(self) -> None:
        for lane in self.lanes.values():
            lane.wake.set()

    async def start(self) -> None:
        await self._sync_lanes()
        self._tasks = [
            asyncio.create_task(self._supervise(), name=f"{self._name}-supervisor"),
            asyncio.create_task(self._listen(), name=f"{self._name}-wake-listener"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(lane.stop() for lane in self.lanes.values()))
        self.lanes.clear()

    async def _listen(self) -> None:
        """Wake-ups from other replicas: the one that queued a change may not hold the lease."""
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.store.wake_channel)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self.on_wake_message(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log.warning("wake-up channel lost; lanes poll until it is back", exc_info=True)
                await asyncio.sleep(self.poll_interval)

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self._sync_lanes()
            except Exception:
                self._log.exception("could not refresh the peer list")

    async def _sync_lanes(self) -> None:
        wanted = await self.wanted_lanes()
        for key in list(self.lanes):
            lane = self.lanes[key]
            if key not in wanted or wanted[key] != lane.peer:
                await lane.stop()
                del self.lanes[key]
                if key not in wanted:
                    await self.lane_removed(key, lane)
        for key, peer in wanted.items():
            if key not in self.lanes:
                self.lanes[key] = lane = self.new_lane(key, peer)
                lane.start()
