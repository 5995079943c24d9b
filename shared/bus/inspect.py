"""What the node's queues hold, asked of RabbitMQ over AMQP: how full each queue is and who consumes
it (a passive declare), and the dead letters themselves (read, replayed, discarded).

A passive declare answers with the queue's ready-message and consumer counts over AMQP itself, so the
gateway needs neither the management plugin nor its credentials to export queue depths (and an
operations team gets the "queue without consumers" signal ENGINEERING asks to alert on)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, NamedTuple

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from aiormq.exceptions import ChannelNotFoundEntity

from shared.bus.middleware import (
    DELIVERIES_HEADER,
    DELIVERY_COUNT_HEADER,
    ERROR_HEADER,
    ERROR_KIND_HEADER,
    FAILED_AT_HEADER,
    FAILED_SERVICE_HEADER,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
)


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

    async def channel(self, publisher_confirms: bool = False) -> AbstractChannel:
        async with self._lock:
            if self._connection is None or self._connection.is_closed:
                self._connection = await aio_pika.connect_robust(
                    self._url,
                    client_properties={"connection_name": self._connection_name},
                    timeout=self._timeout,
                    reconnect_interval=1.0,
                )
        return await self._connection.channel(publisher_confirms=publisher_confirms)

    async def depths(self, names: list[str]) -> dict[str, QueueDepth]:
        """Depth and consumers of each queue that exists (a missing one is left out); raises when
        RabbitMQ cannot be asked at all."""
        async with asyncio.timeout(self._timeout * 2):
            channel = await self.channel()
            found: dict[str, QueueDepth] = {}
            try:
                for name in names:
                    try:
                        queue = await channel.declare_queue(name, passive=True)
                    except ChannelNotFoundEntity:
                        # the broker closed the channel with the 404: go on with a new one
                        channel = await self.channel()
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


#: headers of a dead letter that describe its death, not the message: dropped when it is replayed
DEATH_HEADERS = (
    ERROR_HEADER,
    ERROR_KIND_HEADER,
    FAILED_SERVICE_HEADER,
    FAILED_AT_HEADER,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    DELIVERY_COUNT_HEADER,
    DELIVERIES_HEADER,
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
)
BODY_TEXT_LIMIT = 4_000
#: a replay or discard looks at most at this many dead letters (oldest first) in one call
SETTLE_SCAN_LIMIT = 10_000
SETTLE_ATTEMPTS = 3
SETTLE_PAUSE_SECONDS = 0.3


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def dead_letter_view(message: AbstractIncomingMessage) -> dict[str, Any]:
    """A dead letter as the internal API shows it. Dead-lettered by a worker's failure policy it carries
    ``x-error*`` headers; dead-lettered by RabbitMQ itself (a message that expired unconsumed, a
    delivery limit reached without a worker's say) the ``x-death`` reason is all there is."""
    headers = dict(message.headers or {})
    deaths = headers.get("x-death") or []
    death = deaths[0] if deaths and isinstance(deaths[0], dict) else {}
    body: Any
    try:
        body = orjson.loads(message.body)
    except orjson.JSONDecodeError:
        body = message.body[:BODY_TEXT_LIMIT].decode(errors="replace")
    return {
        "message_id": message.message_id,
        "correlation_id": message.correlation_id,
        "exchange": _text(headers.get(ORIGINAL_EXCHANGE_HEADER) or death.get("exchange") or ""),
        "routing_key": _text(headers.get(ORIGINAL_ROUTING_KEY_HEADER) or message.routing_key or ""),
        "kind": _text(headers.get(ERROR_KIND_HEADER) or death.get("reason") or "unknown"),
        "error": _text(headers[ERROR_HEADER]) if ERROR_HEADER in headers else None,
        "service": _text(headers[FAILED_SERVICE_HEADER]) if FAILED_SERVICE_HEADER in headers else None,
        "failed_at": _text(headers[FAILED_AT_HEADER]) if FAILED_AT_HEADER in headers else None,
        # a worker's count; for RabbitMQ's own dead-lettering, the number of deaths
        "deliveries": int(headers.get(DELIVERIES_HEADER) or death.get("count") or 1),
        "replayable": replayable(message),
        "body": body,
    }


def replayable(message: AbstractIncomingMessage) -> bool:
    """Fire-and-forget commands only: a request (``reply_to``) was answered with an error when its
    deadline passed, its sender has been told to send again, and a replay would be skipped anyway."""
    headers = message.headers or {}
    return not message.reply_to and bool(headers.get(ORIGINAL_EXCHANGE_HEADER) or headers.get("x-death"))


class DeadLetterQueue:
    """The node's dead-letter queue, read without removing anything (messages fetched unacknowledged,
    returned when the channel closes), and replayed or discarded message by message.

    Two reads at the same moment each see only what the other is not holding; a read is short (one
    channel, at most ``limit`` messages), so this matters only to a script polling in a tight loop.
    """

    def __init__(self, inspector: QueueInspector, queue_name: str) -> None:
        self._inspector = inspector
        self._queue_name = queue_name

    async def read(self, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """How many dead letters there are, and the first ``limit`` of them (oldest first)."""
        channel = await self._inspector.channel()
        try:
            queue = await channel.declare_queue(self._queue_name, passive=True)
            total = queue.declaration_result.message_count or 0
            views = []
            for _ in range(limit):
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                views.append(dead_letter_view(message))
            return total, views
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def settle(self, message_ids: set[str] | None, replay: bool) -> dict[str, list[str]]:
        """Replay (to the exchange and routing key it failed from, without its death headers) or
        discard the dead letters with these ids (all of them: ``None``), among the oldest
        ``SETTLE_SCAN_LIMIT``. A replay is published with a broker confirm before the dead letter is
        acknowledged: a failure in between leaves it in both places, never in none, and the worker
        applies a command once per event id."""
        done: list[str] = []
        kept: list[str] = []
        for attempt in range(SETTLE_ATTEMPTS):
            await self._settle_pass(message_ids, replay, done, kept)
            if message_ids is None or message_ids <= {*done, *kept}:
                break
            # Some are not there (yet): a read that just held them returns them as its channel
            # closes, which RabbitMQ processes a moment later.
            await asyncio.sleep(SETTLE_PAUSE_SECONDS * (attempt + 1))
        return {"replayed" if replay else "discarded": done, "not_replayable": kept}

    async def _settle_pass(self, message_ids: set[str] | None, replay: bool, done: list[str], kept: list[str]) -> None:
        channel = await self._inspector.channel(publisher_confirms=True)
        try:
            queue = await channel.declare_queue(self._queue_name, passive=True)
            for _ in range(SETTLE_SCAN_LIMIT):
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                message_id = str(message.message_id)
                wanted = message_ids is None or (message_id in message_ids and message_id not in kept)
                if not wanted:
                    continue  # returned to the queue when the channel closes
                if replay and not replayable(message):
                    kept.append(message_id)
                    continue
                if replay:
                    await self._replay(channel, message)
                await message.ack()
                done.append(message_id)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    @staticmethod
    async def _replay(channel: AbstractChannel, message: AbstractIncomingMessage) -> None:
        headers = dict(message.headers or {})
        deaths = headers.get("x-death") or [{}]
        exchange_name = _text(headers.get(ORIGINAL_EXCHANGE_HEADER) or deaths[0].get("exchange") or "")
        routing_key = _text(headers.get(ORIGINAL_ROUTING_KEY_HEADER) or message.routing_key or "")
        for name in DEATH_HEADERS:
            headers.pop(name, None)
        exchange = await channel.get_exchange(exchange_name, ensure=False)
        await exchange.publish(
            aio_pika.Message(
                message.body,
                headers=headers,
                content_type=message.content_type,
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                app_id=message.app_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
            mandatory=True,
        )
