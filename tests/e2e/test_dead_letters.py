"""Commands the workers give up on (issue #9): each ends in the dead-letter queue with its error,
visible in the internal API, replayable once its cause is fixed, and the flow behind it continues.
And a Redis outage does not use up a command's deliveries: it is held and applied when Redis is back.

A real CPO node of two operators, its RabbitMQ delivery limit lowered to 2. Its Redis is reached
through a TCP proxy the outage test cuts. The always-failing handler is real: the test corrupts the
Redis key that holds one operator's EVSE statuses (a string where a hash belongs), so every delivery of
a status command for that operator fails with WRONGTYPE while the other operator's commands go on.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.oicp.ids import normalize_id
from shared.stores.redis import KeySpace
from tests.support.metrics import scrape
from tests.support.nodes import AMQP_URL, REDIS_URL, RUN_ID, NodeProcesses, NodeSpec, cleanup, wait_until
from tests.support.proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

GOOD_OPERATOR, BROKEN_OPERATOR = "DE*GEF", "DE*GBR"
DELIVERY_LIMIT = 2
STATUS_SET = "cpo.evse.status.set"
RETRIES = "oicp_handler_outage_retries_total"


@dataclass
class Node:
    spec: NodeSpec
    http: aiohttp.ClientSession
    redis: aioredis.Redis
    proxy: TcpProxy

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.spec.internal_token}"}

    async def get(self, path: str, expect: int = 200) -> Any:
        async with self.http.get(self.spec.internal_url + path, headers=self.headers) as response:
            assert response.status == expect, (path, response.status, await response.text())
            return await response.json()

    async def post(self, path: str, body: Any, expect: int = 200) -> Any:
        async with self.http.post(self.spec.internal_url + path, json=body, headers=self.headers) as response:
            assert response.status == expect, (path, response.status, await response.text())
            return await response.json()

    async def set_status(self, evse_id: str, status: str) -> None:
        await self.post(f"/commands/{STATUS_SET}", {"records": [{"EvseID": evse_id, "EvseStatus": status}]}, 202)

    async def status(self, evse_id: str) -> str | None:
        async with self.http.get(f"{self.spec.internal_url}/evses/{evse_id}/status", headers=self.headers) as r:
            return (await r.json())["EvseStatus"] if r.status == 200 else None

    async def dead_letters(self) -> list[dict[str, Any]]:
        return list((await self.get("/dead-letters?limit=100"))["messages"])

    async def metric(self, name: str, **labels: str) -> float:
        """A counter of the evse_push worker (0 before it is first counted)."""
        found = await scrape(self.http, self.spec.metrics_url("evse_push"), self.spec.monitoring_token)
        return found.value(name, **labels) or 0.0

    def status_key(self, operator_id: str) -> str:
        # where the evse_push worker keeps an operator's own EVSE statuses (shared/stores/evse_status.py)
        return KeySpace(f"{RUN_ID}:{self.spec.name}:").key("own", "evse-status", normalize_id(operator_id))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def node(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Node]:
    proxy = TcpProxy(6379)
    await proxy.start()
    spec = NodeSpec("deadletters", operator_ids=[GOOD_OPERATOR, BROKEN_OPERATOR])
    spec.extra = {
        "rabbitmq": {"url": AMQP_URL, "prefix": spec.prefix, "delivery_limit": DELIVERY_LIMIT},
        "redis": {"url": f"redis://127.0.0.1:{proxy.port}/0", "key_prefix": f"{RUN_ID}:{spec.name}:"},
    }
    processes = NodeProcesses([spec], tmp_path_factory.mktemp("deadletters"))
    client = aioredis.from_url(REDIS_URL)
    try:
        await processes.start()
        async with aiohttp.ClientSession() as http:
            yield Node(spec, http, client, proxy)
    finally:
        processes.stop()
        await proxy.cut()
        await client.aclose()
        await cleanup([spec])


def evse(operator_id: str) -> str:
    return f"{operator_id}*E{uuid.uuid4().hex[:8].upper()}"


async def test_a_command_whose_handler_always_fails_is_dead_lettered_with_its_error_and_replayed(node: Node) -> None:
    good, broken = evse(GOOD_OPERATOR), evse(BROKEN_OPERATOR)
    await node.set_status(good, "Available")
    await wait_until(lambda: node.status(good), what="a status of the good operator stored")
    assert await node.get("/dead-letters") == {"total": 0, "messages": []}

    key = node.status_key(BROKEN_OPERATOR)
    await node.redis.set(key, "not a hash")  # every write of this operator's statuses fails: WRONGTYPE
    try:
        await node.set_status(broken, "Occupied")
        await wait_until(node.dead_letters, timeout=30, what="the failing command in the dead-letter queue")
        # the flow behind it continues
        await node.set_status(good, "Occupied")
        await wait_until(lambda: _is(node, good, "Occupied"), what="the next command applied")
    finally:
        await node.redis.delete(key)

    [dead] = await node.dead_letters()
    assert dead["kind"] == "failed" and dead["routing_key"] == STATUS_SET, dead
    assert dead["service"] == "evse_push" and "WRONGTYPE" in dead["error"], dead
    # every delivery the queue allows was used (a bug might go away on another replica), none more
    assert dead["deliveries"] == DELIVERY_LIMIT + 1, dead
    assert dead["replayable"] is True and dead["failed_at"], dead
    assert dead["body"]["data"]["records"] == [{"EvseID": broken, "EvseStatus": "Occupied"}], dead
    assert await node.status(broken) is None
    assert await node.metric("oicp_dead_lettered_total", command=STATUS_SET, kind="failed") == 1

    # its cause fixed (the key deleted above), the operator replays it: applied, and gone from the queue
    outcome = await node.post("/dead-letters/replay", {"message_ids": [dead["message_id"]]})
    assert outcome == {"replayed": [dead["message_id"]], "not_replayable": []}
    await wait_until(lambda: _is(node, broken, "Occupied"), what="the replayed command applied")
    assert await node.get("/dead-letters") == {"total": 0, "messages": []}


async def test_a_malformed_command_is_listed_with_the_field_named_and_can_be_discarded(node: Node) -> None:
    marker = uuid.uuid4().hex
    body = {"type": STATUS_SET, "node": "csms", "data": {"records": [{"EvseID": evse(GOOD_OPERATOR)}]}}
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(node.spec.topology.commands.name)
        message = aio_pika.Message(orjson.dumps(body), content_type="application/json", message_id=marker)
        await exchange.publish(message, routing_key=STATUS_SET, mandatory=True)

    async def listed() -> list[dict[str, Any]]:
        return [m for m in await node.dead_letters() if m["message_id"] == marker]

    await wait_until(listed, what="the malformed command listed")
    [dead] = await listed()
    assert dead["kind"] == "rejected" and dead["deliveries"] == 1, dead  # no redelivery loop
    assert "EvseStatus" in dead["error"] and dead["body"] == body, dead

    for bad in ({}, {"message_ids": []}, {"message_ids": [1]}, {"all": True, "message_ids": ["x"]}, [marker]):
        await node.post("/dead-letters/discard", bad, expect=400)
    assert await node.post("/dead-letters/discard", {"message_ids": [marker]}) == {
        "discarded": [marker],
        "not_replayable": [],
    }
    assert await listed() == []
    async with node.http.get(node.spec.internal_url + "/dead-letters") as response:
        assert response.status == 401  # the internal token, as every other route


async def test_a_command_accepted_during_a_redis_outage_is_applied_when_redis_is_back(node: Node) -> None:
    """Before the failure policy, a fire-and-forget command whose handler hit the outage was requeued
    at once, used up its deliveries within milliseconds and was dead-lettered: accepted, then lost.
    Now it is held and run again in place until Redis returns."""
    before = await node.metric(RETRIES, command=STATUS_SET)
    evse_id = evse(GOOD_OPERATOR)
    await node.proxy.cut()
    try:
        await node.set_status(evse_id, "Reserved")  # the gateway publishes it: RabbitMQ is up
        retried = await wait_until(
            lambda: _retries_above(node, before), timeout=30, what="the handler retrying in place"
        )
        assert retried
        await node.set_status(evse_id, "Occupied")  # a later change, also accepted during the outage
    finally:
        await node.proxy.restore()
    await wait_until(lambda: _is(node, evse_id, "Occupied"), timeout=60, what="the commands applied after the outage")
    assert await node.dead_letters() == [], "nothing accepted was dead-lettered because of the outage"


async def _is(node: Node, evse_id: str, status: str) -> bool:
    return await node.status(evse_id) == status


async def _retries_above(node: Node, before: float) -> bool:
    return await node.metric(RETRIES, command=STATUS_SET) > before


async def test_a_fire_and_forget_command_sent_with_reply_to_is_applied_once_and_not_redelivered(node: Node) -> None:
    """An internal system may set reply_to on any command (amq.rabbitmq.reply-to). A command whose
    handler answers nothing must not make the worker publish an empty reply: RabbitMQ 3.10 returns it
    (NO_ROUTE), which failed the delivery and redelivered the command until its delivery limit."""
    evse_id = evse(GOOD_OPERATOR)
    body = {"type": STATUS_SET, "node": "csms", "data": {"records": [{"EvseID": evse_id, "EvseStatus": "Reserved"}]}}
    marker = uuid.uuid4().hex
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        replies = await channel.get_queue("amq.rabbitmq.reply-to", ensure=False)
        got: list[bytes] = []

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            got.append(message.body)

        await replies.consume(on_reply, no_ack=True)
        exchange = await channel.get_exchange(node.spec.topology.commands.name)
        message = aio_pika.Message(
            orjson.dumps(body), content_type="application/json", message_id=marker, reply_to="amq.rabbitmq.reply-to"
        )
        received_before, _ = await _status_set_deliveries(node)
        await exchange.publish(message, routing_key=STATUS_SET, mandatory=True)
        await wait_until(lambda: _is(node, evse_id, "Reserved"), what="the command applied")

        async def settled() -> bool:
            # every delivery of the status.set queue handled (none in flight), this one among them
            received, processed = await _status_set_deliveries(node)
            return received > received_before and processed == received

        await wait_until(settled, what="the delivery handled")
        # With the empty reply, the reply reached `got` before the delivery failed, and the command
        # was delivered again (delivery_limit times, then dead-lettered by RabbitMQ).
        received, _ = await _status_set_deliveries(node)
    assert got == [] and received == received_before + 1 and await node.dead_letters() == []


async def _status_set_deliveries(node: Node) -> tuple[float, float]:
    """Deliveries of the status.set queue to the evse_push worker so far: received, and handled
    (whatever the outcome) - FastStream's per-handler counters."""
    found = await scrape(node.http, node.spec.metrics_url("evse_push"), node.spec.monitoring_token)
    ours = [s for s in found.samples if s.labels.get("handler", "").endswith(f".{STATUS_SET}")]
    received = sum(s.value for s in ours if s.name == "faststream_received_messages_total")
    processed = sum(s.value for s in ours if s.name == "faststream_received_processed_messages_total")
    return received, processed
