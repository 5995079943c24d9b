"""The session ledger (ARCHITECTURE §6): every charging session this node takes part in, in Redis,
with a state machine, so that a session survives a remote-start timeout and its CDR finds it.

States and the transitions allowed (both roles; ``cpo`` and ``emp`` keep their own ledger)::

    requested ──► authorized ──► started ──► charging ──► ended ──► cdr_sent / cdr_received
        │  ╲          │  ╲           │           │          ▲
        │   ╲         │   ╲          └───────────┴──────────┘   (End without Progress)
        │    ► reserved ──► expired
        ▼
    refused / error ──► started          (a late confirmation is adopted, never dropped;
            error ──► reserved         a late reservation confirmation as well)

* ``requested``: a remote start (or reservation) was sent (EMP) / received and handed to the charge
  point backend (CPO). The session exists from this moment, *before* any answer.
* ``authorized``: an AuthorizeStart said ``Authorized``; ``reserved``: a reservation is active.
* ``started`` / ``charging`` / ``ended``: confirmed start, Progress notifications, End (or a stop).
* ``cdr_sent`` (CPO) / ``cdr_received`` (EMP): the CDR went out / came in.
* ``refused``, ``error``: the start did not happen (or its answer was lost: timeout); ``expired``:
  a reservation or authorization ran out unused.

Each write is one Lua script (check the current state, write, move the indexes), so two workers never
make conflicting transitions. Indexes: by state (zset, score = last change), by EVSE, active
reservations (zset, score = reservation_until) for expiry, and "ended without CDR" (zset, score = end
time) for reconciliation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
import redis.asyncio as aioredis

from shared.stores.redis import KeySpace


class SessionState(StrEnum):
    REQUESTED = "requested"
    AUTHORIZED = "authorized"
    RESERVED = "reserved"
    STARTED = "started"
    CHARGING = "charging"
    ENDED = "ended"
    CDR_SENT = "cdr_sent"
    CDR_RECEIVED = "cdr_received"
    REFUSED = "refused"
    EXPIRED = "expired"
    ERROR = "error"


S = SessionState
#: to-state → the states it may be entered from. A state is always allowed to repeat (idempotent
#: redeliveries); anything else is an InvalidTransition.
ALLOWED_FROM: dict[SessionState, frozenset[SessionState]] = {
    S.REQUESTED: frozenset(),
    S.AUTHORIZED: frozenset({S.REQUESTED}),
    # a reservation confirmed by the charge point after the answer timed out is adopted as well
    S.RESERVED: frozenset({S.REQUESTED, S.AUTHORIZED, S.ERROR}),
    # a late confirmation after a refusal/timeout is adopted: the session is real
    S.STARTED: frozenset({S.REQUESTED, S.AUTHORIZED, S.RESERVED, S.REFUSED, S.ERROR, S.EXPIRED}),
    S.CHARGING: frozenset({S.REQUESTED, S.AUTHORIZED, S.STARTED, S.REFUSED, S.ERROR}),
    S.ENDED: frozenset({S.REQUESTED, S.AUTHORIZED, S.RESERVED, S.STARTED, S.CHARGING, S.REFUSED, S.ERROR}),
    # a CDR may arrive for a session whose End notification never came
    S.CDR_SENT: frozenset(set(SessionState) - {S.CDR_RECEIVED}),
    S.CDR_RECEIVED: frozenset(set(SessionState) - {S.CDR_SENT}),
    S.REFUSED: frozenset({S.REQUESTED, S.AUTHORIZED}),
    S.EXPIRED: frozenset({S.REQUESTED, S.AUTHORIZED, S.RESERVED}),
    S.ERROR: frozenset({S.REQUESTED, S.AUTHORIZED, S.RESERVED, S.STARTED, S.CHARGING}),
}
FINAL_STATES = frozenset({S.CDR_SENT, S.CDR_RECEIVED})
#: Once here, a session waits for its CDR (reconciliation watches the time it has waited).
AWAITING_CDR = frozenset({S.ENDED})


class InvalidTransition(Exception):
    def __init__(self, session_id: str, current: SessionState, wanted: SessionState) -> None:
        super().__init__(f"session {session_id} is {current.value}; it cannot become {wanted.value}")
        self.session_id, self.current, self.wanted = session_id, current, wanted


class UnknownSession(KeyError):
    pass


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass
class Session:
    """One session as this node knows it. IDs keep OICP's spelling; ``peer_id`` is the other side."""

    session_id: str
    role: str  # "cpo" | "emp": which of this node's roles the session belongs to
    state: SessionState
    evse_id: str | None = None
    operator_id: str | None = None
    provider_id: str | None = None
    peer_id: str | None = None
    kind: str = "remote"  # remote | authorize | reservation
    identification: dict[str, Any] | None = None
    cpo_partner_session_id: str | None = None
    emp_partner_session_id: str | None = None
    partner_product_id: str | None = None
    reservation_until: str | None = None
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    ended_at: str | None = None
    note: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = self.__dict__.copy()
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Session:
        data = dict(data)
        data["state"] = SessionState(data["state"])
        return cls(**data)


# KEYS[1] session key, KEYS[2] history list, KEYS[3] state index prefix, KEYS[4] without-CDR zset,
# KEYS[5] active reservations zset (score = reservation_until, epoch s).
# ARGV[1] wanted state, ARGV[2] allowed from-states (JSON list; "*" = create only if absent),
# ARGV[3] now, ARGV[4] score (epoch s), ARGV[5] JSON of fields to set, ARGV[6] history entry,
# ARGV[7] reservation_until (epoch s) when the session becomes/stays reserved, else "".
# Returns {ok (1/0), current session JSON or "", previous state or ""}.
_WRITE = """
local raw = redis.call('GET', KEYS[1])
local wanted, allowed = ARGV[1], cjson.decode(ARGV[2])
local session, previous
if ARGV[2] == '"*"' then
  if raw then return {0, raw, cjson.decode(raw)['state']} end
  session = cjson.decode(ARGV[5])
  previous = ''
else
  if not raw then return {0, '', ''} end
  session = cjson.decode(raw)
  previous = session['state']
  local ok = previous == wanted
  for _, s in ipairs(allowed) do if s == previous then ok = true end end
  if not ok then return {0, raw, previous} end
  for k, v in pairs(cjson.decode(ARGV[5])) do session[k] = v end
end
session['state'] = wanted
session['updated_at'] = ARGV[3]
local encoded = cjson.encode(session)
redis.call('SET', KEYS[1], encoded)
redis.call('RPUSH', KEYS[2], ARGV[6])
if previous ~= '' then redis.call('ZREM', KEYS[3] .. previous, session['session_id']) end
redis.call('ZADD', KEYS[3] .. wanted, ARGV[4], session['session_id'])
if wanted == 'ended' then
  redis.call('ZADD', KEYS[4], ARGV[4], session['session_id'])
elseif wanted == 'cdr_sent' or wanted == 'cdr_received' then
  redis.call('ZREM', KEYS[4], session['session_id'])
end
-- the expiry index holds exactly the sessions that are reserved now
if wanted == 'reserved' and ARGV[7] ~= '' then
  redis.call('ZADD', KEYS[5], ARGV[7], session['session_id'])
elseif wanted ~= 'reserved' then
  redis.call('ZREM', KEYS[5], session['session_id'])
end
return {1, encoded, previous}
"""


class SessionLedger:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace) -> None:
        self._redis = redis
        self._keys = keys
        self._write = redis.register_script(_WRITE)

    def _session_key(self, session_id: str) -> str:
        return self._keys.key("sessions", "by-id", session_id)

    def _history_key(self, session_id: str) -> str:
        return self._keys.key("sessions", "history", session_id)

    @property
    def _state_prefix(self) -> str:
        return self._keys.key("sessions", "state", "")

    @property
    def _without_cdr(self) -> str:
        return self._keys.key("sessions", "without-cdr")

    @property
    def _reservations(self) -> str:
        return self._keys.key("sessions", "reservations")

    def _evse_key(self, evse_id: str) -> str:
        return self._keys.key("sessions", "by-evse", evse_id)

    async def _run(
        self, session_id: str, wanted: SessionState, allowed: Any, fields: dict[str, Any], note: str | None
    ) -> tuple[bool, Session | None, str]:
        now = _now()
        entry = orjson.dumps({"at": now, "state": wanted.value, "note": note})
        until = fields.get("reservation_until")
        ok, raw, previous = await self._write(
            keys=[
                self._session_key(session_id),
                self._history_key(session_id),
                self._state_prefix,
                self._without_cdr,
                self._reservations,
            ],
            args=[
                wanted.value,
                orjson.dumps(allowed),
                now,
                datetime.now(UTC).timestamp(),
                orjson.dumps(fields),
                entry,
                str(datetime.fromisoformat(until).timestamp()) if until else "",
            ],
        )
        session = Session.from_dict(orjson.loads(raw)) if raw else None
        return bool(ok), session, previous.decode() if isinstance(previous, bytes) else str(previous)

    async def create(self, session: Session, note: str | None = None) -> tuple[bool, Session]:
        """Record a new session (before any answer is sent). Returns (created, the stored session):
        a session that already exists is returned unchanged (the SessionID is taken)."""
        ok, stored, _ = await self._run(session.session_id, session.state, "*", session.as_dict(), note)
        assert stored is not None
        if ok and session.evse_id:
            await self._redis.zadd(self._evse_key(session.evse_id), {session.session_id: datetime.now(UTC).timestamp()})
        return ok, stored

    async def transition(
        self,
        session_id: str,
        to: SessionState,
        note: str | None = None,
        *,
        only_from: Iterable[SessionState] | None = None,
        **fields: Any,
    ) -> tuple[Session, SessionState | None]:
        """Move a session to ``to`` (setting ``fields``); returns (session, previous state).

        ``only_from`` narrows the states the machine allows (atomically, in the same script): an
        outcome that settles a request applies only while the session is still ``requested``.
        Raises UnknownSession, or InvalidTransition if the state machine does not allow it."""
        allowed_from = ALLOWED_FROM[to] if only_from is None else ALLOWED_FROM[to] & frozenset(only_from)
        allowed = sorted(s.value for s in allowed_from)
        if to is S.ENDED:
            fields.setdefault("ended_at", _now())
        ok, session, previous = await self._run(session_id, to, allowed, fields, note)
        if session is None:
            raise UnknownSession(session_id)
        if not ok:
            raise InvalidTransition(session_id, session.state, to)
        return session, SessionState(previous) if previous else None

    async def get(self, session_id: str) -> Session | None:
        raw = await self._redis.get(self._session_key(session_id))
        return Session.from_dict(orjson.loads(raw)) if raw else None

    async def history(self, session_id: str) -> list[dict[str, Any]]:
        return [orjson.loads(e) for e in await self._redis.lrange(self._history_key(session_id), 0, -1)]

    async def _many(self, ids: list[bytes]) -> list[Session]:
        if not ids:
            return []
        raws = await self._redis.mget([self._session_key(i.decode()) for i in ids])
        return [Session.from_dict(orjson.loads(r)) for r in raws if r]

    async def by_state(self, state: SessionState, limit: int = 100) -> list[Session]:
        """Most recently changed first."""
        return await self._many(await self._redis.zrevrange(self._state_prefix + state.value, 0, limit - 1))

    async def count_by_state(self) -> dict[str, int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for state in SessionState:
                pipe.zcard(self._state_prefix + state.value)
            counts = await pipe.execute()
        return {state.value: int(n) for state, n in zip(SessionState, counts, strict=True)}

    async def by_evse(self, evse_id: str, limit: int = 100) -> list[Session]:
        return await self._many(await self._redis.zrevrange(self._evse_key(evse_id), 0, limit - 1))

    async def without_cdr(self, older_than_seconds: float, limit: int = 1000) -> list[Session]:
        """Sessions that ended longer ago than ``older_than_seconds`` and still have no CDR."""
        cutoff = datetime.now(UTC).timestamp() - older_than_seconds
        return await self._many(await self._redis.zrangebyscore(self._without_cdr, "-inf", cutoff, 0, limit))

    async def count_without_cdr(self, older_than_seconds: float) -> int:
        """How many sessions ended longer ago than ``older_than_seconds`` and still have no CDR (metric)."""
        cutoff = datetime.now(UTC).timestamp() - older_than_seconds
        return int(await self._redis.zcount(self._without_cdr, "-inf", cutoff))

    async def ended_without_cdr_between(
        self, after: float, older_than_seconds: float, limit: int = 1000
    ) -> list[tuple[Session, float]]:
        """(session, end time as epoch s) of sessions without CDR that ended after ``after`` (epoch s)
        and longer ago than ``older_than_seconds``, oldest first: reconciliation walks this with a
        cursor, so a large backlog of already-reported sessions never hides a newer one."""
        cutoff = datetime.now(UTC).timestamp() - older_than_seconds
        pairs = await self._redis.zrangebyscore(self._without_cdr, f"({after}", cutoff, 0, limit, withscores=True)
        sessions = {s.session_id: s for s in await self._many([member for member, _ in pairs])}
        return [(sessions[m.decode()], float(score)) for m, score in pairs if m.decode() in sessions]

    async def in_state_since(self, state: SessionState, older_than_seconds: float, limit: int = 1000) -> list[Session]:
        """Sessions that have been in ``state`` longer than ``older_than_seconds``, oldest first."""
        cutoff = datetime.now(UTC).timestamp() - older_than_seconds
        return await self._many(
            await self._redis.zrangebyscore(self._state_prefix + state.value, "-inf", cutoff, 0, limit)
        )

    async def reservations_due(self, at: datetime | None = None, limit: int = 1000) -> list[Session]:
        """Reserved sessions whose ``reservation_until`` has passed (the expiry index)."""
        moment = (at or datetime.now(UTC)).timestamp()
        return await self._many(await self._redis.zrangebyscore(self._reservations, "-inf", moment, 0, limit))

    async def reschedule_reservation(self, session_id: str, until: datetime, note: str | None = None) -> Session:
        """Move the end of an active reservation (the CPO's backend shortened or extended it)."""
        # allowed from nothing but itself: only an active reservation can be moved
        ok, session, _ = await self._run(
            session_id,
            S.RESERVED,
            [],
            {"reservation_until": until.isoformat()},
            note or f"reservation until {until.isoformat()}",
        )
        if session is None:
            raise UnknownSession(session_id)
        if not ok:
            raise InvalidTransition(session_id, session.state, S.RESERVED)
        return session
