"""The session ledger against the real Redis: the state machine, a late confirmation adopted after a
timeout, idempotent repeats, indexes by state and EVSE, and sessions waiting for their CDR."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.stores.redis import KeySpace
from shared.stores.sessions import InvalidTransition, Session, SessionLedger, SessionState, UnknownSession
from tests.support.nodes import REDIS_URL, RUN_ID

S = SessionState
pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def ledger() -> AsyncIterator[SessionLedger]:
    prefix = f"{RUN_ID}:ledger-{uuid.uuid4().hex[:6]}:"
    redis = aioredis.from_url(REDIS_URL)
    yield SessionLedger(redis, KeySpace(prefix))
    keys = [k async for k in redis.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


def new_session(evse: str = "DE*GEF*E1") -> Session:
    return Session(session_id=str(uuid.uuid4()), role="emp", state=S.REQUESTED, evse_id=evse, peer_id="DE*GEF")


async def test_create_once_then_the_id_is_taken(ledger: SessionLedger) -> None:
    session = new_session()
    created, stored = await ledger.create(session)
    assert created and stored.state is S.REQUESTED
    again, existing = await ledger.create(Session(session_id=session.session_id, role="emp", state=S.STARTED))
    assert not again and existing.state is S.REQUESTED and existing.evse_id == session.evse_id


async def test_lifecycle_and_history(ledger: SessionLedger) -> None:
    session = new_session()
    await ledger.create(session, note="remote start sent")
    for state in (S.STARTED, S.CHARGING, S.CHARGING, S.ENDED, S.CDR_RECEIVED):
        stored, _ = await ledger.transition(session.session_id, state)
        assert stored.state is state
    stored = await ledger.get(session.session_id)
    assert stored is not None and stored.ended_at is not None
    assert [h["state"] for h in await ledger.history(session.session_id)] == [
        "requested",
        "started",
        "charging",
        "charging",
        "ended",
        "cdr_received",
    ]


async def test_a_late_confirmation_after_a_timeout_is_adopted(ledger: SessionLedger) -> None:
    session = new_session()
    await ledger.create(session)
    await ledger.transition(session.session_id, S.ERROR, note="no answer within the deadline")
    stored, previous = await ledger.transition(session.session_id, S.STARTED, note="late confirmation")
    assert stored.state is S.STARTED and previous is S.ERROR


async def test_transitions_the_machine_forbids(ledger: SessionLedger) -> None:
    session = new_session()
    await ledger.create(session)
    await ledger.transition(session.session_id, S.STARTED)
    with pytest.raises(InvalidTransition):
        await ledger.transition(session.session_id, S.REFUSED)
    await ledger.transition(session.session_id, S.ENDED)
    with pytest.raises(InvalidTransition):
        await ledger.transition(session.session_id, S.CHARGING)
    with pytest.raises(UnknownSession):
        await ledger.transition(str(uuid.uuid4()), S.STARTED)


async def test_indexes_and_sessions_without_cdr(ledger: SessionLedger) -> None:
    evse = f"DE*GEF*E{uuid.uuid4().hex[:4]}"
    first, second = new_session(evse), new_session(evse)
    for s in (first, second):
        await ledger.create(s)
        await ledger.transition(s.session_id, S.ENDED)
    await ledger.transition(second.session_id, S.CDR_RECEIVED)
    assert {s.session_id for s in await ledger.by_evse(evse)} == {first.session_id, second.session_id}
    waiting = {s.session_id for s in await ledger.without_cdr(older_than_seconds=0)}
    assert first.session_id in waiting and second.session_id not in waiting
    assert first.session_id not in {s.session_id for s in await ledger.without_cdr(older_than_seconds=3600)}
    assert first.session_id in {s.session_id for s in await ledger.by_state(S.ENDED)}
    counts = await ledger.count_by_state()
    assert counts["ended"] >= 1 and counts["cdr_received"] >= 1


async def test_only_from_narrows_the_machine(ledger: SessionLedger) -> None:
    session = new_session()
    await ledger.create(session)
    await ledger.transition(session.session_id, S.STARTED, note="a Start notification came first")
    # the answer to the request settles only a session that is still requested
    with pytest.raises(InvalidTransition):
        await ledger.transition(session.session_id, S.ERROR, only_from={S.REQUESTED})
    assert (await ledger.get(session.session_id)).state is S.STARTED  # type: ignore[union-attr]


async def test_reservations_expire_by_their_end_time(ledger: SessionLedger) -> None:
    now = datetime.now(UTC)
    due, later = new_session(), new_session()
    for s, until in ((due, now + timedelta(minutes=1)), (later, now + timedelta(minutes=30))):
        await ledger.create(s)
        await ledger.transition(s.session_id, S.RESERVED, reservation_until=until.isoformat())
    assert due.session_id not in {s.session_id for s in await ledger.reservations_due()}
    await ledger.reschedule_reservation(due.session_id, now - timedelta(seconds=1))
    found = {s.session_id for s in await ledger.reservations_due()}
    assert due.session_id in found and later.session_id not in found
    # leaving the reserved state leaves the index; a session that is not reserved cannot be rescheduled
    await ledger.transition(due.session_id, S.EXPIRED)
    assert due.session_id not in {s.session_id for s in await ledger.reservations_due()}
    with pytest.raises(InvalidTransition):
        await ledger.reschedule_reservation(due.session_id, now)
    # a late reservation confirmation after a timeout is adopted
    late = new_session()
    await ledger.create(late)
    await ledger.transition(late.session_id, S.ERROR)
    stored, previous = await ledger.transition(late.session_id, S.RESERVED, reservation_until=now.isoformat())
    assert stored.state is S.RESERVED and previous is S.ERROR


async def test_ended_without_cdr_from_a_cursor(ledger: SessionLedger) -> None:
    first, second = new_session(), new_session()
    for s in (first, second):
        await ledger.create(s)
        await ledger.transition(s.session_id, S.ENDED)
    waiting = await ledger.ended_without_cdr_between(0.0, older_than_seconds=0)
    ids = [s.session_id for s, _ in waiting]
    assert ids.index(first.session_id) < ids.index(second.session_id)  # oldest first
    cursor = dict((s.session_id, ended) for s, ended in waiting)[first.session_id]
    after = [s.session_id for s, _ in await ledger.ended_without_cdr_between(cursor, older_than_seconds=0)]
    assert first.session_id not in after and second.session_id in after
    assert await ledger.count_without_cdr(0) >= 2
    assert await ledger.count_without_cdr(3600) == 0


async def test_sessions_in_a_state_since(ledger: SessionLedger) -> None:
    old, new = new_session(), new_session()
    await ledger.create(old)
    await ledger.create(new)
    await ledger.transition(new.session_id, S.STARTED)
    requested_now = {s.session_id for s in await ledger.in_state_since(S.REQUESTED, 0)}
    assert old.session_id in requested_now and new.session_id not in requested_now
    assert await ledger.in_state_since(S.REQUESTED, 3600) == []


async def test_housekeeping_fails_requests_nobody_waits_for_any_more(ledger: SessionLedger) -> None:
    """A session left ``requested`` (its worker died between recording and sending) becomes ``error``
    with session.failed once nobody can still be waiting for its answer; a settled one is untouched."""
    from services.sessions.housekeeping import Housekeeping
    from shared.bus.messages import EventType

    class Bus:
        def __init__(self) -> None:
            self.events: list[tuple[EventType, Any]] = []

        async def emit_event(self, event: EventType, payload: Any, correlation_id: str | None = None) -> None:
            self.events.append((event, payload))

    stale, settled = new_session(), new_session()
    await ledger.create(stale)
    await ledger.create(settled)
    await ledger.transition(settled.session_id, S.STARTED)
    settings = SimpleNamespace(sessions=SimpleNamespace(backend_timeout_seconds=8.0), peers=[])
    deps = SimpleNamespace(ledger=ledger, settings=settings, bus=Bus(), key=lambda *parts: "unused")
    housekeeping = Housekeeping(deps)  # type: ignore[arg-type]
    assert housekeeping.stale_after_seconds() > 8.0
    assert await housekeeping.fail_stale_requests() == 0  # both are younger than that

    housekeeping.stale_after_seconds = lambda: 0.0  # type: ignore[method-assign]
    assert await housekeeping.fail_stale_requests() == 1
    failed = await ledger.get(stale.session_id)
    assert failed is not None and failed.state is S.ERROR
    assert (await ledger.get(settled.session_id)).state is S.STARTED  # type: ignore[union-attr]
    assert [e for e, p in deps.bus.events if p.session["session_id"] == stale.session_id] == [EventType.SESSION_FAILED]
    assert await housekeeping.fail_stale_requests() == 0  # nothing left, nothing twice
