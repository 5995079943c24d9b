"""The CPO CDR store and outbox against the real Redis: one CDR per SessionID (idempotent resubmit,
conflicting resubmit refused), the delivery bookkeeping (due, failure with backoff, parking after the
attempts, parking at once, replay, delivered), and the GetChargeDetailRecords query with every filter
and the paging fields over 5,000+ CDRs - never showing another peer's CDRs."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.stores.cdr_outbox import CdrEntry, CdrOutbox, CdrState, SubmitOutcome
from shared.stores.redis import KeySpace
from tests.support.cdrs import cdr_body
from tests.support.nodes import REDIS_URL, RUN_ID

pytestmark = pytest.mark.asyncio(loop_scope="session")

PEER, OTHER = "DE-GDF", "DE-OTH"
OPERATOR, SECOND_OPERATOR = "DE*GEF", "DE*GEG"
BULK = 5_000  # CDRs of PEER in the query tests
OTHER_BULK = 400  # CDRs of OTHER, interleaved in time
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
STEP = timedelta(seconds=7, milliseconds=3)
CEST = timezone(timedelta(hours=2))


async def fresh_outbox() -> AsyncIterator[CdrOutbox]:
    """A store under a key prefix of its own, deleted afterwards."""
    prefix = f"{RUN_ID}:cdr-outbox-{uuid.uuid4().hex[:6]}:"
    redis = aioredis.from_url(REDIS_URL)
    yield CdrOutbox(redis, KeySpace(prefix))
    keys = [k async for k in redis.scan_iter(match=prefix + "*", count=1000)]
    for start in range(0, len(keys), 1000):
        await redis.delete(*keys[start : start + 1000])
    await redis.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def outbox() -> AsyncIterator[CdrOutbox]:
    async for store in fresh_outbox():
        yield store


def sid() -> str:
    return str(uuid.uuid4())


def entry(session_id: str | None = None, peer: str = PEER, operator: str = OPERATOR, **kwargs: Any) -> CdrEntry:
    session_id = session_id or sid()
    evse = f"{operator}*E{session_id[:8].upper()}"
    return CdrEntry(cdr=cdr_body(session_id, evse), peer_id=peer, operator_id=operator, provider_id=peer, **kwargs)


async def test_a_cdr_is_stored_as_submitted_and_due_for_its_peer(outbox: CdrOutbox) -> None:
    new = entry()
    result = await outbox.submit(new)
    assert result.outcome is SubmitOutcome.STORED
    stored = await outbox.get(new.session_id)
    assert stored is not None
    assert orjson.dumps(stored.cdr) == orjson.dumps(new.cdr), "body byte for byte (member order, time zones)"
    assert stored.cdr["ChargingStart"].endswith("+02:00")
    assert (stored.state, stored.attempts, stored.peer_key, stored.operator_id) == (
        CdrState.PENDING,
        0,
        "DEGDF",
        OPERATOR,
    )
    assert stored.submitted_at == result.submitted_at and not stored.forwarded
    assert [c.session_id for c in await outbox.due("DEGDF")] == [new.session_id]
    assert await outbox.due("DEOTH") == []


async def test_resubmitting_the_same_cdr_is_idempotent(outbox: CdrOutbox) -> None:
    new = entry()
    first = await outbox.submit(new)
    pending = await outbox.count_pending()
    # The same CDR with its members in another order (a backend's JSON need not keep the order)
    reordered = CdrEntry(
        cdr=dict(reversed(list(new.cdr.items()))), peer_id=PEER, operator_id=OPERATOR, provider_id=PEER
    )
    again = await outbox.submit(reordered)
    assert again.outcome is SubmitOutcome.DUPLICATE and again.submitted_at == first.submitted_at
    assert await outbox.count_pending() == pending, "not queued twice"
    assert [c.session_id for c in await outbox.due("DEGDF", limit=1000)].count(new.session_id) == 1
    stored = await outbox.get(new.session_id)
    assert stored is not None and orjson.dumps(stored.cdr) == orjson.dumps(new.cdr), "the first body is kept"


async def test_a_different_cdr_for_the_same_session_is_refused(outbox: CdrOutbox) -> None:
    first = entry()
    await outbox.submit(first)
    changed = CdrEntry(
        cdr=cdr_body(first.session_id, first.cdr["EvseID"], energy="99.999"),
        peer_id=PEER,
        operator_id=OPERATOR,
    )
    result = await outbox.submit(changed)
    assert result.outcome is SubmitOutcome.CONFLICT
    stored = await outbox.get(first.session_id)
    assert stored is not None and stored.cdr["ConsumedEnergy"] == first.cdr["ConsumedEnergy"]


async def test_failures_back_off_then_park_and_replay_makes_it_due_again(outbox: CdrOutbox) -> None:
    peer = f"DE-F{uuid.uuid4().hex[:2].upper()}"
    peer_key = peer.replace("-", "")
    new = entry(peer=peer)
    await outbox.submit(new)
    now = datetime.now(UTC)
    later = now + timedelta(minutes=5)
    attempts, parked = await outbox.record_failure(new.session_id, "connect: refused", later, park_after=3)
    assert (attempts, parked) == (1, False)
    assert await outbox.due(peer_key, now) == [], "not due before its next attempt"
    (due,) = await outbox.due(peer_key, later)
    assert due.attempts == 1 and due.last_error == "connect: refused" and due.next_attempt is not None
    assert await outbox.next_due(peer_key) is not None
    assert await outbox.record_failure(new.session_id, "timeout", now) == (2, False)
    parked_before = await outbox.count_parked()
    assert await outbox.record_failure(new.session_id, "HTTP 503", now, park_after=3) == (3, True)
    stored = await outbox.get(new.session_id)
    assert stored is not None
    assert (stored.state, stored.attempts, stored.parked_reason) == (CdrState.PARKED, 3, "HTTP 503")
    assert await outbox.due(peer_key, later) == [] and await outbox.count_pending(peer_key) == 0
    assert await outbox.count_parked() == parked_before + 1 and await outbox.count_parked(peer) == 1
    page = await outbox.parked(0, 10_000)
    assert new.session_id in [c.session_id for c in page] and len(page) == parked_before + 1
    # a parked CDR counts no more failures and is not parked twice
    assert await outbox.record_failure(new.session_id, "late", now) == (-1, False)
    assert await outbox.park(new.session_id, "again") is None

    assert await outbox.replay(None, "DE-XXX") == {}, "another peer's replay leaves it parked"
    assert await outbox.replay(None, peer) == {peer_key: 1}
    stored = await outbox.get(new.session_id)
    assert stored is not None
    assert (stored.state, stored.attempts, stored.source, stored.replays) == (CdrState.PENDING, 0, "replay", 1)
    assert [c.session_id for c in await outbox.due(peer_key)] == [new.session_id]
    assert await outbox.count_parked(peer) == 0
    assert await outbox.replay([new.session_id]) == {}, "only parked CDRs are replayed"


async def test_a_definitive_refusal_parks_at_once_and_delivery_takes_it_off_every_queue(outbox: CdrOutbox) -> None:
    peer = f"DE-P{uuid.uuid4().hex[:2].upper()}"
    peer_key = peer.replace("-", "")
    refused, fine = entry(peer=peer), entry(peer=peer)
    await outbox.submit_many([refused, fine])
    assert await outbox.park(refused.session_id, "400 conflicting CDR") == 1
    stored = await outbox.get(refused.session_id)
    assert stored is not None and stored.state is CdrState.PARKED and stored.parked_reason == "400 conflicting CDR"
    assert [c.session_id for c in await outbox.due(peer_key)] == [fine.session_id]

    assert await outbox.mark_delivered(fine.session_id)
    assert not await outbox.mark_delivered(fine.session_id), "delivered once"
    stored = await outbox.get(fine.session_id)
    assert stored is not None and stored.forwarded and stored.delivered_at and stored.state is CdrState.DELIVERED
    assert await outbox.due(peer_key) == [] and await outbox.count_pending(peer_key) == 0
    assert await outbox.record_failure(fine.session_id, "late", datetime.now(UTC)) == (-1, False)

    assert await outbox.replay([refused.session_id, fine.session_id, sid()], peer_key="DE-OTHER") == {}
    assert await outbox.replay([refused.session_id, fine.session_id, sid()]) == {peer_key: 1}
    assert [c.session_id for c in await outbox.due(peer_key)] == [refused.session_id]
    assert await outbox.mark_delivered(refused.session_id)
    assert not await outbox.mark_delivered(sid()), "unknown SessionID"


async def test_cdrs_of_unknown_sessions_are_listed_and_counted(outbox: CdrOutbox) -> None:
    before = await outbox.count_unknown_sessions()
    unknown, known = entry(session_known=False), entry()
    await outbox.submit_many([unknown, known])
    assert await outbox.count_unknown_sessions() == before + 1
    assert await outbox.count_unknown_sessions(since=datetime.now(UTC) + timedelta(hours=1)) == 0
    page = await outbox.unknown_sessions(0, 10_000)
    assert len(page) == before + 1
    assert [c.session_id for c in await outbox.unknown_sessions(before, 1)] == [unknown.session_id]
    ids = [c.session_id for c in page]
    assert unknown.session_id in ids and known.session_id not in ids
    assert not next(c for c in page if c.session_id == unknown.session_id).session_known


# ---- GetChargeDetailRecords over a large store ---------------------------------------------------


class Bulk:
    """The store with the bulk of CDRs, and what was stored, to compute every expected answer
    independently of the store."""

    def __init__(self, outbox: CdrOutbox) -> None:
        self.outbox = outbox
        self.rows: list[dict[str, Any]] = []  # PEER's CDRs in submission order
        self.others: set[str] = set()  # OTHER's SessionIDs


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def bulk() -> AsyncIterator[Bulk]:
    async for store in fresh_outbox():
        yield await fill(Bulk(store))


async def fill(data: Bulk) -> Bulk:
    """5,000 CDRs of PEER 7.003 s apart (two operators), 400 of OTHER among them, pipelined."""
    rng = random.Random(2026)
    outbox = data.outbox
    entries: list[CdrEntry] = []
    for n in range(BULK):
        at = T0 + n * STEP
        operator = OPERATOR if n % 3 else SECOND_OPERATOR
        e = entry(operator=operator, submitted_at=at)
        entries.append(e)
        data.rows.append({"sid": e.session_id, "at": at, "operator": operator, "forwarded": False})
    # the other peer's CDRs fall into the same times (same operators): they must never show
    others = [
        entry(
            peer=OTHER, operator=rng.choice([OPERATOR, SECOND_OPERATOR]), submitted_at=T0 + rng.randrange(BULK) * STEP
        )
        for _ in range(OTHER_BULK)
    ]
    rng.shuffle(entries)  # the insertion order must not matter, only the submission time
    results = await outbox.submit_many([*entries, *others])
    assert all(r.outcome is SubmitOutcome.STORED for r in results)
    # every fourth CDR of PEER was delivered (forwarded)
    for row in data.rows[::4]:
        row["forwarded"] = True
        assert await outbox.mark_delivered(row["sid"])
    data.others = {e.session_id for e in others}
    return data


def expected(
    bulk: Bulk,
    from_: datetime,
    to: datetime,
    operator: str | None = None,
    forwarded: bool | None = None,
    ids: set[str] | None = None,
) -> list[str]:
    return [
        r["sid"]
        for r in bulk.rows
        if from_ <= r["at"] <= to
        and (operator is None or r["operator"] == operator)
        and (forwarded is None or r["forwarded"] == forwarded)
        and (ids is None or r["sid"] in ids)
    ]


async def query(
    bulk: Bulk,
    from_: datetime,
    to: datetime,
    *,
    session_ids: list[str] | None = None,
    operator_id: str | None = None,
    forwarded: bool | None = None,
    offset: int = 0,
    limit: int = 2000,
    peer_key: str = "DEGDF",
) -> tuple[list[str], int]:
    bodies, total = await bulk.outbox.query(
        peer_key,
        from_,
        to,
        session_ids=session_ids,
        operator_id=operator_id,
        forwarded=forwarded,
        offset=offset,
        limit=limit,
    )
    return [b["SessionID"] for b in bodies], total


async def test_query_time_range_is_inclusive_and_ordered_by_submission(bulk: Bulk) -> None:
    first, last = bulk.rows[100]["at"], bulk.rows[2099]["at"]
    ids, total = await query(bulk, first, last)
    assert total == 2000 and ids == [r["sid"] for r in bulk.rows[100:2100]], "both bounds included, in order"
    # the same instants written in another time zone select the same CDRs
    ids_cest, _ = await query(bulk, first.astimezone(CEST), last.astimezone(CEST))
    assert ids_cest == ids
    # one millisecond inside the bounds excludes the CDRs exactly on them
    _, inner = await query(bulk, first + timedelta(milliseconds=1), last - timedelta(milliseconds=1))
    assert inner == 1998
    whole, everything = await query(bulk, T0 - timedelta(days=1), T0 + timedelta(days=1), limit=0)
    assert (whole, everything) == ([], BULK), "a count without a page"
    assert await query(bulk, last, first) == ([], 0), "From after To"


async def test_query_pages_over_the_whole_range(bulk: Bulk) -> None:
    from_, to = T0, T0 + BULK * STEP
    seen: list[str] = []
    page_size = 333
    for offset in range(0, BULK + page_size, page_size):
        ids, total = await query(bulk, from_, to, offset=offset, limit=page_size)
        assert total == BULK
        assert len(ids) == max(0, min(page_size, BULK - offset))
        seen += ids
    assert seen == [r["sid"] for r in bulk.rows], "every CDR exactly once, in submission order"
    assert not set(seen) & bulk.others


@pytest.mark.parametrize(
    ("operator", "forwarded"),
    [(OPERATOR, None), (SECOND_OPERATOR, None), (None, True), (None, False), (SECOND_OPERATOR, False), ("DEGEF", True)],
)
async def test_query_filters_by_operator_and_forwarded_state(
    bulk: Bulk, operator: str | None, forwarded: bool | None
) -> None:
    from_, to = bulk.rows[500]["at"], bulk.rows[4499]["at"]
    want_operator = {"DEGEF": OPERATOR}.get(operator or "", operator)  # the OperatorID in any spelling
    want = expected(bulk, from_, to, want_operator, forwarded)
    ids, total = await query(bulk, from_, to, operator_id=operator, forwarded=forwarded, limit=2000)
    assert total == len(want) and ids == want[:2000]
    page, total_again = await query(bulk, from_, to, operator_id=operator, forwarded=forwarded, offset=20, limit=20)
    assert total_again == total and page == want[20:40]


async def test_query_by_session_ids_shows_only_the_peers_cdrs_in_range(bulk: Bulk) -> None:
    rng = random.Random(3)
    mine = rng.sample([r["sid"] for r in bulk.rows], 300)
    others = rng.sample(sorted(bulk.others), 50)
    unknown = [sid() for _ in range(10)]
    asked = [*mine, *others, *unknown, mine[0]]  # a repeated SessionID is answered once
    rng.shuffle(asked)
    from_, to = bulk.rows[1000]["at"], bulk.rows[3999]["at"]
    want = expected(bulk, from_, to, ids=set(mine))
    ids, total = await query(bulk, from_, to, session_ids=asked)
    assert total == len(want) and ids == want, "in submission order, nothing of another peer"
    ids, total = await query(
        bulk, from_, to, session_ids=asked, forwarded=False, operator_id=OPERATOR, offset=5, limit=7
    )
    want = expected(bulk, from_, to, OPERATOR, False, set(mine))
    assert total == len(want) and ids == want[5:12]
    # the other peer asking for our peer's SessionIDs gets nothing
    assert await query(bulk, from_, to, session_ids=mine, peer_key="DEOTH") == ([], 0)


async def test_the_other_peer_sees_only_its_own(bulk: Bulk) -> None:
    ids, total = await query(bulk, T0, T0 + BULK * STEP, peer_key="DEOTH")
    assert total == OTHER_BULK and set(ids) == bulk.others
    page = await bulk.outbox.by_peer("DE-GDF", T0, T0 + BULK * STEP, 10, 10)
    assert [c.session_id for c in page] == [r["sid"] for r in bulk.rows[10:20]]
    assert await bulk.outbox.count_by_peer("DE-GDF", T0, T0 + BULK * STEP) == BULK
    assert await bulk.outbox.count_by_peer("DE-GDF", bulk.rows[1]["at"], bulk.rows[3]["at"]) == 3
    (first,) = await bulk.outbox.by_time(T0, T0 + BULK * STEP, 0, 1)
    assert first.submitted_at == T0.isoformat(timespec="milliseconds")
    assert await bulk.outbox.count_by_time(T0, T0 + BULK * STEP) == BULK + OTHER_BULK
