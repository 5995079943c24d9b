"""Periodic checks of the ledger, every ``sessions.check_interval_seconds``:

* reservations past their ``reservation_until`` become ``expired`` (events ``session.expired`` and
  ``session.reservation.ended``), in both roles;
* ended sessions still without a CDR after ``cdr_missing_after_seconds`` raise ``session.cdr.missing``,
  once per session;
* a session still ``requested`` long after anybody could be waiting for its answer (the worker stopped
  between recording it and recording the outcome) becomes ``error`` with ``session.failed``: its
  request was never sent or its answer was lost, and it is never sent again. A late confirmation or a
  notification still adopts it.

Every replica runs them: the ledger's atomic transitions and a NX marker per reported session make
a second replica's round a no-op, so no lease is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from services.sessions.app import SessionsDeps
from services.sessions.common import emit
from shared.bus.client import BusUnavailable
from shared.bus.messages import EventType, SessionEvent
from shared.stores.sessions import InvalidTransition, SessionState

logger = logging.getLogger(__name__)

S = SessionState
#: Sessions reported as missing their CDR are remembered this long (a CDR after that is unusual).
REPORTED_RETENTION_SECONDS = 90 * 86_400
#: A ``requested`` session is stale this long after the longest legitimate wait for its answer.
STALE_REQUEST_GRACE_SECONDS = 60.0


class Housekeeping:
    def __init__(self, deps: SessionsDeps) -> None:
        self.deps = deps
        self._task: asyncio.Task[None] | None = None
        self._reported = deps.key("cdr-missing", "reported")  # zset: session id → when reported
        self._cursor = deps.key("cdr-missing", "cursor")  # end time of the newest session reported

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sessions-housekeeping")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        interval = self.deps.settings.sessions.check_interval_seconds
        while True:
            try:
                await self.expire_reservations()
                await self.report_missing_cdrs()
                await self.fail_stale_requests()
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis or the broker away: the next round tries again
                logger.exception("session housekeeping failed")
            await asyncio.sleep(interval)

    async def expire_reservations(self) -> int:
        expired = 0
        for session in await self.deps.ledger.reservations_due():
            try:
                stored, previous = await self.deps.ledger.transition(
                    session.session_id, S.EXPIRED, "reservation time over", only_from={S.RESERVED}
                )
            except InvalidTransition:
                continue  # moved on meanwhile (stopped, started); the transition left the index
            if previous is S.EXPIRED:
                continue  # another replica was first
            expired += 1
            info = f"reserved until {session.reservation_until}"
            await emit(self.deps, EventType.SESSION_EXPIRED, stored, previous, info=info)
            await emit(self.deps, EventType.SESSION_RESERVATION_ENDED, stored, previous, info=info)
        return expired

    def stale_after_seconds(self) -> float:
        """Longer than any worker waits with a session in ``requested``: the backend's deadline (CPO)
        or the slowest peer's timeout (EMP), plus a grace period."""
        settings = self.deps.settings
        longest = max([settings.sessions.backend_timeout_seconds, *(p.timeout_seconds for p in settings.peers)])
        return longest + STALE_REQUEST_GRACE_SECONDS

    async def fail_stale_requests(self) -> int:
        failed = 0
        for session in await self.deps.ledger.in_state_since(S.REQUESTED, self.stale_after_seconds()):
            note = "no outcome recorded: the request was not sent or its answer was lost"
            try:
                stored, previous = await self.deps.ledger.transition(
                    session.session_id, S.ERROR, note, only_from={S.REQUESTED}
                )
            except InvalidTransition:
                continue  # settled meanwhile
            if previous is S.ERROR:
                continue  # another replica was first
            failed += 1
            await emit(self.deps, EventType.SESSION_FAILED, stored, previous, info=note)
        return failed

    async def report_missing_cdrs(self) -> int:
        """Walk the "ended without CDR" index from a cursor (the end time of the newest session
        reported), so each session is looked at once, however large the backlog of old ones."""
        deps = self.deps
        raw_cursor = await deps.redis.get(self._cursor)
        cursor = float(raw_cursor) if raw_cursor else 0.0
        due = await deps.ledger.ended_without_cdr_between(cursor, deps.settings.sessions.cdr_missing_after_seconds)
        reported = 0
        for session, ended in due:
            if await deps.redis.zadd(self._reported, {session.session_id: ended}, nx=True):
                waited = datetime.now(UTC).timestamp() - ended
                try:
                    await deps.bus.emit_event(
                        EventType.SESSION_CDR_MISSING,
                        SessionEvent(
                            session=session.as_dict(),
                            previous_state=session.state.value,
                            info=f"ended {waited:.0f}s ago, no CDR yet",
                        ),
                        correlation_id=session.session_id,
                    )
                except BusUnavailable:
                    # Not reported after all: the next round tries again.
                    await deps.redis.zrem(self._reported, session.session_id)
                    raise
                reported += 1
            await deps.redis.set(self._cursor, repr(ended))
        await deps.redis.zremrangebyscore(
            self._reported, "-inf", datetime.now(UTC).timestamp() - REPORTED_RETENTION_SECONDS
        )
        return reported
