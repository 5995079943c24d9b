"""The EMP role's ingest of OICP pushes (DIGEST §9.1) on a real EMP node, and the CPO node's own EVSE
data and pricing reaching the EMP node through the delivery lanes.

ActionType semantics: ``fullLoad`` replaces the pushing operator's whole set (records not included
are gone, an empty list deletes all); ``insert``/``update`` abort the whole request with 009 and the
conflicting records in AdditionalInfo; ``delete`` ignores unknown records; 018 for a foreign EvseID.
The positive answer comes only once the worker stored the push (request/reply), so a read right
after it sees the effect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.oicp import EvsePricing
from shared.stores.pricing import EvsePricingStore, PricingProductStore
from shared.stores.redis import KeySpace
from tests.conftest import CPO_ID, EMP_ID, Pair
from tests.oicp_schema import validate_response
from tests.support.bodies import evse_record
from tests.support.events import EventTap
from tests.support.nodes import REDIS_URL, RUN_ID, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

ING = "DE*ING"  # a CPO peer of its own, registered on the EMP node for these tests
ING_TOKEN = "ing-calls-emp-token"
DATA_PATH = "/api/oicp/evsepush/v23/operators/DE*ING/data-records"
STATUS_PATH = "/api/oicp/evsepush/v21/operators/DE*ING/status-records"
PRODUCTS_PATH = "/api/oicp/dynamicpricing/v10/operators/DE*ING/pricing-products"
EVSE_PRICING_PATH = "/api/oicp/dynamicpricing/v10/operators/DE*ING/evse-pricing"


class Emp:
    def __init__(self, pair: Pair, http: aiohttp.ClientSession) -> None:
        self.pair, self.http = pair, http

    async def push(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {ING_TOKEN}"}
        async with self.http.post(self.pair.emp.oicp_url + path, json=body, headers=headers) as response:
            assert response.status == 200
            answer = await response.json()
        validate_response(path, answer)
        return answer

    async def evse(self, evse_id: str) -> dict[str, Any] | None:
        headers = {"Authorization": f"Bearer {self.pair.emp.internal_token}"}
        async with self.http.get(f"{self.pair.emp.internal_url}/evses/{evse_id}", headers=headers) as response:
            return await response.json() if response.status == 200 else None


@pytest_asyncio.fixture(loop_scope="session")
async def emp(pair: Pair) -> AsyncIterator[Emp]:
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {pair.emp.internal_token}"}
        peer = {"role": "cpo", "id": ING, "base_url": "http://127.0.0.1:9", "inbound_token": ING_TOKEN}
        async with http.post(f"{pair.emp.internal_url}/peers", json=peer, headers=headers) as response:
            assert response.status in (201, 409), await response.text()
        yield Emp(pair, http)


def data_push(action: str, evse_ids: list[str], name: str = "Station") -> dict[str, Any]:
    return {
        "ActionType": action,
        "OperatorEvseData": {
            "OperatorID": ING,
            "OperatorName": "Ingest CPO",
            "EvseDataRecord": [evse_record(e, name) for e in evse_ids],
        },
    }


def status_push(action: str, records: dict[str, str]) -> dict[str, Any]:
    return {
        "ActionType": action,
        "OperatorEvseStatus": {
            "OperatorID": ING,
            "EvseStatusRecord": [{"EvseID": e, "EvseStatus": s} for e, s in records.items()],
        },
    }


def ok(answer: dict[str, Any]) -> bool:
    return answer["Result"] is True and answer["StatusCode"]["Code"] == "000"


async def names(emp: Emp, evse_ids: list[str]) -> dict[str, str | None]:
    found = {}
    for evse_id in evse_ids:
        evse = await emp.evse(evse_id)
        data = evse and evse["data"]
        found[evse_id] = data["ChargingStationNames"][0]["value"] if data else None
    return found


async def test_evse_data_action_types(emp: Emp) -> None:
    a, b, c, d = (f"DE*ING*E{n}" for n in (101, 102, 103, 104))
    async with EventTap(emp.pair.emp.topology.events.name, "evse.data.received") as tap:
        assert ok(await emp.push(DATA_PATH, data_push("fullLoad", [a, b, c])))
        assert await names(emp, [a, b, c, d]) == {a: "Station", b: "Station", c: "Station", d: None}
        await wait_until(lambda: tap.events, what="evse.data.received")
        assert tap.events[0]["data"]["peer_id"] == ING and sorted(tap.events[0]["data"]["evse_ids"]) == [a, b, c]

    # insert with one record that exists: nothing is applied, 009 names the record
    answer = await emp.push(DATA_PATH, data_push("insert", [d, a]))
    assert answer["StatusCode"]["Code"] == "009" and a in answer["StatusCode"]["AdditionalInfo"]
    assert await emp.evse(d) is None
    # update of an unknown record: nothing is applied either
    answer = await emp.push(DATA_PATH, data_push("update", [b, d], "Changed"))
    assert answer["StatusCode"]["Code"] == "009" and d in answer["StatusCode"]["AdditionalInfo"]
    assert (await names(emp, [b]))[b] == "Station"
    # the same without the conflicting record works
    assert ok(await emp.push(DATA_PATH, data_push("insert", [d])))
    assert ok(await emp.push(DATA_PATH, data_push("update", [b], "Changed")))
    assert await names(emp, [b, d]) == {b: "Changed", d: "Station"}
    # delete ignores unknown records
    assert ok(await emp.push(DATA_PATH, data_push("delete", [c, "DE*ING*E999"])))
    assert await emp.evse(c) is None
    # a fullLoad with one record leaves only that one; an empty fullLoad deletes all
    assert ok(await emp.push(DATA_PATH, data_push("fullLoad", [a])))
    assert await names(emp, [a, b, d]) == {a: "Station", b: None, d: None}
    assert ok(await emp.push(DATA_PATH, data_push("fullLoad", [])))
    assert await emp.evse(a) is None


async def test_evse_data_of_another_operator_is_refused_with_018(emp: Emp) -> None:
    answer = await emp.push(DATA_PATH, data_push("insert", ["DE*GEF*E777"]))
    assert answer["StatusCode"]["Code"] == "018"
    assert await emp.evse("DE*GEF*E777") is None


async def test_evse_status_action_types(emp: Emp) -> None:
    a, b, c = "DE*ING*E201", "DE*ING*E202", "DE*ING*E203"
    assert ok(await emp.push(STATUS_PATH, status_push("fullLoad", {a: "Available", b: "Occupied"})))
    answer = await emp.push(STATUS_PATH, status_push("update", {a: "Occupied", c: "Available"}))
    assert answer["StatusCode"]["Code"] == "009" and c in answer["StatusCode"]["AdditionalInfo"]
    assert (await emp.evse(a))["EvseStatus"] == "Available"
    answer = await emp.push(STATUS_PATH, status_push("insert", {b: "Available"}))
    assert answer["StatusCode"]["Code"] == "009"
    assert ok(await emp.push(STATUS_PATH, status_push("insert", {c: "Reserved"})))
    assert ok(await emp.push(STATUS_PATH, status_push("update", {a: "Occupied"})))
    assert (await emp.evse(a))["EvseStatus"] == "Occupied"
    assert ok(await emp.push(STATUS_PATH, status_push("fullLoad", {c: "Available"})))
    assert await emp.evse(a) is None and await emp.evse(b) is None
    assert (await emp.evse(c))["EvseStatus"] == "Available"


def roaming_stores() -> tuple[aioredis.Redis, PricingProductStore, EvsePricingStore]:
    redis = aioredis.from_url(REDIS_URL)
    keys = KeySpace(f"{RUN_ID}:emp:")
    return redis, PricingProductStore(redis, keys, "roaming"), EvsePricingStore(redis, keys, "roaming")


def products(action: str, product_ids: list[str], price: float = 0.3) -> dict[str, Any]:
    return {
        "ActionType": action,
        "PricingProductData": {
            "OperatorID": ING,
            "ProviderID": EMP_ID,
            "PricingDefaultPrice": price,
            "PricingDefaultPriceCurrency": "EUR",
            "PricingDefaultReferenceUnit": "KILOWATT_HOUR",
            "PricingProductDataRecords": [
                {
                    "ProductID": product,
                    "ReferenceUnit": "KILOWATT_HOUR",
                    "ProductPriceCurrency": "EUR",
                    "PricePerReferenceUnit": 0.39,
                    "MaximumProductChargingPower": 22,
                    "IsValid24hours": True,
                    "ProductAvailabilityTimes": [{"Periods": [{"begin": "00:00", "end": "23:59"}], "on": "Everyday"}],
                }
                for product in product_ids
            ],
        },
    }


async def test_pricing_pushes_with_action_types(emp: Emp) -> None:
    redis, product_store, pricing_store = roaming_stores()
    async with redis:
        assert ok(await emp.push(PRODUCTS_PATH, products("fullLoad", ["AC1", "DC1"])))
        answer = await emp.push(PRODUCTS_PATH, products("insert", ["AC1", "HPC"]))
        assert answer["StatusCode"]["Code"] == "009" and "AC1" in answer["StatusCode"]["AdditionalInfo"]
        stored = await product_store.get_document(ING, EMP_ID)
        assert stored is not None and {r.product_id for r in stored.data.pricing_product_data_records} == {"AC1", "DC1"}

        evse = "DE*ING*E301"
        pricing = {
            "ActionType": "insert",
            "EVSEPricing": [{"EvseID": evse, "ProviderID": "*", "EvseIDProductList": ["AC1"]}],
        }
        assert ok(await emp.push(EVSE_PRICING_PATH, pricing))
        assert (await emp.push(EVSE_PRICING_PATH, pricing))["StatusCode"]["Code"] == "009"
        foreign = {
            "ActionType": "insert",
            "EVSEPricing": [{"EvseID": "DE*GEF*E1", "ProviderID": "*", "EvseIDProductList": ["AC1"]}],
        }
        assert (await emp.push(EVSE_PRICING_PATH, foreign))["StatusCode"]["Code"] == "018"
        held = (await pricing_store.get_many([f"{evse}|*"]))[f"{evse}|*"]
        assert held is not None and held.record.evse_id_product_list == ["AC1"]


async def cpo_command(pair: Pair, http: aiohttp.ClientSession, name: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {pair.cpo.internal_token}"}
    async with http.post(f"{pair.cpo.internal_url}/commands/{name}", json=body, headers=headers) as response:
        answer = await response.json()
        answer["http_status"] = response.status
        return answer


async def test_cpo_data_and_pricing_reach_the_emp_node(pair: Pair, emp: Emp) -> None:
    evses = ["DE*GEF*E5001", "DE*GEF*E5002"]
    body = {
        "ActionType": "insert",
        "OperatorEvseData": {
            "OperatorID": CPO_ID,
            "OperatorName": "GEF",
            "EvseDataRecord": [evse_record(e) for e in evses],
        },
    }
    answer = await cpo_command(pair, emp.http, "cpo.evse.data.set", body)
    assert answer["http_status"] == 200 and answer["ok"] and answer["changed"] == 2
    # the same insert again conflicts: 409 with the records, nothing changes
    again = await cpo_command(pair, emp.http, "cpo.evse.data.set", body)
    assert again["http_status"] == 409 and again["code"] == "009" and evses[0] in again["info"]
    # EvseIDs of another operator, and another operator's data, are refused
    foreign = {**body, "OperatorEvseData": {**body["OperatorEvseData"], "EvseDataRecord": [evse_record("DE*XYZ*E1")]}}
    assert (await cpo_command(pair, emp.http, "cpo.evse.data.set", foreign))["code"] == "018"

    async def delivered_data() -> bool:
        return await names(emp, evses) == dict.fromkeys(evses, "Station")

    await wait_until(delivered_data, what="the EMP node holds the CPO's EVSE data")

    product = products("fullLoad", ["GEF-AC"])
    product["PricingProductData"]["OperatorID"] = CPO_ID
    pricing = {
        "ActionType": "fullLoad",
        "OperatorID": CPO_ID,
        "EVSEPricing": [{"EvseID": evses[0], "ProviderID": EMP_ID, "EvseIDProductList": ["GEF-AC"]}],
    }
    async with (
        EventTap(pair.cpo.topology.events.name, "evse.pricing.changed") as cpo_events,
        EventTap(pair.cpo.topology.events.name, "pricing.products.changed") as product_events,
        EventTap(pair.emp.topology.events.name, "#.received") as emp_events,
    ):
        assert (await cpo_command(pair, emp.http, "cpo.pricing.products.set", product))["ok"]
        assert (await cpo_command(pair, emp.http, "cpo.evse.pricing.set", pricing))["ok"]
        # each change is a fact on the CPO node, and the EMP node tells its systems what it received
        await wait_until(lambda: product_events.events and cpo_events.events, what="pricing events at the CPO")
        assert product_events.events[0]["data"]["product_ids"] == ["GEF-AC"]
        assert cpo_events.events[0]["data"]["records"][0]["EvseID"] == evses[0]
        await wait_until(
            lambda: {"pricing.products.received", "evse.pricing.received"} <= {e["type"] for e in emp_events.events},
            what="pricing received at the EMP node",
        )

    redis, product_store, pricing_store = roaming_stores()
    async with redis:

        async def delivered() -> bool:
            document = await product_store.get_document(CPO_ID, EMP_ID)
            held = (await pricing_store.get_many([f"{evses[0]}|{EMP_ID}"]))[f"{evses[0]}|{EMP_ID}"]
            return document is not None and held is not None

        await wait_until(delivered, what="the EMP node holds the CPO's pricing")
        held = (await pricing_store.get_many([f"{evses[0]}|{EMP_ID}"]))[f"{evses[0]}|{EMP_ID}"]
        assert held is not None and held.record == EvsePricing.model_validate(pricing["EVSEPricing"][0])
