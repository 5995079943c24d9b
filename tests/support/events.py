"""An internal system's view of a node's events: its own queue bound to the events exchange."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import aio_pika
import orjson

from tests.support.nodes import AMQP_URL, RUN_ID


class EventTap:
    """An internal system's own queue bound to a node's events exchange.

    ``durable``: a durable quorum queue on a robust connection, as a real subscriber has: it keeps the
    events through a RabbitMQ restart (an exclusive queue dies with its connection). Deleted on exit.
    """

    def __init__(self, exchange: str, routing_key: str, durable: bool = False) -> None:
        self.exchange, self.routing_key, self.durable = exchange, routing_key, durable
        self.events: list[dict[str, Any]] = []

    async def __aenter__(self) -> EventTap:
        self.queue_name: str | None = None
        if self.durable:
            self.connection = await aio_pika.connect_robust(AMQP_URL, reconnect_interval=1.0)
            channel = await self.connection.channel()
            self.queue_name = f"{RUN_ID}.tap.{uuid.uuid4().hex[:8]}"
            queue = await channel.declare_queue(self.queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        else:
            self.connection = await aio_pika.connect(AMQP_URL)
            channel = await self.connection.channel()
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        exchange = await channel.get_exchange(self.exchange)
        await queue.bind(exchange, self.routing_key)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                self.events.append(orjson.loads(message.body))

        await queue.consume(on_message)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.queue_name is not None:
            with contextlib.suppress(Exception):
                channel = await self.connection.channel()
                await channel.queue_delete(self.queue_name)
        await self.connection.close()

    def about(self, evse_id: str) -> list[dict[str, Any]]:
        found = []
        for event in self.events:
            data = event["data"]
            records = data.get("records") or [{"EvseID": data.get("evse_id"), "EvseStatus": data.get("status")}]
            if any(r.get("EvseID") == evse_id for r in records):
                found.append(event)
        return found
