"""The pricing pulls of a real CPO node's OICP face (DIGEST §1.2 items 17-18, §9.4): the EMP peer gets
the pricing meant for it (its ProviderID or ``*``) and never another provider's, LastCall narrows the
answer, and every answer conforms to Hubject's OpenAPI."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.oicp.base import format_oicp_datetime
from shared.oicp.operations import OPERATIONS_BY_NAME
from shared.oicp.types import ActionType, EvsePricing, PricingProductData
from shared.stores.pricing import EvsePricingStore, PricingProductStore
from shared.stores.redis import KeySpace
from tests.conftest import EMP_CALLS_CPO, EMP_ID, Pair
from tests.oicp_schema import validate_response
from tests.support.nodes import REDIS_URL, RUN_ID

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

PRODUCTS_OPERATION = OPERATIONS_BY_NAME["PullPricingProductData"]
EVSE_OPERATION = OPERATIONS_BY_NAME["PullEVSEPricing"]
# Operators unique to this module, so other tests seeding the CPO node never meet these records.
OPERATOR = "DE*PQ1"
LAST_CALL_OPERATOR = "DE*PQ2"
OTHER_EMP = "DE-XYZ"
T0 = datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
T2 = T0 + timedelta(hours=2)
CEST = timezone(timedelta(hours=2))


class CpoStores:
    def __init__(self, redis: aioredis.Redis, pair: Pair) -> None:
        keys = KeySpace(f"{RUN_ID}:{pair.cpo.name}:")
        self.products = PricingProductStore(redis, keys, "own")
        self.evse = EvsePricingStore(redis, keys, "own")


@pytest_asyncio.fixture(loop_scope="session")
async def cpo_stores(pair: Pair) -> AsyncIterator[CpoStores]:
    # The pair fixture deletes every key of the run at the end of the session.
    client = aioredis.from_url(REDIS_URL)
    try:
        yield CpoStores(client, pair)
    finally:
        await client.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def pull(http: aiohttp.ClientSession, pair: Pair, operation_name: str, body: dict[str, Any]) -> dict[str, Any]:
    operation = OPERATIONS_BY_NAME[operation_name]
    url = pair.cpo.oicp_url + operation.path.format(providerID=EMP_ID)
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {EMP_CALLS_CPO}"}) as response:
        assert response.status == 200
        answer: dict[str, Any] = await response.json(content_type=None)
    validate_response(operation.path, answer, acknowledgement_ok=True)
    return answer


def products_document(operator_id: str, provider_id: str, product_ids: list[str]) -> PricingProductData:
    return PricingProductData.model_validate(
        {
            "OperatorID": operator_id,
            "OperatorName": "Pricing Pull Test",
            "ProviderID": provider_id,
            "PricingDefaultPrice": 0.49,
            "PricingDefaultPriceCurrency": "EUR",
            "PricingDefaultReferenceUnit": "KILOWATT_HOUR",
            "PricingProductDataRecords": [
                {
                    "ProductID": product_id,
                    "ReferenceUnit": "KILOWATT_HOUR",
                    "ProductPriceCurrency": "EUR",
                    "PricePerReferenceUnit": 0.39,
                    "MaximumProductChargingPower": 22,
                    "IsValid24hours": False,
                    "ProductAvailabilityTimes": [
                        {"Periods": [{"begin": "07:00", "end": "20:00"}], "on": "Workdays"},
                    ],
                    "AdditionalReferences": [
                        {
                            "AdditionalReference": "PARKING FEE",
                            "AdditionalReferenceUnit": "HOUR",
                            "PricePerAdditionalReferenceUnit": 1.5,
                        }
                    ],
                }
                for product_id in product_ids
            ],
        }
    )


def code_of(answer: dict[str, Any]) -> str:
    return str(answer["StatusCode"]["Code"])


async def test_pricing_products_for_the_emp_and_for_all_never_for_another_provider(
    pair: Pair, http: aiohttp.ClientSession, cpo_stores: CpoStores
) -> None:
    for provider_id, products in ((EMP_ID, ["PQ1-MINE"]), ("*", ["PQ1-ALL"]), (OTHER_EMP, ["PQ1-XYZ-SECRET"])):
        document = products_document(OPERATOR, provider_id, products)
        assert (await cpo_stores.products.apply(ActionType.FULL_LOAD, document, T0)).ok

    answer = await pull(http, pair, PRODUCTS_OPERATION.name, {"OperatorIDs": [OPERATOR]})

    assert code_of(answer) == "000"
    documents = answer["PricingProductData"]
    assert [(d["OperatorID"], d["ProviderID"]) for d in documents] == [(OPERATOR, EMP_ID), (OPERATOR, "*")]
    assert [[r["ProductID"] for r in d["PricingProductDataRecords"]] for d in documents] == [["PQ1-MINE"], ["PQ1-ALL"]]
    assert documents[0]["PricingProductDataRecords"][0]["AdditionalReferences"][0]["AdditionalReference"] == (
        "PARKING FEE"
    )
    text = json.dumps(answer)
    assert OTHER_EMP not in text and "PQ1-XYZ-SECRET" not in text

    nothing = await pull(http, pair, PRODUCTS_OPERATION.name, {"OperatorIDs": ["DE*PQ9"]})
    assert code_of(nothing) == "000" and nothing["PricingProductData"] == []


async def test_pricing_products_with_last_call(pair: Pair, http: aiohttp.ClientSession, cpo_stores: CpoStores) -> None:
    old = products_document(LAST_CALL_OPERATOR, EMP_ID, ["PQ2-OLD"])
    new = products_document(LAST_CALL_OPERATOR, "*", ["PQ2-NEW"])
    await cpo_stores.products.apply(ActionType.FULL_LOAD, old, T0)
    await cpo_stores.products.apply(ActionType.FULL_LOAD, new, T2)
    await cpo_stores.products.apply(
        ActionType.FULL_LOAD, products_document(LAST_CALL_OPERATOR, OTHER_EMP, ["PQ2-XYZ"]), T2
    )

    # T1 written with another offset: LastCall is a point in time, whatever its zone
    body = {"OperatorIDs": [LAST_CALL_OPERATOR], "LastCall": format_oicp_datetime(T1.astimezone(CEST))}
    answer = await pull(http, pair, PRODUCTS_OPERATION.name, body)
    assert [d["ProviderID"] for d in answer["PricingProductData"]] == ["*"]

    body["LastCall"] = format_oicp_datetime(T2)
    assert (await pull(http, pair, PRODUCTS_OPERATION.name, body))["PricingProductData"] == []
    full = await pull(http, pair, PRODUCTS_OPERATION.name, {"OperatorIDs": [LAST_CALL_OPERATOR]})
    assert [d["ProviderID"] for d in full["PricingProductData"]] == [EMP_ID, "*"]


async def test_evse_pricing_for_the_emp_and_for_all_never_for_another_provider(
    pair: Pair, http: aiohttp.ClientSession, cpo_stores: CpoStores
) -> None:
    records = [
        EvsePricing(evse_id="DE*PQ1*E1", provider_id=EMP_ID, evse_id_product_list=["PQ1-MINE"]),
        EvsePricing(evse_id="DE*PQ1*E1", provider_id="*", evse_id_product_list=["PQ1-ALL"]),
        EvsePricing(evse_id="DE*PQ1*E2", provider_id="*", evse_id_product_list=["PQ1-ALL"]),
        EvsePricing(evse_id="DE*PQ1*E3", provider_id=OTHER_EMP, evse_id_product_list=["PQ1-XYZ-SECRET"]),
    ]
    assert (await cpo_stores.evse.apply(ActionType.FULL_LOAD, OPERATOR, records, T0)).ok

    body = {"ProviderID": EMP_ID, "OperatorIDs": [OPERATOR, "DE*PQ9"]}
    answer = await pull(http, pair, EVSE_OPERATION.name, body)

    assert code_of(answer) == "000"
    assert [group["OperatorID"] for group in answer["EVSEPricing"]] == [OPERATOR]
    # the EMP's own assignment wins over the offer to all; "*" is answered as the EMP's ProviderID
    # (the response schema admits no "*")
    assert answer["EVSEPricing"][0]["EVSEPricing"] == [
        {"EvseID": "DE*PQ1*E1", "ProviderID": EMP_ID, "EvseIDProductList": ["PQ1-MINE"]},
        {"EvseID": "DE*PQ1*E2", "ProviderID": EMP_ID, "EvseIDProductList": ["PQ1-ALL"]},
    ]
    text = json.dumps(answer)
    assert OTHER_EMP not in text and "PQ1-XYZ-SECRET" not in text and "DE*PQ1*E3" not in text

    # asking in another provider's name is refused by the pipeline
    refused = await pull(http, pair, EVSE_OPERATION.name, {**body, "ProviderID": OTHER_EMP})
    assert code_of(refused) == "017" and "PQ1" not in json.dumps(refused)


async def test_evse_pricing_with_last_call(pair: Pair, http: aiohttp.ClientSession, cpo_stores: CpoStores) -> None:
    records = [
        EvsePricing(evse_id="DE*PQ2*E1", provider_id=EMP_ID, evse_id_product_list=["PQ2-A"]),
        EvsePricing(evse_id="DE*PQ2*E2", provider_id="*", evse_id_product_list=["PQ2-A"]),
        EvsePricing(evse_id="DE*PQ2*E3", provider_id=OTHER_EMP, evse_id_product_list=["PQ2-A"]),
    ]
    await cpo_stores.evse.apply(ActionType.FULL_LOAD, LAST_CALL_OPERATOR, records, T0)
    changed = [
        EvsePricing(evse_id="DE*PQ2*E2", provider_id="*", evse_id_product_list=["PQ2-B"]),
        EvsePricing(evse_id="DE*PQ2*E3", provider_id=OTHER_EMP, evse_id_product_list=["PQ2-B"]),
    ]
    assert (await cpo_stores.evse.apply(ActionType.UPDATE, LAST_CALL_OPERATOR, changed, T2)).ok

    body = {"ProviderID": EMP_ID, "OperatorIDs": [LAST_CALL_OPERATOR], "LastCall": format_oicp_datetime(T1)}
    answer = await pull(http, pair, EVSE_OPERATION.name, body)
    assert answer["EVSEPricing"] == [
        {
            "OperatorID": LAST_CALL_OPERATOR,
            "EVSEPricing": [{"EvseID": "DE*PQ2*E2", "ProviderID": EMP_ID, "EvseIDProductList": ["PQ2-B"]}],
        }
    ]
    body["LastCall"] = format_oicp_datetime(T2)
    later = await pull(http, pair, EVSE_OPERATION.name, body)
    assert code_of(later) == "000" and later["EVSEPricing"] == []
