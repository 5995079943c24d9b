"""Request/reply over RabbitMQ with a deadline (ARCHITECTURE §4: synchronous OICP answers).

FastStream's own ``broker.request`` takes a lock for the whole round trip and starts a consumer per
call, so only one request can be in flight per process. This client keeps one consumer on RabbitMQ's
direct reply-to pseudo-queue and matches replies by correlation id, so requests run concurrently.

The request is published with publisher confirms and ``mandatory`` (no queue → error), and carries
its deadline in the header ``x-deadline`` (the worker skips a message whose caller has given up). So a
request the caller reported as failed is almost never applied later; the remaining window (a worker
that started just before the deadline) is documented in the README. A request to an internal system
also carries it as the AMQP ``expiration`` (RabbitMQ drops it unconsumed: the system's queue is its
own). A command to the node's own workers does not: their queues dead-letter what expires, and a
request its caller gave up on (the partner was answered with an error) is no failure for the
dead-letter queue and its alert — the worker skips it when it comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection
from aiormq.exceptions import PublishError

from shared.bus.client import BusUnavailable
from shared.bus.envelope import Envelope
from shared.bus.messages import CommandReply, CommandType, Payload
from shared.bus.topology import Topology

logger = logging.getLogger(__name__)

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
DEADLINE_HEADER = "x-deadline"
#: How long a reply that missed its deadline is still recognised (and handed to on_late_reply).
LATE_REPLY_WINDOW_SECONDS = 3600.0


class NoResponder(BusUnavailable):
    """No queue is bound for the request: no internal system takes it (use the fallback)."""


class RequestTimeout(BusUnavailable):
    """No reply within the deadline: the outcome is unknown, the caller must not report success."""


def deadline_passed(headers: dict[str, Any] | None) -> bool:
    """True if the requester of this message has given up waiting (worker side)."""
    value = (headers or {}).get(DEADLINE_HEADER)
    try:
        return value is not None and float(value) < time.time()
    except (TypeError, ValueError):
        return False


class RpcClient:
    def __init__(self, url: str, topology: Topology, node: str, connection_name: str) -> None:
        self._url = url
        self._topology = topology
        self._node = node
        self._connection_name = connection_name
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        self._late: dict[str, float] = {}  # request id → when its deadline passed
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        self._lock = asyncio.Lock()
        #: Called with (request id, reply) for a reply that arrived after its deadline.
        self.on_late_reply: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self._url, client_properties={"connection_name": self._connection_name}, reconnect_interval=1.0
        )
        # After a reconnect the broker has forgotten the direct reply-to consumer (publishing then
        # fails with "fast reply consumer does not exist"): open a fresh channel and consume again.
        self._connection.reconnect_callbacks.add(lambda *_: self._invalidate())
        await self._prepare(self._topology.commands.name)

    def _invalidate(self) -> None:
        self._exchanges = {}

    async def _prepare(self, exchange_name: str) -> aio_pika.abc.AbstractExchange:
        exchange = self._exchanges.get(exchange_name)
        if exchange is not None and self._channel is not None and not self._channel.is_closed:
            return exchange  # the usual case: no lock round per request
        async with self._lock:
            ready = self._exchanges and self._channel is not None and not self._channel.is_closed
            if not ready:
                assert self._connection is not None
                if self._channel is not None:
                    with contextlib.suppress(Exception):
                        await self._channel.close()
                channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
                # Consuming the pseudo-queue (no_ack, same channel as the publishes) is what enables
                # direct reply-to.
                reply_queue = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)
                await reply_queue.consume(self._on_reply, no_ack=True)
                self._channel = channel  # type: ignore[assignment]
                self._exchanges = {}
            if exchange_name not in self._exchanges:
                assert self._channel is not None
                self._exchanges[exchange_name] = await self._channel.get_exchange(exchange_name, ensure=False)
            return self._exchanges[exchange_name]

    async def close(self) -> None:
        for future in self._waiting.values():
            future.cancel()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        request_id = message.correlation_id or ""
        future = self._waiting.get(request_id)
        if future is not None and not future.done():
            future.set_result(message.body)
        elif self._late.pop(request_id, None) is not None and self.on_late_reply is not None:
            # The answer came after the deadline: the caller has answered its partner already, but
            # the fact itself (a charge point did start) must not be lost.
            try:
                await self.on_late_reply(request_id, orjson.loads(message.body))
            except Exception:
                logger.exception("late reply %s could not be handled", request_id)
        self._forget_old_late()

    def _forget_old_late(self) -> None:
        cutoff = time.monotonic() - LATE_REPLY_WINDOW_SECONDS
        for request_id in [r for r, at in self._late.items() if at < cutoff]:
            del self._late[request_id]

    async def request(
        self,
        command: CommandType,
        payload: Payload,
        timeout: float,  # noqa: ASYNC109 - the deadline is also sent with the message
        correlation_id: str | None = None,
    ) -> CommandReply:
        """Send a command to its worker and wait for the reply; BusUnavailable/RequestTimeout otherwise."""
        envelope: Envelope[Any] = Envelope(type=command.value, node=self._node, data=payload)
        raw = await self.ask(
            self._topology.commands.name,
            command.value,
            envelope.to_bus(),
            timeout,
            message_id=str(envelope.event_id),
            correlation_id=correlation_id,
        )
        return CommandReply.model_validate(raw)

    async def ask(
        self,
        exchange_name: str,
        routing_key: str,
        body: dict[str, Any] | bytes,
        timeout: float,  # noqa: ASYNC109 - the deadline is also sent with the message
        *,
        request_id: str | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
    ) -> dict[str, Any]:
        """Publish ``body`` (a JSON object, or its encoded bytes) with reply_to and wait for the JSON
        reply until the deadline.

        NoResponder if no queue is bound for the routing key (no internal system listens), RequestTimeout
        if nobody answered in time (a later reply goes to ``on_late_reply``), BusUnavailable otherwise."""
        if self._connection is None:
            raise BusUnavailable("request/reply client not started")
        request_id = request_id or str(uuid.uuid4())
        deadline = time.time() + timeout
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        message = aio_pika.Message(
            body if isinstance(body, bytes) else orjson.dumps(body),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=request_id,
            message_id=message_id or request_id,
            reply_to=DIRECT_REPLY_TO,
            expiration=None if exchange_name == self._topology.commands.name else max(0.001, timeout),
            headers={DEADLINE_HEADER: f"{deadline:.3f}", "x-correlation-id": correlation_id or request_id},
        )
        try:
            try:
                exchange = await asyncio.wait_for(self._prepare(exchange_name), timeout=timeout)
                await asyncio.wait_for(exchange.publish(message, routing_key=routing_key, mandatory=True), timeout)
            except TimeoutError as exc:
                raise BusUnavailable(f"broker did not confirm {routing_key} within {timeout}s") from exc
            except PublishError as exc:
                # returned unroutable: the channel stays usable
                raise NoResponder(f"nobody listens for {routing_key} on {exchange_name}") from exc
            except Exception as exc:
                self._invalidate()  # a channel error closes the channel: start afresh next time
                raise BusUnavailable(f"broker refused {routing_key}: {exc}") from exc
            try:
                raw = await asyncio.wait_for(future, timeout=max(0.0, deadline - time.time()))
            except TimeoutError as exc:
                self._late[request_id] = time.monotonic()
                raise RequestTimeout(
                    f"no reply to {routing_key} within {timeout}s: its consumer is down, overloaded or without storage"
                ) from exc
        finally:
            self._waiting.pop(request_id, None)
        return orjson.loads(raw)
