"""Internal systems played by the tests on a node's bus: the charge point backend (CPO role) and the
EMP's authorization decider. Each binds its own queue to the node's ``oicp.requests`` exchange, the
way a real internal system does, and answers by request/reply (``reply_to``, ``correlation_id``).

A policy decides the answer per request: a dict is sent at once; ``HOLD`` keeps the request until
the test calls ``release`` (the timeout case: the answer comes after the node gave up); ``SILENT``
never answers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import orjson

from tests.support.nodes import AMQP_URL, NodeSpec

HOLD = "hold"
SILENT = "silent"

Policy = Callable[[str, dict[str, Any]], "dict[str, Any] | str"]


@dataclass
class HeldRequest:
    routing_key: str
    body: dict[str, Any]
    reply_to: str
    correlation_id: str


@dataclass
class BusResponder:
    node: NodeSpec
    routing_keys: list[str]
    policy: Policy
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    held: list[HeldRequest] = field(default_factory=list)
    _connection: aio_pika.abc.AbstractRobustConnection | None = None
    _channel: aio_pika.abc.AbstractChannel | None = None

    async def __aenter__(self) -> BusResponder:
        self._connection = await aio_pika.connect_robust(AMQP_URL)
        self._channel = await self._connection.channel()
        exchange = await self._channel.get_exchange(self.node.topology.requests.name, ensure=True)
        queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        for key in self.routing_keys:
            await queue.bind(exchange, routing_key=key)
        await queue.consume(self._on_request)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    async def _on_request(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            body = orjson.loads(message.body)
            key = message.routing_key or ""
            self.requests.append((key, body))
            answer = self.policy(key, body)
            request = HeldRequest(key, body, message.reply_to or "", message.correlation_id or "")
            if answer == HOLD:
                self.held.append(request)
            elif isinstance(answer, dict):
                await self._reply(request, answer)

    async def _reply(self, request: HeldRequest, answer: dict[str, Any]) -> None:
        assert self._channel is not None
        await self._channel.default_exchange.publish(
            aio_pika.Message(
                orjson.dumps(answer), correlation_id=request.correlation_id, content_type="application/json"
            ),
            routing_key=request.reply_to,
        )

    async def release(self, answer: dict[str, Any]) -> int:
        """Answer every held request with ``answer`` (after the node's deadline: a late reply)."""
        held, self.held = self.held, []
        for request in held:
            await self._reply(request, answer)
        return len(held)


def always(answer: dict[str, Any] | str) -> Policy:
    return lambda key, body: answer
