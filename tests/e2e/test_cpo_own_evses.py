"""A CPO node's own EVSEs: commands over AMQP with and without a reply, the events they publish,
PullEvseStatus with a SearchCenter (served through the EVSE data's geo index), and the internal
look-ups by ID, by operator and by area."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest
import pytest_asyncio

from tests.conftest import CPO_ID, EMP_CALLS_CPO, EMP_ID, Pair
from tests.oicp_schema import validate_response
from tests.support.bodies import evse_record
from tests.support.events import EventTap
from tests.support.nodes import AMQP_URL, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

BERLIN = ("52.520008", "13.404954")
MUNICH = ("48.137154", "11.576124")
BERLIN_EVSES = ["DE*GEF*E8001", "DE*GEF*E8002"]
MUNICH_EVSES = ["DE*GEF*E8101"]
REPLY_TIMEOUT = 15.0


def located(evse_id: str, where: tuple[str, str]) -> dict[str, Any]:
    record = evse_record(evse_id)
    record["GeoCoordinates"] = {"DecimalDegree": {"Latitude": where[0], "Longitude": where[1]}}
    record["Address"]["Country"] = "LIE"  # a country no other test uses: filters find only these
    return record


def data_command(action: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "cpo.evse.data.set",
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2026-11-25T10:00:00+00:00",
        "node": "an-internal-system",
        "data": {
            "ActionType": action,
            "OperatorEvseData": {"OperatorID": CPO_ID, "OperatorName": "GEF", "EvseDataRecord": records},
        },
    }


async def amqp_request(pair: Pair, envelope: dict[str, Any]) -> dict[str, Any]:
    """What an internal system does to get the outcome: publish with reply_to (direct reply-to)."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        replies: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await replies.put(message.body)

        reply_queue = await channel.get_queue("amq.rabbitmq.reply-to", ensure=False)
        await reply_queue.consume(on_reply, no_ack=True)
        exchange = await channel.get_exchange(pair.cpo.topology.commands.name)
        await exchange.publish(
            aio_pika.Message(
                orjson.dumps(envelope),
                content_type="application/json",
                reply_to="amq.rabbitmq.reply-to",
                correlation_id=envelope["event_id"],
            ),
            routing_key=envelope["type"],
            mandatory=True,
        )
        return orjson.loads(await asyncio.wait_for(replies.get(), REPLY_TIMEOUT))


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def placed(pair: Pair, http: aiohttp.ClientSession) -> Pair:
    """Two EVSEs in Berlin and one in Munich, each with a status, set over AMQP."""
    async with EventTap(pair.cpo.topology.events.name, "evse.data.changed") as tap:
        records = [located(e, BERLIN) for e in BERLIN_EVSES] + [located(e, MUNICH) for e in MUNICH_EVSES]
        reply = await amqp_request(pair, data_command("insert", records))
        assert reply["ok"] and reply["changed"] == 3, reply
        again = await amqp_request(pair, data_command("insert", records[:1]))
        assert not again["ok"] and again["code"] == "009" and BERLIN_EVSES[0] in again["info"], again
        await wait_until(lambda: tap.events, what="evse.data.changed")
        assert sorted(tap.events[0]["data"]["evse_ids"]) == sorted(BERLIN_EVSES + MUNICH_EVSES)
    headers = {"Authorization": f"Bearer {pair.cpo.internal_token}"}
    statuses = {"records": [{"EvseID": e, "EvseStatus": "Available"} for e in BERLIN_EVSES + MUNICH_EVSES]}
    statuses["records"][1]["EvseStatus"] = "Occupied"
    async with http.post(f"{pair.cpo.internal_url}/commands/cpo.evse.status.set", json=statuses, headers=headers) as r:
        assert r.status == 202

    async def stored() -> bool:
        async with http.get(f"{pair.cpo.internal_url}/evses/{MUNICH_EVSES[0]}", headers=headers) as response:
            return response.status == 200 and (await response.json())["EvseStatus"] == "Available"

    await wait_until(stored, what="statuses stored")
    return pair


async def pull_status(pair: Pair, http: aiohttp.ClientSession, body: dict[str, Any]) -> dict[str, Any]:
    path = f"/api/oicp/evsepull/v21/providers/{EMP_ID}/status-records"
    headers = {"Authorization": f"Bearer {EMP_CALLS_CPO}"}
    async with http.post(pair.cpo.oicp_url + path, json={"ProviderID": EMP_ID, **body}, headers=headers) as r:
        answer = await r.json()
    validate_response(path, answer)
    return answer


def evse_ids(answer: dict[str, Any]) -> dict[str, str]:
    return {
        r["EvseID"]: r["EvseStatus"]
        for group in answer["EvseStatuses"]["OperatorEvseStatus"]
        for r in group["EvseStatusRecord"]
    }


async def test_pull_evse_status_with_search_center(placed: Pair, http: aiohttp.ClientSession) -> None:
    centre = {"GeoCoordinates": {"Google": {"Coordinates": f"{BERLIN[0]} {BERLIN[1]}"}}, "Radius": 10}
    answer = await pull_status(placed, http, {"SearchCenter": centre})
    assert evse_ids(answer) == {BERLIN_EVSES[0]: "Available", BERLIN_EVSES[1]: "Occupied"}
    answer = await pull_status(placed, http, {"SearchCenter": centre, "EvseStatus": "Occupied"})
    assert evse_ids(answer) == {BERLIN_EVSES[1]: "Occupied"}
    # 500 km from Berlin reaches Munich (about 504 km away) only with a larger radius
    answer = await pull_status(placed, http, {"SearchCenter": {**centre, "Radius": 600}})
    assert set(evse_ids(answer)) >= set(BERLIN_EVSES + MUNICH_EVSES)


async def test_internal_look_ups(placed: Pair, http: aiohttp.ClientSession) -> None:
    headers = {"Authorization": f"Bearer {placed.cpo.internal_token}"}
    url = placed.cpo.internal_url
    async with http.get(f"{url}/evses/{BERLIN_EVSES[1]}", headers=headers) as response:
        one = await response.json()
    assert one["scope"] == "own" and one["EvseStatus"] == "Occupied" and one["data"]["EvseID"] == BERLIN_EVSES[1]
    params = {"scope": "own", "lat": BERLIN[0], "lon": BERLIN[1], "radius_km": "10", "size": "1"}
    async with http.get(f"{url}/evses", params=params, headers=headers) as response:
        area = await response.json()
    assert area["totalElements"] == 2 and len(area["content"]) == 1
    assert area["content"][0]["EvseID"] == BERLIN_EVSES[0] and area["content"][0]["EvseStatus"] == "Available"
    async with http.get(
        f"{url}/evses", params={"scope": "own", "operator": CPO_ID, "size": "2000"}, headers=headers
    ) as r:
        by_operator = await r.json()
    assert {e["EvseID"] for e in by_operator["content"]} >= set(BERLIN_EVSES + MUNICH_EVSES)
    async with http.get(f"{url}/evses", params={"lat": "52"}, headers=headers) as response:
        assert response.status == 400 and "radius_km" in (await response.json())["error"]
    async with http.get(f"{url}/evses", params={"size": "5000"}, headers=headers) as response:
        assert response.status == 400 and "size" in (await response.json())["error"]
    async with http.get(f"{url}/evses/DE*GEF*E8999", headers=headers) as response:
        assert response.status == 404
    # the EMP node holds the same EVSEs, delivered by the CPO's lanes, in its roaming scope
    emp_headers = {"Authorization": f"Bearer {placed.emp.internal_token}"}

    async def at_emp() -> dict[str, Any] | None:
        async with http.get(f"{placed.emp.internal_url}/evses/{BERLIN_EVSES[1]}", headers=emp_headers) as response:
            found = await response.json() if response.status == 200 else None
        return found if found and found["data"] and found["EvseStatus"] == "Occupied" else None

    found = await wait_until(at_emp, what="the EVSE at the EMP node")
    assert found["scope"] == "roaming" and found["OperatorID"] == CPO_ID
