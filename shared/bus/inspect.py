"""How full the node's queues are and who consumes them, asked of RabbitMQ by a passive declare.

A passive declare answers with the queue's ready-message and consumer counts over AMQP itself, so the
gateway needs neither the management plugin nor its credentials to export queue depths (and an
operations team gets the "queue without consumers" signal ENGINEERING asks to alert on)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import NamedTuple

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aiormq.exceptions import ChannelNotFoundEntity


class QueueDepth(NamedTuple):
    messages: int
    consumers: int


class QueueInspector:
    """Its own small connection (named ``<node>/<service>-monitor`` in RabbitMQ's UI), opened on first
    use, so a scrape never shares a channel with the bus."""

    def __init__(self, url: str, connection_name: str, timeout_seconds: float = 2.0) -> None:
        self._url = url
        self._connection_name = connection_name
        self._timeout = timeout_seconds
        self._connection: AbstractRobustConnection | None = None
        self._lock = asyncio.Lock()

    async def _channel(self) -> AbstractChannel:
        async with self._lock:
            if self._connection is None or self._connection.is_closed:
                self._connection = await aio_pika.connect_robust(
                    self._url,
                    client_properties={"connection_name": self._connection_name},
                    timeout=self._timeout,
                    reconnect_interval=1.0,
                )
        return await self._connection.channel(publisher_confirms=False)

    async def depths(self, names: list[str]) -> dict[str, QueueDepth]:
        """Depth and consumers of each queue that exists (a missing one is left out); raises when
        RabbitMQ cannot be asked at all."""
        async with asyncio.timeout(self._timeout * 2):
            channel = await self._channel()
            found: dict[str, QueueDepth] = {}
            try:
                for name in names:
                    try:
                        queue = await channel.declare_queue(name, passive=True)
                    except ChannelNotFoundEntity:
                        # the broker closed the channel with the 404: go on with a new one
                        channel = await self._channel()
                        continue
                    result = queue.declaration_result
                    found[name] = QueueDepth(result.message_count or 0, result.consumer_count or 0)
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()
            return found

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None
