"""The lane set's scaffolding: lanes follow the wanted peers (started, restarted when the peer changed,
stopped with a resync request when it is gone), and wake-up messages reach the lanes, also after the
wake-up channel was lost and came back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from shared.peers.lanes import LaneSet
from shared.settings import PeerConfig, Role
from tests.support.nodes import wait_until


def peer(provider_id: str, timeout: float = 10.0) -> PeerConfig:
    return PeerConfig(role=Role.EMP, id=provider_id, base_url="http://127.0.0.1:9", timeout_seconds=timeout)


class FakeLane:
    def __init__(self, peer: PeerConfig) -> None:
        self.peer = peer
        self.wake = asyncio.Event()
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True


class FakeStore:
    wake_channel = "wake"


class FakePubSub:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis

    async def __aenter__(self) -> FakePubSub:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def subscribe(self, channel: str) -> None:
        self.redis.subscribed.append(channel)

    async def listen(self) -> AsyncIterator[dict[str, Any]]:
        if len(self.redis.subscribed) == 1:
            raise ConnectionError("channel lost")  # the first connection fails: the set must reconnect
        yield {"type": "subscribe", "data": 1}
        yield {"type": "message", "data": b"a"}
        await asyncio.Event().wait()


class FakeRedis:
    def __init__(self) -> None:
        self.subscribed: list[str] = []

    def pubsub(self) -> FakePubSub:
        return FakePubSub(self)


class Lanes(LaneSet[str, FakeLane]):
    def __init__(self) -> None:
        super().__init__(FakeStore(), FakeRedis(), "test")  # type: ignore[arg-type]
        self.wanted: dict[str, PeerConfig] = {}
        self.removed: list[str] = []

    @property
    def poll_interval(self) -> float:
        return 0.01

    async def wanted_lanes(self) -> dict[str, PeerConfig]:
        return dict(self.wanted)

    def new_lane(self, key: str, peer: PeerConfig) -> FakeLane:
        return FakeLane(peer)

    def on_wake_message(self, data: bytes) -> None:
        if data.decode() in self.lanes:
            self.lanes[data.decode()].wake.set()

    async def lane_removed(self, key: str, lane: FakeLane) -> None:
        self.removed.append(key)


async def test_lanes_follow_the_wanted_peers() -> None:
    lanes = Lanes()
    lanes.wanted = {"a": peer("DE-AAA"), "b": peer("DE-BBB")}
    await lanes._sync_lanes()
    first = dict(lanes.lanes)
    assert set(first) == {"a", "b"} and all(lane.started for lane in first.values())

    # b's configuration changed, a is gone, c is new
    lanes.wanted = {"b": peer("DE-BBB", timeout=5), "c": peer("DE-CCC")}
    await lanes._sync_lanes()
    assert set(lanes.lanes) == {"b", "c"}
    assert first["a"].stopped and first["b"].stopped
    assert lanes.lanes["b"] is not first["b"] and lanes.lanes["b"].peer.timeout_seconds == 5
    assert lanes.removed == ["a"], "only a peer that is gone asks for a resync, not one that changed"

    lanes.wanted = {"b": peer("DE-BBB", timeout=5), "c": peer("DE-CCC")}
    kept = dict(lanes.lanes)
    await lanes._sync_lanes()
    assert lanes.lanes == kept, "unchanged peers keep their running lanes"


async def test_wake_up_messages_reach_the_lanes_after_the_channel_came_back() -> None:
    lanes = Lanes()
    lanes.wanted = {"a": peer("DE-AAA"), "b": peer("DE-BBB")}
    await lanes.start()
    try:
        assert {t.get_name() for t in lanes._tasks} == {"test-supervisor", "test-wake-listener"}
        await asyncio.wait_for(lanes.lanes["a"].wake.wait(), timeout=5)
        assert not lanes.lanes["b"].wake.is_set()
        assert len(lanes.redis.subscribed) >= 2  # type: ignore[attr-defined]

        lanes.wanted = {"b": peer("DE-BBB")}  # the supervisor re-syncs every poll interval
        await wait_until(lambda: "a" not in lanes.lanes, timeout=5, what="the removed peer's lane stopped")
        assert set(lanes.lanes) == {"b"} and lanes.removed == ["a"]

        lanes.wake()
        assert lanes.lanes["b"].wake.is_set()
    finally:
        remaining = list(lanes.lanes.values())
        await lanes.stop()
    assert lanes.lanes == {} and all(lane.stopped for lane in remaining)
    assert all(t.done() for t in lanes._tasks)
