"""The EMP's CDR inbox against the real Redis: one record per SessionID, duplicates and conflicts,
the indexes by time, peer and unknown session, and the "not yet announced" mark."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.stores.cdr_inbox import CdrInbox, Stored
from shared.stores.redis import KeySpace
from tests.support.cdr_bodies import full_cdr
from tests.support.nodes import REDIS_URL, RUN_ID

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest_asyncio.fixture(loop_scope="session")
async def inbox() -> AsyncIterator[CdrInbox]:
    prefix = f"{RUN_ID}:inbox-{uuid.uuid4().hex[:6]}:"
    redis = aioredis.from_url(REDIS_URL)
    yield CdrInbox(redis, KeySpace(prefix))
    keys = [k async for k in redis.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def store(inbox: CdrInbox, cdr: dict, at: datetime = T0, peer: str = "DEGEF", known: bool = True) -> Stored:
    outcome, _ = await inbox.store(cdr, peer_id=peer, peer_key=peer, received_at=at, source="push", session_known=known)
    return outcome


async def test_one_record_per_session(inbox: CdrInbox) -> None:
    cdr = full_cdr()
    assert await store(inbox, cdr) is Stored.STORED
    reordered = dict(reversed(list(cdr.items())))  # the same CDR, keys in another order
    assert await store(inbox, reordered, at=T0 + timedelta(minutes=1)) is Stored.DUPLICATE
    outcome, kept = await inbox.store(
        {**cdr, "ConsumedEnergy": 1.0},
        peer_id="DEGEF",
        peer_key="DEGEF",
        received_at=T0 + timedelta(minutes=2),
        source="fetch",
        session_known=True,
    )
    assert outcome is Stored.CONFLICT and kept.cdr == cdr and kept.received_at == T0.isoformat()
    assert await inbox.count() == 1
    got = await inbox.get(cdr["SessionID"])
    assert got is not None and got.cdr == cdr and got.source == "push"


async def test_indexes_by_time_peer_and_unknown_session(inbox: CdrInbox) -> None:
    early, late, other = full_cdr(), full_cdr(), full_cdr()
    await store(inbox, early, at=T0)
    await store(inbox, late, at=T0 + timedelta(hours=1), known=False)
    await store(inbox, other, at=T0 + timedelta(hours=2), peer="DEXYZ")

    def ids(found: list) -> list[str]:
        return [c.session_id for c in found]

    assert ids(await inbox.by_time(None, None, 0, 10)) == [early["SessionID"], late["SessionID"], other["SessionID"]]
    assert ids(await inbox.by_time(T0 + timedelta(minutes=30), T0 + timedelta(hours=1), 0, 10)) == [late["SessionID"]]
    assert ids(await inbox.by_time(None, None, 1, 1)) == [late["SessionID"]]
    assert ids(await inbox.by_peer("DEXYZ", None, None, 0, 10)) == [other["SessionID"]]
    assert ids(await inbox.by_peer("DEGEF", T0, T0, 0, 10)) == [early["SessionID"]]  # both ends inclusive
    assert ids(await inbox.unknown_sessions(0, 10)) == [late["SessionID"]]
    assert await inbox.count_unknown_sessions() == 1
    assert await inbox.count_unknown_sessions(since=T0 + timedelta(hours=2)) == 0


async def test_a_stored_cdr_is_unannounced_until_its_event_is_out(inbox: CdrInbox) -> None:
    cdr = full_cdr()
    await store(inbox, cdr)
    assert await inbox.unannounced(cdr["SessionID"])
    await inbox.announced(cdr["SessionID"])
    assert not await inbox.unannounced(cdr["SessionID"])
    assert await store(inbox, cdr) is Stored.DUPLICATE
    assert not await inbox.unannounced(cdr["SessionID"]), "a duplicate is not announced again"
