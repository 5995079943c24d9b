"""The first vertical slice, between real nodes (every service a process) on 127.0.0.1 against the
real RabbitMQ and Redis: an internal system sets an EVSE status on the CPO node (internal HTTP API
and, equally, an AMQP command); the CPO's evse_push worker pushes it to every EMP peer — the EMP
node and a plain HTTP sink; the EMP node stores it and publishes evse.status.received; the CPO's
PullEvseStatus variants return it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest
import pytest_asyncio

from tests.conftest import CPO_ID, EMP_CALLS_CPO, EMP_ID, Pair
from tests.oicp_schema import validate_request, validate_response
from tests.support.events import EventTap
from tests.support.nodes import AMQP_URL, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def new_evse_id() -> str:
    return f"DE*GEF*E{uuid.uuid4().hex[:10].upper()}"


async def set_status_over_http(http: aiohttp.ClientSession, pair: Pair, evse_id: str, status: str) -> None:
    async with http.post(
        f"{pair.cpo.internal_url}/commands/cpo.evse.status.set",
        json={"records": [{"EvseID": evse_id, "EvseStatus": status}]},
        headers={"Authorization": f"Bearer {pair.cpo.internal_token}"},
    ) as response:
        assert response.status == 202, await response.text()


async def set_status_over_amqp(pair: Pair, evse_id: str, status: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(pair.cpo.topology.commands.name)
        body = {
            "type": "cpo.evse.status.set",
            "node": "csms",
            "data": {"records": [{"EvseID": evse_id, "EvseStatus": status}]},
        }
        await exchange.publish(
            aio_pika.Message(orjson.dumps(body), content_type="application/json", delivery_mode=2),
            routing_key="cpo.evse.status.set",
            mandatory=True,
        )


async def emp_status(http: aiohttp.ClientSession, pair: Pair, evse_id: str) -> str | None:
    async with http.get(
        f"{pair.emp.internal_url}/evses/{evse_id}/status",
        headers={"Authorization": f"Bearer {pair.emp.internal_token}"},
    ) as response:
        if response.status == 404:
            return None
        assert response.status == 200, await response.text()
        return (await response.json())["EvseStatus"]


def sink_statuses(pair: Pair, evse_id: str) -> list[str]:
    seen = []
    for request in pair.sink.requests:
        for record in request.body["OperatorEvseStatus"]["EvseStatusRecord"]:
            if record["EvseID"] == evse_id:
                seen.append(record["EvseStatus"])
    return seen


async def pull(http: aiohttp.ClientSession, pair: Pair, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(
        f"{pair.cpo.oicp_url}/api/oicp/evsepull/v21/providers/{EMP_ID}/{path}",
        json=body,
        headers={"Authorization": f"Bearer {EMP_CALLS_CPO}"},
    ) as response:
        assert response.status == 200
        return await response.json()


@pytest.mark.parametrize("channel", ["internal-http", "amqp-command"])
async def test_status_change_reaches_every_emp_peer(pair: Pair, http: aiohttp.ClientSession, channel: str) -> None:
    evse_id = new_evse_id()
    async with (
        EventTap(pair.emp.topology.events.name, "evse.status.received") as received,
        EventTap(pair.cpo.topology.events.name, "evse.status.changed") as changed,
    ):
        if channel == "internal-http":
            await set_status_over_http(http, pair, evse_id, "Occupied")
        else:
            await set_status_over_amqp(pair, evse_id, "Occupied")

        # The EMP node stored it ...
        await wait_until(lambda: emp_status(http, pair, evse_id), what="status at the EMP node")
        assert await emp_status(http, pair, evse_id) == "Occupied"
        # ... and told its internal systems.
        await wait_until(lambda: received.about(evse_id), what="evse.status.received at the EMP node")
        event = received.about(evse_id)[0]
        assert set(event) == {"event_id", "type", "occurred_at", "node", "data"}
        assert event["type"] == "evse.status.received" and event["node"] == "emp"
        assert event["data"]["peer_id"] == CPO_ID and event["data"]["operator_id"] == CPO_ID
        # The CPO node published the change as a fact.
        await wait_until(lambda: changed.about(evse_id), what="evse.status.changed at the CPO node")
        assert changed.about(evse_id)[0]["data"]["status"] == "Occupied"

    # The plain HTTP sink got a real PushEvseStatus, with the CPO's credentials, at the OICP path.
    await wait_until(lambda: sink_statuses(pair, evse_id), what="PushEvseStatus at the HTTP sink")
    request = next(r for r in pair.sink.requests if evse_id in str(r.body))
    assert request.path == "/api/oicp/evsepush/v21/operators/DE*GEF/status-records"
    assert request.headers["Authorization"] == "Bearer cpo-calls-sink-token"
    # a status the peer never held goes as insert (later changes as update): strict receivers accept both;
    # on a busy machine the change can come before the lane's first sync, and then travels in that fullLoad
    assert request.body["ActionType"] in ("insert", "fullLoad"), request.body["ActionType"]
    assert request.body["OperatorEvseStatus"]["OperatorID"] == CPO_ID
    validate_request("/evsepush/v21/operators/{operatorID}/status-records", request.body)

    # PullEvseStatus, ById (both the OpenAPI path and the snippet path) and ByOperatorId agree.
    by_id = await pull(http, pair, "status-records", {"ProviderID": EMP_ID, "EvseID": [evse_id, "DE*GEF*E0NOTTHERE"]})
    validate_response("/evsepull/v21/providers/{providerID}/status-records", by_id)
    assert by_id["StatusCode"]["Code"] == "000"
    assert by_id["EVSEStatusRecords"]["EvseStatusRecord"] == [
        {"EvseID": evse_id, "EvseStatus": "Occupied"},
        {"EvseID": "DE*GEF*E0NOTTHERE", "EvseStatus": "EvseNotFound"},
    ]
    snippet = await pull(http, pair, "status-records-by-id", {"ProviderID": EMP_ID, "EvseID": [evse_id]})
    assert snippet["EVSEStatusRecords"]["EvseStatusRecord"] == [{"EvseID": evse_id, "EvseStatus": "Occupied"}]

    for path, body in (
        ("status-records", {"ProviderID": EMP_ID}),
        ("status-records", {"ProviderID": EMP_ID, "OperatorID": [CPO_ID]}),
        ("status-records-by-operator-id", {"ProviderID": EMP_ID, "OperatorID": [CPO_ID]}),
        ("status-records", {"ProviderID": EMP_ID, "EVSEStatus": "Occupied"}),
    ):
        answer = await pull(http, pair, path, body)
        validate_response("/evsepull/v21/providers/{providerID}/status-records", answer)
        operators = answer["EvseStatuses"]["OperatorEvseStatus"]
        records = [r for o in operators if o["OperatorID"] == CPO_ID for r in o["EvseStatusRecord"]]
        assert {"EvseID": evse_id, "EvseStatus": "Occupied"} in records, (path, body)

    filtered = await pull(http, pair, "status-records", {"ProviderID": EMP_ID, "EVSEStatus": "Available"})
    assert evse_id not in str(filtered)


async def test_latest_status_wins_at_every_peer(pair: Pair, http: aiohttp.ClientSession) -> None:
    """A burst of changes ends with the last one everywhere, whatever was coalesced on the way."""
    evse_id = new_evse_id()
    for status in ("Available", "Occupied", "Reserved", "OutOfService", "Available", "Occupied"):
        await set_status_over_http(http, pair, evse_id, status)

    async def settled() -> bool:
        return await emp_status(http, pair, evse_id) == "Occupied" and sink_statuses(pair, evse_id)[-1:] == ["Occupied"]

    await wait_until(settled, what="the last status at both peers")
    by_id = await pull(http, pair, "status-records-by-id", {"ProviderID": EMP_ID, "EvseID": [evse_id]})
    assert by_id["EVSEStatusRecords"]["EvseStatusRecord"][0]["EvseStatus"] == "Occupied"


async def test_delivery_state_is_visible(pair: Pair, http: aiohttp.ClientSession) -> None:
    evse_id = new_evse_id()
    await set_status_over_http(http, pair, evse_id, "Available")
    await wait_until(lambda: sink_statuses(pair, evse_id), what="push to the sink")

    async def lanes() -> list[dict[str, Any]]:
        async with http.get(
            f"{pair.cpo.internal_url}/delivery", headers={"Authorization": f"Bearer {pair.cpo.internal_token}"}
        ) as response:
            return await response.json()

    async def status_lanes() -> list[dict[str, Any]]:
        return [s for s in await lanes() if s["operation"] == "PushEvseStatus"]

    async def all_delivered() -> bool:
        states = await status_lanes()
        return len(states) == 2 and all(s["backlog"] == 0 and s["last_success"] for s in states)

    await wait_until(all_delivered, what="empty backlogs with a last success")
    assert {s["peer_id"] for s in await status_lanes()} == {"DE-GDF", "DE-SNK"}
    # one lane per (peer, operation it takes by push)
    assert {(s["peer_id"], s["operation"]) for s in await lanes()} == {
        ("DE-GDF", "PushEvseStatus"),
        ("DE-GDF", "PushEvseData"),
        ("DE-GDF", "PushPricingProductData"),
        ("DE-GDF", "PushEVSEPricing"),
        ("DE-SNK", "PushEvseStatus"),
    }


async def test_amqp_command_for_a_foreign_evse_is_dead_lettered(pair: Pair, http: aiohttp.ClientSession) -> None:
    """A command the node can never carry out goes to the dead-letter queue with command.rejected,
    and the flow behind it continues."""
    async with EventTap(pair.cpo.topology.events.name, "command.rejected") as rejected:
        await set_status_over_amqp(pair, "DE*XXX*E1", "Available")
        await wait_until(lambda: rejected.events, what="command.rejected")
    assert "DE*XXX*E1" in rejected.events[0]["data"]["reason"]
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        dead = await channel.declare_queue(pair.cpo.topology.dead_letters.name, passive=True)

        async def dead_lettered() -> bool:
            message = await dead.get(fail=False)
            if message is None:
                return False
            await message.ack()
            return b"DE*XXX*E1" in message.body

        await wait_until(dead_lettered, what="the command in the dead-letter queue")
    evse_id = new_evse_id()
    await set_status_over_http(http, pair, evse_id, "Reserved")
    await wait_until(lambda: sink_statuses(pair, evse_id), what="the next status after the poison command")


MALFORMED_COMMANDS = {
    "not JSON": (b"{records: [", "application/json"),
    "not UTF-8": (b'{"type": "cpo.evse.status.set", "data": "\xff\xfe"}', "application/json"),
    "JSON but no envelope": (b"[1, 2, 3]", "application/json"),
    "envelope without data": (b'{"type": "cpo.evse.status.set", "node": "csms"}', "application/json"),
    "a status OICP does not know": (
        orjson.dumps(
            {"type": "cpo.evse.status.set", "data": {"records": [{"EvseID": "DE*GEF*E1", "EvseStatus": "Dozing"}]}}
        ),
        "application/json",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED_COMMANDS), ids=list(MALFORMED_COMMANDS))
async def test_a_malformed_amqp_command_is_dead_lettered_with_its_reason(
    pair: Pair, http: aiohttp.ClientSession, case: str
) -> None:
    """Whatever an internal system publishes as a command: a command.rejected event saying why, the
    message in the dead-letter queue (once, not after a crash loop of redeliveries), and the worker
    carries on with the next command."""
    body, content_type = MALFORMED_COMMANDS[case]
    marker = uuid.uuid4().hex
    async with EventTap(pair.cpo.topology.events.name, "command.rejected") as rejected:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(pair.cpo.topology.commands.name)
            await exchange.publish(
                aio_pika.Message(body, content_type=content_type, delivery_mode=2, message_id=marker),
                routing_key="cpo.evse.status.set",
                mandatory=True,
            )
            mine = lambda: [e for e in rejected.events if e["data"].get("command_id") == marker]  # noqa: E731
            await wait_until(mine, what=f"command.rejected for the {case} command")
            assert mine()[0]["data"]["reason"], "the rejection says why"

            dead = await channel.declare_queue(pair.cpo.topology.dead_letters.name, passive=True)
            found: list[aio_pika.abc.AbstractIncomingMessage] = []

            async def dead_lettered() -> bool:
                message = await dead.get(fail=False)
                if message is not None:
                    await message.ack()
                    if message.message_id == marker:
                        found.append(message)
                return bool(found)

            await wait_until(dead_lettered, what="the malformed command in the dead-letter queue")
            assert found[0].body == body
            # rejected at the first delivery, not redelivered until the queue's limit
            assert not (found[0].headers or {}).get("x-delivery-count")
    evse_id = new_evse_id()
    await set_status_over_http(http, pair, evse_id, "Reserved")
    await wait_until(lambda: sink_statuses(pair, evse_id), what="the next status after the malformed command")
