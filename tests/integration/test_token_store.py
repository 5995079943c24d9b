"""The EMP's token store against the real Redis: ActionType semantics (insert/update all-or-nothing
with the conflicting keys, delete, fullLoad replaces everything), keys by UID/EvcoID, the per-provider
sets, paging, and the outbox entries queued for PushAuthenticationData in the same step."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.bus.messages import Token
from shared.oicp import Identification
from shared.stores.redis import KeySpace
from shared.stores.tokens import TokenStore, medium_key
from tests.support.nodes import REDIS_URL, RUN_ID

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROVIDER = "DE-GDF"
UID_A, UID_B, UID_C = "AAAA0001", "BBBB0002", "CCCC0003"
EVCO = "DE-GDF-C12345678-X"


@dataclass
class Fixture:
    store: TokenStore
    redis: aioredis.Redis
    outbox: str


@pytest_asyncio.fixture(loop_scope="session")
async def tokens() -> AsyncIterator[Fixture]:
    prefix = f"{RUN_ID}:tokens-{uuid.uuid4().hex[:6]}:"
    redis = aioredis.from_url(REDIS_URL)
    yield Fixture(TokenStore(redis, KeySpace(prefix)), redis, prefix + "outbox")
    keys = [k async for k in redis.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


def rfid(uid: str, **kwargs: object) -> Token:
    return Token(identification=Identification.rfid_mifare(uid), provider_id=PROVIDER, **kwargs)


def qr(pin: str = "1234") -> Token:
    return Token(identification=Identification.qr_code(EVCO, pin=pin), provider_id=PROVIDER)


async def test_keys_are_the_upper_cased_uid_or_the_normalised_evco_id() -> None:
    assert medium_key(Identification.rfid_mifare("ABCDEF01")) == "ABCDEF01"
    assert medium_key(Identification.plug_and_charge(EVCO)) == "DEGDFC12345678X"
    assert medium_key(Identification.remote("de-gdf-C12345678-x")) == "DEGDFC12345678X"


async def test_insert_refuses_existing_keys_and_applies_nothing(tokens: Fixture) -> None:
    store = tokens.store
    result = await store.apply("insert", [rfid(UID_A), qr()])
    assert result.ok and sorted(result.changed) == sorted([UID_A, "DEGDFC12345678X"])
    clash = await store.apply("insert", [rfid(UID_B), rfid(UID_A, blocked=True)])
    assert not clash.ok and clash.conflicts == [UID_A]
    assert "already exist" in clash.conflict_info("insert") and UID_A in clash.conflict_info("insert")
    # all or nothing: B was not inserted, A is unchanged
    assert await store.get(UID_B) is None
    stored = await store.get(UID_A.lower())
    assert stored is not None and not stored.token.blocked and stored.provider_key == "DEGDF"


async def test_update_refuses_missing_keys_then_applies(tokens: Fixture) -> None:
    store = tokens.store
    await store.apply("insert", [rfid(UID_A)])
    missing = await store.apply("update", [rfid(UID_A, blocked=True), rfid(UID_C)])
    assert not missing.ok and missing.conflicts == [UID_C]
    assert not (await store.get(UID_A)).token.blocked  # type: ignore[union-attr]
    updated = await store.apply("update", [rfid(UID_A, blocked=True)])
    assert updated.ok and updated.changed == [UID_A]
    assert (await store.get(UID_A)).token.blocked  # type: ignore[union-attr]
    # the same record again changes nothing
    again = await store.apply("update", [rfid(UID_A, blocked=True)])
    assert again.ok and again.changed == []


async def test_delete_and_full_load_replace_everything(tokens: Fixture) -> None:
    store = tokens.store
    await store.apply("insert", [rfid(UID_A), rfid(UID_B), qr()])
    deleted = await store.apply("delete", [rfid(UID_B), rfid(UID_C)])
    assert deleted.ok and deleted.deleted == [UID_B]  # an unknown key is ignored
    loaded = await store.apply("fullLoad", [rfid(UID_C), rfid(UID_A)])
    assert loaded.ok and loaded.changed == [UID_C] and loaded.deleted == ["DEGDFC12345678X"]
    assert await store.count() == 2
    assert [t.key for t in await store.page(0, 10)] == [UID_A, UID_C]
    assert [t.key for t in await store.page(1, 10)] == [UID_C]
    assert await store.keys_of_provider("DEGDF") == [UID_A, UID_C]
    emptied = await store.apply("fullLoad", [])
    assert emptied.ok and sorted(emptied.deleted) == [UID_A, UID_C]
    assert await store.count() == 0 and await store.keys_of_provider("DEGDF") == []


async def test_changes_are_queued_in_the_push_outboxes_with_the_record(tokens: Fixture) -> None:
    store = tokens.store
    await store.apply("insert", [rfid(UID_A), qr()], [tokens.outbox])
    queued = await tokens.redis.hgetall(tokens.outbox)
    assert set(queued) == {UID_A.encode(), b"DEGDFC12345678X"}
    first = orjson.loads(queued[UID_A.encode()])
    assert first["r"]["Identification"] == {"RFIDMifareFamilyIdentification": {"UID": UID_A}}
    await store.apply("delete", [rfid(UID_A)], [tokens.outbox])
    after = orjson.loads(await tokens.redis.hget(tokens.outbox, UID_A))
    # a new stamp (the lane sees the re-queue) and the record as it was (to send the delete)
    assert after["s"] != first["s"] and after["r"]["Identification"] == first["r"]["Identification"]
    # a refused insert queues nothing
    await tokens.redis.delete(tokens.outbox)
    assert not (await store.apply("insert", [qr()], [tokens.outbox])).ok
    assert await tokens.redis.hlen(tokens.outbox) == 0


async def test_stored_view_hides_pins(tokens: Fixture) -> None:
    await tokens.store.apply("insert", [qr("9876")])
    stored = await tokens.store.get(EVCO)
    assert stored is not None and stored.usable
    shown = stored.as_dict()
    assert shown["has_pin"] and "9876" not in orjson.dumps(shown).decode()
