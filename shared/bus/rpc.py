"""Request/reply over RabbitMQ with a deadline (ARCHITECTURE §4: synchronous OICP answers).

FastStream's own ``broker.request`` takes a lock for the whole round trip and starts a consumer per
call, so only one request can be in flight per process. This client keeps one consumer on RabbitMQ's
direct reply-to pseudo-queue and matches replies by correlation id, so requests run concurrently.

The request is published with publisher confirms and ``mandatory`` (no queue → error), and carries
its deadline twice: as the AMQP ``expiration`` (RabbitMQ drops it unconsumed after the deadline) and
as the header ``x-deadline`` (the worker skips a message whose caller has given up). So a request the
caller reported as failed is almost never applied later; the remaining window (a worker that started
just before the deadline) is documented in the README.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection

from shared.bus.client import BusUnavailable
from shared.bus.envelope import Envelope
from shared.bus.messages import CommandReply, CommandType, Payload
from shared.bus.topology import Topology

logger = logging.getLogger(__name__)

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
DEADLINE_HEADER = "x-deadline"


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
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self._url, client_properties={"connection_name": self._connection_name}, reconnect_interval=1.0
        )
        # After a reconnect the broker has forgotten the direct reply-to consumer (publishing then
        # fails with "fast reply consumer does not exist"): open a fresh channel and consume again.
        self._connection.reconnect_callbacks.add(lambda *_: self._invalidate())
        await self._prepare()

    def _invalidate(self) -> None:
        self._exchange = None

    async def _prepare(self) -> aio_pika.abc.AbstractExchange:
        async with self._lock:
            if self._exchange is not None and self._channel is not None and not self._channel.is_closed:
                return self._exchange
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
            self._exchange = await channel.get_exchange(self._topology.commands.name, ensure=False)
            return self._exchange

    async def close(self) -> None:
        for future in self._waiting.values():
            future.cancel()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._waiting.get(message.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(message.body)

    async def request(
        self,
        command: CommandType,
        payload: Payload,
        timeout: float,  # noqa: ASYNC109 - the deadline is also sent with the message
        correlation_id: str | None = None,
    ) -> CommandReply:
        """Send a command and wait for its worker's reply; BusUnavailable/RequestTimeout otherwise."""
        if self._connection is None:
            raise BusUnavailable("request/reply client not started")
        envelope: Envelope[Any] = Envelope(type=command.value, node=self._node, data=payload)
        body = orjson.dumps(envelope.model_dump(mode="json", by_alias=True))
        request_id = str(uuid.uuid4())
        deadline = time.time() + timeout
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=request_id,
            message_id=str(envelope.event_id),
            reply_to=DIRECT_REPLY_TO,
            expiration=max(0.001, timeout),
            headers={DEADLINE_HEADER: f"{deadline:.3f}", "x-correlation-id": correlation_id or request_id},
        )
        try:
            try:
                exchange = await asyncio.wait_for(self._prepare(), timeout=timeout)
                await asyncio.wait_for(
                    exchange.publish(message, routing_key=command.value, mandatory=True), timeout=timeout
                )
            except TimeoutError as exc:
                raise BusUnavailable(f"broker did not confirm {command.value} within {timeout}s") from exc
            except Exception as exc:
                self._invalidate()  # a channel error closes the channel: start afresh next time
                raise BusUnavailable(f"broker refused {command.value}: {exc}") from exc
            try:
                raw = await asyncio.wait_for(future, timeout=max(0.0, deadline - time.time()))
            except TimeoutError as exc:
                raise RequestTimeout(f"no reply to {command.value} within {timeout}s") from exc
        finally:
            self._waiting.pop(request_id, None)
        return CommandReply.model_validate(orjson.loads(raw))
