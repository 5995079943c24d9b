"""A worker's check that RabbitMQ still delivers to it: consumers lost without the client noticing are
subscribed again.

ENGINEERING (known issue): after a RabbitMQ node restart, consumers are not always recreated. The
robust connection comes back, the process looks healthy, and a queue sits without a consumer. So each
worker asks RabbitMQ (a passive declare on a connection of its own) whether each queue it consumes has
any consumer. A queue without one, twice in a row while the worker's own connection is up, cannot be
consumed by this worker: its subscriber is stopped and started again (a new basic.consume). When
that fails too, the process exits, and its supervisor (``shared.node``, compose's ``restart:``)
starts a fresh one — a crash is better than a worker that silently does nothing.

With several replicas of a worker, a queue keeps its count above zero as long as one replica consumes
it, so one replica's lost consumer is not seen here; no work waits meanwhile (the others consume), and
the OicpQueueWithoutConsumers alert covers the case where it would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from faststream.rabbit import RabbitBroker

from shared.bus.inspect import QueueInspector
from shared.metrics import CONSUMERS_RECOVERED

logger = logging.getLogger(__name__)

#: checks in a row that must find a queue without consumers before it is acted on (one may fall in
#: the moment between a reconnection and the consumers' restoration)
MISSED_CHECKS = 2
EXIT_CODE = 75  # EX_TEMPFAIL: restart me


class ConsumerWatchdog:
    def __init__(self, broker: RabbitBroker, url: str, connection_name: str, interval_seconds: float) -> None:
        self._broker = broker
        self._inspector = QueueInspector(url, connection_name)
        self._interval = interval_seconds
        self._missed: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def _subscribers(self) -> dict[str, Any]:
        return {sub.queue.name: sub for sub in self._broker.subscribers if getattr(sub, "calls", None)}

    async def start(self) -> None:
        logger.info("checking every %.0fs that %d queues have consumers", self._interval, len(self._subscribers()))
        self._task = asyncio.create_task(self._run(), name="consumer-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._inspector.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # RabbitMQ unreachable: the robust connections reconnect; look later
                logger.debug("consumer check skipped: %s", exc)

    async def check(self) -> list[str]:
        """One look; returns the queues whose subscribers were started again."""
        subscribers = self._subscribers()
        depths = await self._inspector.depths(list(subscribers))
        recovered = []
        for name, subscriber in subscribers.items():
            depth = depths.get(name)
            if depth is None or depth.consumers > 0 or not self._connected():
                self._missed.pop(name, None)
                continue
            self._missed[name] = self._missed.get(name, 0) + 1
            if self._missed[name] < MISSED_CHECKS:
                continue
            logger.error("queue %s has no consumer although this worker subscribes to it: subscribing again", name)
            try:
                await subscriber.stop()
                await subscriber.start()
            except Exception:
                logger.exception("could not subscribe to %s again: exiting for a restart", name)
                os._exit(EXIT_CODE)
            CONSUMERS_RECOVERED.labels(name).inc()
            self._missed.pop(name, None)
            recovered.append(name)
        return recovered

    def _connected(self) -> bool:
        """The worker's own connection is up (not closed, not in the middle of a reconnection, whose
        end restores the consumers by itself)."""
        connection = getattr(self._broker, "_connection", None)
        return connection is not None and not connection.is_closed and not getattr(connection, "reconnecting", False)
