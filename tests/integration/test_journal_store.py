"""The exchange journal against the real Redis: recorder → raw stream → sealer (lease, one writer) →
sealed chain with indexes; search, verification with tampering, retention, a journal outage."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.journal.entry import INBOUND, OUTBOUND, Exchange, chain_hash
from shared.journal.recorder import JournalRecorder
from shared.journal.store import JournalSealer, JournalStore, Query
from shared.metrics import JOURNAL_DROPPED
from shared.settings import JournalSettings
from shared.stores.redis import KeySpace
from tests.support.nodes import REDIS_URL, RUN_ID

pytestmark = pytest.mark.asyncio(loop_scope="session")
SETTINGS = JournalSettings(seal_interval_seconds=0.05)


@pytest_asyncio.fixture(loop_scope="session")
async def space() -> AsyncIterator[tuple[aioredis.Redis, KeySpace]]:
    prefix = f"{RUN_ID}:journal-{uuid.uuid4().hex[:6]}:"
    redis = aioredis.from_url(REDIS_URL)
    yield redis, KeySpace(prefix)
    keys = [k async for k in redis.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


def exchange(n: int, peer: str = "DE*ABC", direction: str = INBOUND, ts: float | None = None) -> Exchange:
    body = orjson.dumps({"SessionID": f"s-{n}", "EvseID": f"DE*ABC*E{n}"})
    return Exchange(
        ts=ts if ts is not None else time.time(),
        direction=direction,
        peer=peer,
        operation="PushEvseStatus" if n % 2 else "AuthorizeStart",
        path="/x",
        request=body,
        response=b'{"StatusCode": {"Code": "000"}}' if n % 3 else b'{"StatusCode": {"Code": "017"}}',
        http_status=200,
        status_code=None,
    )


async def record(redis: aioredis.Redis, keys: KeySpace, exchanges: list[Exchange]) -> None:
    recorder = JournalRecorder()
    await recorder.start("node", SETTINGS, redis, keys)
    for e in exchanges:
        recorder.record(e)
    await recorder.stop()


async def test_recorded_exchanges_are_sealed_searchable_and_verified(
    space: tuple[aioredis.Redis, KeySpace],
) -> None:
    redis, keys = space
    await record(redis, keys, [exchange(n, peer="DE*ABC" if n < 8 else "DE-XYZ") for n in range(1, 11)])
    store = JournalStore(redis, keys)
    a, b = JournalSealer(store, SETTINGS, "a"), JournalSealer(store, SETTINGS, "b")
    assert await a.run_once() == 10
    assert await b.run_once() == 0  # a holds the lease
    assert (await store.unsealed())[0] == 0
    outcome = await store.verify()
    assert outcome["ok"] and outcome["checked"] == 10 and outcome["last_seq"] == 10

    by_session = await store.search(Query(session="s-4"))
    assert [e["seq"] for e in by_session] == [4]
    assert by_session[0]["evse_ids"] == ["DE*ABC*E4"] and by_session[0]["status_code"] == "000"
    assert [e["seq"] for e in await store.search(Query(evse="DE*ABC*E9"))] == [9]
    assert len(await store.search(Query(peer="DE-XYZ"))) == 3
    refused = await store.search(Query(status="017"))
    assert sorted(e["seq"] for e in refused) == [3, 6, 9]
    both = await store.search(Query(peer="DE*ABC", operation="AuthorizeStart", status="017"))
    assert [e["seq"] for e in both] == [6]
    assert len(await store.search(Query(limit=4))) == 4
    assert await store.search(Query(end=time.time() - 3600)) == []
    exported = list(await store.export("DE-XYZ", None, None))
    assert [e["seq"] for e in exported] == [8, 9, 10]


async def test_tampering_is_reported_at_the_changed_entry(space: tuple[aioredis.Redis, KeySpace]) -> None:
    redis, keys = space
    await record(redis, keys, [exchange(n) for n in range(1, 6)])
    store = JournalStore(redis, keys)
    await JournalSealer(store, SETTINGS, "a").run_once()
    [(stream_id, fields)] = await redis.xrange(store.sealed, min="3-0", max="3-0")
    forged = fields[b"e"].replace(b'"http_status":200', b'"http_status":500')
    await redis.xdel(store.sealed, stream_id)
    # rewritten in place: a stream cannot insert behind its end, so rebuild it around the forged entry
    rows = await redis.xrange(store.sealed)
    await redis.delete(store.sealed)
    for sid, f in sorted(
        [*rows, (stream_id, {b"e": forged, b"h": fields[b"h"]})], key=lambda r: int(r[0].split(b"-")[0])
    ):
        await redis.xadd(store.sealed, f, id=sid)
    outcome = await store.verify()
    assert not outcome["ok"]
    assert outcome["broken"]["seq"] == 3 and outcome["broken"]["reason"] == "hash"
    assert outcome["broken"]["found"] == chain_hash(orjson.loads(forged)["prev_hash"], forged)
    recent = await store.verify(from_seq=4)  # trusting entry 3's hash: the rest holds
    assert recent["ok"] and recent["first_seq"] == 4 and recent["checked"] == 2


async def test_retention_trims_and_the_chain_still_verifies(space: tuple[aioredis.Redis, KeySpace]) -> None:
    redis, keys = space
    old = time.time() - 10 * 86_400
    await record(redis, keys, [exchange(n, ts=old + n) for n in range(1, 4)] + [exchange(n) for n in range(4, 7)])
    store = JournalStore(redis, keys)
    await JournalSealer(store, SETTINGS, "a").run_once()
    assert await store.trim(retention_days=5) == 3
    assert await store.search(Query(session="s-2")) == []
    assert [e["seq"] for e in await store.search(Query(session="s-5"))] == [5]
    outcome = await store.verify()
    assert outcome["ok"] and outcome["first_seq"] == 4 and outcome["checked"] == 3


async def test_a_journal_outage_drops_entries_and_counts_them(space: tuple[aioredis.Redis, KeySpace]) -> None:
    redis, keys = space
    store = JournalStore(redis, keys)
    await redis.set(store.raw, "not a stream")
    before = JOURNAL_DROPPED.labels("redis")._value.get()
    recorder = JournalRecorder()
    await recorder.start("node", SETTINGS, redis, keys)
    started = time.perf_counter()
    for n in range(5):
        recorder.record(exchange(n, direction=OUTBOUND))
    assert time.perf_counter() - started < 0.05  # recording never waits for Redis
    await recorder.stop()
    assert JOURNAL_DROPPED.labels("redis")._value.get() - before == 5
    sealer = JournalSealer(store, SETTINGS, "a")
    await sealer.start()
    await asyncio.sleep(0.2)  # the sealer logs the failure and keeps running
    await sealer.stop()


async def test_two_sealers_racing_never_fork_the_chain(space: tuple[aioredis.Redis, KeySpace]) -> None:
    """Without the lease (a sealer that lost it without knowing): WATCH on the head lets one batch win."""
    redis, keys = space
    await record(redis, keys, [exchange(n) for n in range(1, 201)])
    other = aioredis.from_url(REDIS_URL)
    a, b = JournalStore(redis, keys), JournalStore(other, keys)

    async def drain(store: JournalStore) -> int:
        total = 0
        for _ in range(100):
            total += await store.seal_batch(limit=7)  # its Redis round trips interleave the two
        return total

    counts = await asyncio.gather(drain(a), drain(b))
    await other.aclose()
    assert sum(counts) == 200 and (await a.unsealed())[0] == 0
    outcome = await a.verify()
    assert outcome["ok"] and outcome["checked"] == 200 and outcome["last_seq"] == 200
