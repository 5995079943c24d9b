"""An internal system's view of a node's events: its own queue bound to the events exchange."""

from __future__ import annotations

from typing import Any

import aio_pika
import orjson

from tests.support.nodes import AMQP_URL


class EventTap:
    """An internal system's own queue bound to a node's events exchange."""

    def __init__(self, exchange: str, routing_key: str) -> None:
        self.exchange, self.routing_key = exchange, routing_key
        self.events: list[dict[str, Any]] = []

    async def __aenter__(self) -> EventTap:
        self.connection = await aio_pika.connect(AMQP_URL)
        channel = await self.connection.channel()
        exchange = await channel.get_exchange(self.exchange)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, self.routing_key)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                self.events.append(orjson.loads(message.body))

        await queue.consume(on_message)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    def about(self, evse_id: str) -> list[dict[str, Any]]:
        found = []
        for event in self.events:
            data = event["data"]
            records = data.get("records") or [{"EvseID": data.get("evse_id"), "EvseStatus": data.get("status")}]
            if any(r.get("EvseID") == evse_id for r in records):
                found.append(event)
        return found
