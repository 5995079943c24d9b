"""The consumer watchdog's decisions (shared/bus/consumers.py): a queue RabbitMQ shows without any
consumer, twice in a row while the worker's connection is up, is subscribed again; once is not
enough (a reconnection restores consumers by itself), nor while the connection is down; a
subscription that cannot be made again ends the process for its supervisor to restart.

The broker restart itself is proven end to end in test_kill_under_load.py (make soak); a lost
consumer cannot be produced on demand against a healthy RabbitMQ 3.10 (a quorum queue deleted under
its consumer leaves a phantom consumer that RabbitMQ still counts)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from shared.bus import consumers as module
from shared.bus.consumers import MISSED_CHECKS, ConsumerWatchdog
from shared.bus.inspect import QueueDepth


class Subscriber:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.queue = SimpleNamespace(name=name)
        self.calls = ["handler"]
        self.fail = fail
        self.restarts = 0

    async def stop(self) -> None:
        pass

    async def start(self) -> None:
        if self.fail:
            raise RuntimeError("channel closed")
        self.restarts += 1


class Inspector:
    def __init__(self) -> None:
        self.consumers: dict[str, int] = {}

    async def depths(self, names: list[str]) -> dict[str, QueueDepth]:
        return {n: QueueDepth(0, self.consumers[n]) for n in names if n in self.consumers}

    async def close(self) -> None:
        pass


def watchdog(*subscribers: Subscriber, connected: bool = True) -> tuple[ConsumerWatchdog, Inspector]:
    broker: Any = SimpleNamespace(
        subscribers=list(subscribers),
        _connection=SimpleNamespace(is_closed=not connected, reconnecting=False),
    )
    dog = ConsumerWatchdog(broker, "amqp://unused", "test", 1.0)
    inspector = Inspector()
    dog._inspector = inspector  # type: ignore[assignment]
    return dog, inspector


async def test_a_queue_without_consumers_twice_in_a_row_is_subscribed_again() -> None:
    lost, fine = Subscriber("q.lost"), Subscriber("q.fine")
    dog, inspector = watchdog(lost, fine)
    inspector.consumers = {"q.lost": 0, "q.fine": 1}
    results = [await dog.check() for _ in range(MISSED_CHECKS)]
    assert results[:-1] == [[]] * (MISSED_CHECKS - 1) and results[-1] == ["q.lost"]
    assert (lost.restarts, fine.restarts) == (1, 0)
    inspector.consumers["q.lost"] = 1
    assert await dog.check() == [] and lost.restarts == 1


async def test_one_look_without_consumers_is_not_enough() -> None:
    queue = Subscriber("q")
    dog, inspector = watchdog(queue)
    for consumers in (0, 1, 0, 1, 0, 1):  # back in between: a reconnection restored it
        inspector.consumers = {"q": consumers}
        assert await dog.check() == []
    assert queue.restarts == 0


async def test_nothing_is_done_while_the_workers_connection_is_down() -> None:
    queue = Subscriber("q")
    dog, inspector = watchdog(queue, connected=False)
    inspector.consumers = {"q": 0}
    for _ in range(MISSED_CHECKS * 3):
        assert await dog.check() == []
    assert queue.restarts == 0


async def test_a_subscription_that_cannot_be_made_again_exits_for_a_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []

    def fake_exit(code: int) -> None:
        exits.append(code)

    monkeypatch.setattr(module.os, "_exit", fake_exit)
    queue = Subscriber("q", fail=True)
    dog, inspector = watchdog(queue)
    inspector.consumers = {"q": 0}
    for _ in range(MISSED_CHECKS):
        await dog.check()
    assert exits == [module.EXIT_CODE]
