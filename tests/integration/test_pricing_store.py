"""The pricing read models against the real Redis: ActionType semantics (DIGEST §9.1) for pricing
product documents and EVSE pricing records, provider filtering (own ProviderID and ``*``, never another
provider's) and LastCall (DIGEST §9.4)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.oicp.types import ActionType, EvsePricing, PricingProductData, PricingProductDataRecord
from shared.stores.pricing import EvsePricingStore, PricingProductStore, StoredEvsePricing
from shared.stores.redis import KeySpace
from tests.support.nodes import REDIS_URL, RUN_ID

pytestmark = pytest.mark.asyncio(loop_scope="session")

OPERATOR = "DE*PRA"
OTHER_OPERATOR = "DE*PRB"
EMP = "DE-GDF"
OTHER_EMP = "DE-XYZ"
ALL = "*"
T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
T2 = T0 + timedelta(hours=2)
T3 = T0 + timedelta(hours=3)


class Stores:
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        keys = KeySpace(prefix)
        self.products = PricingProductStore(redis, keys, "own")
        self.evse = EvsePricingStore(redis, keys, "own")


@pytest_asyncio.fixture(loop_scope="session")
async def stores() -> AsyncIterator[Stores]:
    prefix = f"{RUN_ID}:pricing-store-{uuid.uuid4().hex[:8]}:"
    client = aioredis.from_url(REDIS_URL)
    try:
        yield Stores(client, prefix)
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def product(product_id: str, price: str = "0.39") -> PricingProductDataRecord:
    return PricingProductDataRecord.model_validate(
        {
            "ProductID": product_id,
            "ReferenceUnit": "KILOWATT_HOUR",
            "ProductPriceCurrency": "EUR",
            "PricePerReferenceUnit": price,
            "MaximumProductChargingPower": 22,
            "IsValid24hours": True,
            "ProductAvailabilityTimes": [{"Periods": [{"begin": "00:00", "end": "23:59"}], "on": "Everyday"}],
        }
    )


def document(
    provider_id: str,
    products: list[PricingProductDataRecord],
    operator_id: str = OPERATOR,
    default_price: str = "0.49",
) -> PricingProductData:
    return PricingProductData.model_validate(
        {
            "OperatorID": operator_id,
            "OperatorName": "Pricing Test Operator",
            "ProviderID": provider_id,
            "PricingDefaultPrice": default_price,
            "PricingDefaultPriceCurrency": "EUR",
            "PricingDefaultReferenceUnit": "KILOWATT_HOUR",
            "PricingProductDataRecords": [p.model_dump(by_alias=True) for p in products],
        }
    )


def product_ids(data: PricingProductData) -> list[str]:
    return [r.product_id for r in data.pricing_product_data_records]


def evse_pricing(evse_id: str, provider_id: str, products: list[str]) -> EvsePricing:
    return EvsePricing(evse_id=evse_id, provider_id=provider_id, evse_id_product_list=products)


# --------------------------------------------------------------------------------------------------
# Pricing products
# --------------------------------------------------------------------------------------------------


async def test_full_load_creates_and_then_replaces_the_document(stores: Stores) -> None:
    first = await stores.products.apply(ActionType.FULL_LOAD, document(EMP, [product("AC1"), product("DC")]), T0)
    assert first.ok and sorted(first.changed) == ["AC1", "DC"] and first.deleted == []
    assert first.defaults_changed and first.document_changed
    stored = await stores.products.get_document(OPERATOR, EMP)
    assert stored is not None and stored.updated_at == T0
    assert product_ids(stored.data) == ["AC1", "DC"]
    assert stored.data == document(EMP, [product("AC1"), product("DC")])

    second = await stores.products.apply("fullLoad", document(EMP, [product("DC"), product("AC3")]), T1)
    assert second.changed == ["AC3"], "DC is unchanged"
    assert second.deleted == ["AC1"], "a product left out of a fullLoad is gone"
    assert not second.defaults_changed
    stored = await stores.products.get_document(OPERATOR, EMP)
    assert stored is not None and stored.updated_at == T1
    assert product_ids(stored.data) == ["AC3", "DC"]


async def test_identical_content_is_no_change_and_keeps_the_timestamp(stores: Stores) -> None:
    await stores.products.apply(ActionType.FULL_LOAD, document(EMP, [product("AC1")]), T0)
    for action in (ActionType.FULL_LOAD, ActionType.UPDATE):
        again = await stores.products.apply(action, document(EMP, [product("AC1")]), T2)
        assert again.ok and again.changed == [] and again.deleted == [] and not again.document_changed
    stored = await stores.products.get_document(OPERATOR, EMP)
    assert stored is not None and stored.updated_at == T0
    # the same price written differently (0.390 == 0.39) is the same content
    same = await stores.products.apply(ActionType.UPDATE, document(EMP, [product("AC1", "0.390")]), T2)
    assert not same.document_changed


async def test_empty_full_load_removes_every_product_and_keeps_the_defaults(stores: Stores) -> None:
    await stores.products.apply(ActionType.FULL_LOAD, document(EMP, [product("AC1"), product("DC")]), T0)
    result = await stores.products.apply(ActionType.FULL_LOAD, document(EMP, [], default_price="0.59"), T1)
    assert sorted(result.deleted) == ["AC1", "DC"] and result.defaults_changed
    stored = await stores.products.get_document(OPERATOR, EMP)
    assert stored is not None and stored.data.pricing_product_data_records == []
    assert stored.data.pricing_default_price == Decimal("0.59") and stored.updated_at == T1


async def test_full_load_scope_is_operator_and_provider(stores: Stores) -> None:
    await stores.products.apply(ActionType.FULL_LOAD, document(EMP, [product("AC1")]), T0)
    await stores.products.apply(ActionType.FULL_LOAD, document(ALL, [product("AC1")]), T0)
    await stores.products.apply(ActionType.FULL_LOAD, document(OTHER_EMP, [product("AC1")]), T0)
    await stores.products.apply(ActionType.FULL_LOAD, document(EMP, [product("AC1")], OTHER_OPERATOR), T0)

    await stores.products.apply(ActionType.FULL_LOAD, document(EMP, []), T1)

    emptied = await stores.products.get_document(OPERATOR, EMP)
    assert emptied is not None and product_ids(emptied.data) == []
    for operator_id, provider_id in ((OPERATOR, ALL), (OPERATOR, OTHER_EMP), (OTHER_OPERATOR, EMP)):
        untouched = await stores.products.get_document(operator_id, provider_id)
        assert untouched is not None and product_ids(untouched.data) == ["AC1"], (operator_id, provider_id)
        assert untouched.updated_at == T0


async def test_insert_with_one_existing_product_applies_nothing(stores: Stores) -> None:
    await stores.products.apply(ActionType.FULL_LOAD, document(EMP, [product("AC1")]), T0)
    inserted = await stores.products.apply(ActionType.INSERT, document(EMP, [product("DC")]), T1)
    assert inserted.ok and inserted.changed == ["DC"]

    refused = await stores.products.apply(
        ActionType.INSERT, document(EMP, [product("AC3"), product("AC1", "0.99")], default_price="0.99"), T2
    )
    assert not refused.ok and refused.conflicts == ["AC1"] and refused.changed == []
    assert not refused.defaults_changed
    stored = await stores.products.get_document(OPERATOR, EMP)
    assert stored is not None and product_ids(stored.data) == ["AC1", "DC"], "AC3 was not inserted"
    assert stored.data.pricing_default_price == Decimal("0.49") and stored.updated_at == T1
    assert stored.data.pricing_product_data_records[0].price_per_reference_unit == Decimal("0.39")


async def test_update_of_an_unknown_product_applies_nothing(stores: Stores) -> None:
    await stores.products.apply(ActionType.FULL_LOAD, document(EMP, [product("AC1"), product("DC")]), T0)
    refused = await stores.products.apply(
        ActionType.UPDATE, document(EMP, [product("AC1", "0.45"), product("HPC", "0.79")]), T1
    )
    assert refused.conflicts == ["HPC"] and refused.changed == []
    stored = await stores.products.get_document(OPERATOR, EMP)
    assert stored is not None and stored.updated_at == T0
    assert stored.data.pricing_product_data_records[0].price_per_reference_unit == Decimal("0.39")

    updated = await stores.products.apply(ActionType.UPDATE, document(EMP, [product("AC1", "0.45")]), T1)
    assert updated.ok and updated.changed == ["AC1"]
    stored = await stores.products.get_document(OPERATOR, EMP)
    assert stored is not None and stored.updated_at == T1 and product_ids(stored.data) == ["AC1", "DC"]
    assert stored.data.pricing_product_data_records[0].price_per_reference_unit == Decimal("0.45")


async def test_delete_removes_the_given_products_and_ignores_unknown_ones(stores: Stores) -> None:
    await stores.products.apply(ActionType.FULL_LOAD, document(EMP, [product("AC1"), product("DC")]), T0)
    result = await stores.products.apply(ActionType.DELETE, document(EMP, [product("DC"), product("NOPE")]), T1)
    assert result.ok and result.deleted == ["DC"] and result.changed == []
    stored = await stores.products.get_document(OPERATOR, EMP)
    assert stored is not None and product_ids(stored.data) == ["AC1"] and stored.updated_at == T1
    unknown_only = await stores.products.apply(ActionType.DELETE, document(EMP, [product("NOPE")]), T2)
    assert unknown_only.ok and not unknown_only.document_changed


async def test_insert_update_and_delete_take_the_defaults_of_the_body(stores: Stores) -> None:
    await stores.products.apply(ActionType.FULL_LOAD, document(EMP, [product("AC1")]), T0)
    steps = [
        (ActionType.INSERT, [product("DC")], "0.51", T1),
        (ActionType.UPDATE, [product("AC1")], "0.52", T2),  # AC1 unchanged: only the defaults change
        (ActionType.DELETE, [product("NOPE")], "0.53", T3),
    ]
    for action, products, default_price, moment in steps:
        result = await stores.products.apply(action, document(EMP, products, default_price=default_price), moment)
        assert result.ok and result.defaults_changed and result.document_changed, action
        stored = await stores.products.get_document(OPERATOR, EMP)
        assert stored is not None and stored.data.pricing_default_price == Decimal(default_price)
        assert stored.updated_at == moment


async def test_pull_returns_the_providers_and_the_offer_to_all_documents_only(stores: Stores) -> None:
    await stores.products.apply(ActionType.FULL_LOAD, document(EMP, [product("MINE")]), T0)
    await stores.products.apply(ActionType.FULL_LOAD, document(ALL, [product("EVERYONE")]), T0)
    await stores.products.apply(ActionType.FULL_LOAD, document(OTHER_EMP, [product("THEIRS")]), T0)
    await stores.products.apply(ActionType.FULL_LOAD, document(OTHER_EMP, [product("THEIRS")], OTHER_OPERATOR), T0)
    await stores.products.apply(ActionType.FULL_LOAD, document(ALL, [product("B-ALL")], OTHER_OPERATOR), T0)

    pulled = await stores.products.pull([OPERATOR], EMP, None)
    assert [(d.provider_id, product_ids(d)) for d in pulled] == [(EMP, ["MINE"]), (ALL, ["EVERYONE"])]
    # the provider and the operators spelled without separators are the same IDs
    assert await stores.products.pull(["DEPRA"], "DEGDF", None) == pulled

    both = await stores.products.pull([OPERATOR, OTHER_OPERATOR, "DE*NON"], EMP, None)
    assert [(d.operator_id, d.provider_id) for d in both] == [(OPERATOR, EMP), (OPERATOR, ALL), (OTHER_OPERATOR, ALL)]
    assert await stores.products.pull([], EMP, None) == []

    other = await stores.products.pull([OPERATOR, OTHER_OPERATOR], OTHER_EMP, None)
    assert "MINE" not in [pid for d in other for pid in product_ids(d)]

    for_emp = await stores.products.documents_for_provider(EMP)
    assert [(s.data.operator_id, s.data.provider_id) for s in for_emp] == [
        (OPERATOR, EMP),
        (OPERATOR, ALL),
        (OTHER_OPERATOR, ALL),
    ]
    assert all(s.updated_at == T0 for s in for_emp)
    assert await stores.products.provider_ids("DEPRA") == sorted([ALL, EMP, OTHER_EMP])


async def test_pull_with_last_call_returns_whole_documents_changed_after_it(stores: Stores) -> None:
    await stores.products.apply(ActionType.FULL_LOAD, document(EMP, [product("AC1"), product("DC")]), T0)
    await stores.products.apply(ActionType.FULL_LOAD, document(ALL, [product("AC1")]), T2)

    after_t1 = await stores.products.pull([OPERATOR], EMP, T1)
    assert [d.provider_id for d in after_t1] == [ALL]
    assert await stores.products.pull([OPERATOR], EMP, T2) == [], "LastCall is exclusive"

    # a deletion shows: the changed document comes back whole, without the deleted product
    await stores.products.apply(ActionType.DELETE, document(EMP, [product("DC")]), T3)
    after_t2 = await stores.products.pull([OPERATOR], EMP, T2)
    assert [(d.provider_id, product_ids(d)) for d in after_t2] == [(EMP, ["AC1"])]
    # an unchanged re-push does not make a document "changed"
    await stores.products.apply(ActionType.FULL_LOAD, document(ALL, [product("AC1")]), T3)
    assert [d.provider_id for d in await stores.products.pull([OPERATOR], EMP, T2)] == [EMP]


async def test_unknown_document_is_none(stores: Stores) -> None:
    assert await stores.products.get_document(OPERATOR, EMP) is None
    assert await stores.products.documents_for_provider(EMP) == []


# --------------------------------------------------------------------------------------------------
# EVSE pricing
# --------------------------------------------------------------------------------------------------

E1, E2, E3 = "DE*PRA*E1", "DE*PRA*E2", "DE*PRA*E3"
B1 = "DE*PRB*E1"


def key(evse_id: str, provider_id: str) -> str:
    return f"{evse_id}|{provider_id}"


async def stored_record(stores: Stores, record_key: str) -> StoredEvsePricing:
    found = (await stores.evse.get_many([record_key]))[record_key]
    assert found is not None, f"{record_key} is not stored"
    return found


async def test_evse_full_load_creates_and_replaces_the_operators_set(stores: Stores) -> None:
    first = await stores.evse.apply(
        ActionType.FULL_LOAD,
        OPERATOR,
        [evse_pricing(E1, EMP, ["AC1"]), evse_pricing(E1, ALL, ["STD"]), evse_pricing(E2, OTHER_EMP, ["AC3"])],
        T0,
    )
    assert first.ok and first.changed == [key(E1, EMP), key(E1, ALL), key(E2, OTHER_EMP)]
    await stores.evse.apply(ActionType.FULL_LOAD, OTHER_OPERATOR, [evse_pricing(B1, EMP, ["AC1"])], T0)

    found = await stores.evse.get_many([key(E1, EMP), key(E1, ALL), key(E3, EMP), key(B1, EMP)])
    stored = found[key(E1, EMP)]
    assert stored is not None and stored.record == evse_pricing(E1, EMP, ["AC1"])
    assert stored.operator_id == OPERATOR and stored.updated_at == T0
    assert found[key(E3, EMP)] is None
    assert (await stored_record(stores, key(B1, EMP))).operator_id == OTHER_OPERATOR

    # the fullLoad scope is the operator, for every provider: left-out records of all providers go
    second = await stores.evse.apply(
        ActionType.FULL_LOAD, OPERATOR, [evse_pricing(E1, EMP, ["AC1"]), evse_pricing(E3, ALL, ["DC"])], T1
    )
    assert second.changed == [key(E3, ALL)], "E1 for the EMP is unchanged"
    assert sorted(second.deleted) == sorted([key(E1, ALL), key(E2, OTHER_EMP)])
    found = await stores.evse.get_many([key(E1, EMP), key(E1, ALL), key(E2, OTHER_EMP), key(B1, EMP)])
    assert found[key(E1, ALL)] is None and found[key(E2, OTHER_EMP)] is None
    assert (await stored_record(stores, key(E1, EMP))).updated_at == T0
    assert found[key(B1, EMP)] is not None, "another operator's records are not in the scope"


async def test_evse_empty_full_load_and_identical_content(stores: Stores) -> None:
    records = [evse_pricing(E1, EMP, ["AC1", "DC"]), evse_pricing(E2, ALL, ["AC1"])]
    await stores.evse.apply(ActionType.FULL_LOAD, OPERATOR, records, T0)
    await stores.evse.apply(ActionType.FULL_LOAD, OTHER_OPERATOR, [evse_pricing(B1, ALL, ["AC1"])], T0)

    same = await stores.evse.apply(ActionType.FULL_LOAD, OPERATOR, records, T1)
    assert same.ok and same.changed == [] and same.deleted == []
    same = await stores.evse.apply(ActionType.UPDATE, OPERATOR, records[:1], T1)
    assert same.ok and same.changed == []
    assert (await stored_record(stores, key(E1, EMP))).updated_at == T0
    # product order is content
    reordered = await stores.evse.apply(ActionType.UPDATE, OPERATOR, [evse_pricing(E1, EMP, ["DC", "AC1"])], T1)
    assert reordered.changed == [key(E1, EMP)]

    emptied = await stores.evse.apply(ActionType.FULL_LOAD, OPERATOR, [], T2)
    assert sorted(emptied.deleted) == sorted([key(E1, EMP), key(E2, ALL)])
    assert await stores.evse.pull([OPERATOR], EMP, None) == []
    assert await stores.evse.keys_for_provider(EMP) == [key(B1, ALL)]


async def test_evse_insert_conflict_aborts_the_whole_push(stores: Stores) -> None:
    await stores.evse.apply(ActionType.FULL_LOAD, OPERATOR, [evse_pricing(E1, EMP, ["AC1"])], T0)
    inserted = await stores.evse.apply(ActionType.INSERT, OPERATOR, [evse_pricing(E1, ALL, ["STD"])], T1)
    assert inserted.ok and inserted.changed == [key(E1, ALL)], "same EVSE, other ProviderID: another record"

    refused = await stores.evse.apply(
        ActionType.INSERT, OPERATOR, [evse_pricing(E2, EMP, ["AC1"]), evse_pricing(E1, EMP, ["DC"])], T2
    )
    assert refused.conflicts == [key(E1, EMP)] and refused.changed == []
    found = await stores.evse.get_many([key(E2, EMP), key(E1, EMP)])
    assert found[key(E2, EMP)] is None
    assert (await stored_record(stores, key(E1, EMP))).record.evse_id_product_list == ["AC1"]


async def test_evse_update_of_unknown_aborts_and_delete_of_unknown_is_ignored(stores: Stores) -> None:
    await stores.evse.apply(ActionType.FULL_LOAD, OPERATOR, [evse_pricing(E1, EMP, ["AC1"])], T0)
    refused = await stores.evse.apply(
        ActionType.UPDATE, OPERATOR, [evse_pricing(E1, EMP, ["DC"]), evse_pricing(E1, OTHER_EMP, ["DC"])], T1
    )
    assert refused.conflicts == [key(E1, OTHER_EMP)] and refused.changed == []
    assert (await stored_record(stores, key(E1, EMP))).record.evse_id_product_list == ["AC1"]

    updated = await stores.evse.apply(ActionType.UPDATE, OPERATOR, [evse_pricing(E1, EMP, ["DC"])], T1)
    assert updated.ok and updated.changed == [key(E1, EMP)]
    stored = (await stores.evse.get_many([key(E1, EMP)]))[key(E1, EMP)]
    assert stored is not None and stored.record.evse_id_product_list == ["DC"] and stored.updated_at == T1

    deleted = await stores.evse.apply(
        ActionType.DELETE, OPERATOR, [evse_pricing(E1, EMP, ["DC"]), evse_pricing(E3, EMP, ["DC"])], T2
    )
    assert deleted.ok and deleted.deleted == [key(E1, EMP)]
    assert (await stores.evse.get_many([key(E1, EMP)]))[key(E1, EMP)] is None


async def test_evse_delete_does_not_reach_another_operators_records(stores: Stores) -> None:
    await stores.evse.apply(ActionType.FULL_LOAD, OTHER_OPERATOR, [evse_pricing(B1, EMP, ["AC1"])], T0)
    result = await stores.evse.apply(ActionType.DELETE, OPERATOR, [evse_pricing(B1, EMP, ["AC1"])], T1)
    assert result.ok and result.deleted == []
    assert (await stores.evse.get_many([key(B1, EMP)]))[key(B1, EMP)] is not None


async def test_evse_pull_filters_by_provider_with_own_records_first(stores: Stores) -> None:
    await stores.evse.apply(
        ActionType.FULL_LOAD,
        OPERATOR,
        [
            evse_pricing(E1, EMP, ["MINE"]),
            evse_pricing(E1, ALL, ["STD"]),  # overridden for EMP by its own record
            evse_pricing(E2, ALL, ["STD"]),
            evse_pricing(E3, OTHER_EMP, ["THEIRS"]),
        ],
        T0,
    )
    await stores.evse.apply(ActionType.FULL_LOAD, OTHER_OPERATOR, [evse_pricing(B1, OTHER_EMP, ["THEIRS"])], T0)

    pulled = await stores.evse.pull([OPERATOR, OTHER_OPERATOR, "DE*NON"], EMP, None)
    assert [g.operator_id for g in pulled] == [OPERATOR], "nothing for the EMP at the other operator"
    assert pulled[0].evse_pricing == [evse_pricing(E1, EMP, ["MINE"]), evse_pricing(E2, ALL, ["STD"])]
    assert await stores.evse.pull(["DEPRA"], "DEGDF", None) == pulled

    theirs = await stores.evse.pull([OPERATOR, OTHER_OPERATOR], OTHER_EMP, None)
    records = [(r.evse_id, r.evse_id_product_list) for g in theirs for r in g.evse_pricing]
    assert records == [(E1, ["STD"]), (E2, ["STD"]), (E3, ["THEIRS"]), (B1, ["THEIRS"])]
    assert await stores.evse.pull([], EMP, None) == []

    assert await stores.evse.keys_for_provider(EMP) == sorted([key(E1, EMP), key(E1, ALL), key(E2, ALL)])
    assert key(E3, OTHER_EMP) not in await stores.evse.keys_for_provider("DE*GDF")


async def test_evse_pull_with_last_call(stores: Stores) -> None:
    await stores.evse.apply(
        ActionType.FULL_LOAD, OPERATOR, [evse_pricing(E1, EMP, ["AC1"]), evse_pricing(E2, ALL, ["STD"])], T0
    )
    await stores.evse.apply(ActionType.UPDATE, OPERATOR, [evse_pricing(E2, ALL, ["STD", "DC"])], T2)

    changed = await stores.evse.pull([OPERATOR], EMP, T1)
    assert [r.evse_id for g in changed for r in g.evse_pricing] == [E2]
    assert await stores.evse.pull([OPERATOR], EMP, T2) == [], "LastCall is exclusive"
    # a "*" change hidden behind the provider's own record is no change for the provider
    await stores.evse.apply(ActionType.INSERT, OPERATOR, [evse_pricing(E1, ALL, ["STD"])], T3)
    assert await stores.evse.pull([OPERATOR], EMP, T2) == []
    assert [r.evse_id for g in await stores.evse.pull([OPERATOR], OTHER_EMP, T2) for r in g.evse_pricing] == [E1]


async def test_evse_record_pushed_by_another_operator_moves_to_it(stores: Stores) -> None:
    # (EvseID, ProviderID) is one record store-wide; a hub relaying a sub-operator may push it for another
    await stores.evse.apply(ActionType.FULL_LOAD, OPERATOR, [evse_pricing(E1, EMP, ["AC1"])], T0)
    refused = await stores.evse.apply(ActionType.INSERT, OTHER_OPERATOR, [evse_pricing(E1, EMP, ["DC"])], T1)
    assert refused.conflicts == [key(E1, EMP)]
    moved = await stores.evse.apply(ActionType.FULL_LOAD, OTHER_OPERATOR, [evse_pricing(E1, EMP, ["AC1"])], T1)
    assert moved.changed == [key(E1, EMP)]
    stored = (await stores.evse.get_many([key(E1, EMP)]))[key(E1, EMP)]
    assert stored is not None and stored.operator_id == OTHER_OPERATOR and stored.updated_at == T1
    assert await stores.evse.pull([OPERATOR], EMP, None) == []
    assert [g.operator_id for g in await stores.evse.pull([OTHER_OPERATOR], EMP, None)] == [OTHER_OPERATOR]
