"""The CPO's store of pushed authentication data against the real Redis: ActionType semantics per
ProviderID (insert/update conflicts, delete, fullLoad of one provider leaves the others), look-up of
a medium whichever provider pushed it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.oicp import Identification
from shared.stores.auth_data import AuthDataStore
from shared.stores.redis import KeySpace
from tests.support.nodes import REDIS_URL, RUN_ID

pytestmark = pytest.mark.asyncio(loop_scope="session")

A, B = "DE-GDF", "DE-OTH"
CARD_1, CARD_2, CARD_3 = (Identification.rfid_mifare(u) for u in ("11110001", "22220002", "33330003"))
CONTRACT = Identification.plug_and_charge("DE-GDF-C12345678-X")


@pytest_asyncio.fixture(loop_scope="session")
async def store() -> AsyncIterator[AuthDataStore]:
    prefix = f"{RUN_ID}:authdata-{uuid.uuid4().hex[:6]}:"
    redis = aioredis.from_url(REDIS_URL)
    yield AuthDataStore(redis, KeySpace(prefix))
    keys = [k async for k in redis.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def test_insert_and_update_conflicts_apply_nothing(store: AuthDataStore) -> None:
    assert (await store.apply("insert", A, [CARD_1, CONTRACT], "DE-GDF")).ok
    clash = await store.apply("insert", A, [CARD_2, CARD_1])
    assert not clash.ok and clash.conflicts == ["11110001"]
    assert await store.lookup(CARD_2) is None
    missing = await store.apply("update", A, [CARD_1, CARD_3])
    assert not missing.ok and missing.conflicts == ["33330003"]
    # the same medium is no conflict for another provider: the scope is the ProviderID
    assert (await store.apply("insert", B, [CARD_2])).ok
    found = await store.lookup(Identification.rfid_mifare("11110001"))
    assert found is not None and found.provider_id == A and found.peer_id == "DE-GDF"
    by_evco = await store.lookup(Identification.remote("DEGDFC12345678X"))
    assert by_evco is not None and by_evco.identification == CONTRACT


async def test_full_load_replaces_one_providers_set_only(store: AuthDataStore) -> None:
    await store.apply("fullLoad", A, [CARD_1, CARD_2])
    await store.apply("fullLoad", B, [CARD_3])
    loaded = await store.apply("fullLoad", A, [CARD_2])
    assert loaded.ok and loaded.deleted == ["11110001"] and loaded.changed == []
    assert await store.lookup(CARD_1) is None
    assert (await store.lookup(CARD_3)).provider_id == B  # type: ignore[union-attr]
    emptied = await store.apply("fullLoad", A, [])
    assert emptied.deleted == ["22220002"] and await store.count(A) == 0 and await store.count(B) == 1


async def test_delete_ignores_unknown_and_keeps_another_providers_owner(store: AuthDataStore) -> None:
    await store.apply("fullLoad", A, [CARD_1])
    await store.apply("fullLoad", B, [CARD_1])  # B pushed the same card last: it owns the look-up
    deleted = await store.apply("delete", A, [CARD_1, CARD_3])
    assert deleted.deleted == ["11110001"]
    assert (await store.lookup(CARD_1)).provider_id == B  # type: ignore[union-attr]
