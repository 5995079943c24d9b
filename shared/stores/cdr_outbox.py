"""The CPO role's CDR store and outbox: every CDR the charge point backend submitted, kept with its
OICP body exactly as submitted, until (and after) the owning EMP acknowledged it.

ARCHITECTURE §5: CDRs are never coalesced or dropped. One CDR per SessionID (DIGEST §9.9): the same
CDR again is idempotent, a different one for a SessionID that has one is a conflict and not stored.

States: ``pending`` (on its peer's due queue) → ``delivered`` (the EMP acknowledged: OICP's
"forwarded") or ``parked`` (after ``cdr.max_attempts`` failed deliveries, or a definitive refusal by
the EMP) → ``pending`` again on replay. A CDR leaves the due queue only when the EMP acknowledged it
(or it is parked), so a worker killed mid-delivery leaves it due and its successor sends it again; the
EMP deduplicates by SessionID.

Every write is one Lua script (check the state, write the record, move the indexes), so replicas and
a replay racing a delivery never leave a CDR in two states. Reads never scan keys; they use the
indexes (all sorted sets, score = epoch milliseconds):

* ``due:<peer>`` - pending CDRs of a peer, score = next attempt (the submission time at first);
* ``idx:<peer>:<operator|*>:<forwarded *|1|0>`` - by submission time, for GetChargeDetailRecords
  (per peer; per peer and OperatorID; each also split by forwarded state), so every filter
  combination is one ``ZRANGEBYSCORE … LIMIT`` plus one ``ZCOUNT``;
* ``all`` (submission time), ``pending`` (submission time), ``parked`` and ``parked-by:<peer>``
  (parking time), ``unknown`` (submission time of CDRs whose session the ledger did not know).

Times are stored with millisecond precision: integer milliseconds are exact as sorted-set scores (a
double), so an inclusive range ``[From, To]`` whose bounds are a CDR's own submission time finds it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson
import redis.asyncio as aioredis

from shared.oicp.ids import normalize_id
from shared.stores.redis import KeySpace

#: The DeliveryStore operation name of the CDR lanes (lease and lane state per peer).
OPERATION = "ChargeDetailRecord"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ALL = "*"


class CdrState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"  # the EMP acknowledged it: "forwarded" in GetChargeDetailRecords
    PARKED = "parked"


class SubmitOutcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # the identical CDR was stored already: nothing changed
    CONFLICT = "conflict"  # a different CDR has this SessionID: refused, nothing changed


def _micros(value: datetime) -> int:
    if value.tzinfo is None:  # OICP times are aware; a naive bound is read as UTC rather than refused
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(microseconds=1)


def to_ms(value: datetime) -> int:
    """Epoch milliseconds (truncated): the precision of every stored time and index score."""
    return _micros(value) // 1000


def _ceil_ms(value: datetime) -> int:
    return -(-_micros(value) // 1000)


def _iso(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")


def cdr_digest(cdr: dict[str, Any]) -> str:
    """Identity of a CDR body regardless of member order (a resubmission may order members differently)."""
    return hashlib.sha256(orjson.dumps(cdr, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass
class CdrEntry:
    """One CDR to store: its OICP body as submitted and where it goes."""

    cdr: dict[str, Any]
    peer_id: str
    operator_id: str  # the node's own OperatorID of the CDR's EVSE (the path of the delivery)
    provider_id: str | None = None
    session_known: bool = True
    submitted_at: datetime | None = None  # default: now
    source: str = "submit"

    @property
    def session_id(self) -> str:
        return str(self.cdr["SessionID"])


@dataclass
class Submitted:
    outcome: SubmitOutcome
    session_id: str
    submitted_at: str  # of the stored CDR (the earlier one for a duplicate or a conflict)


@dataclass
class OutboxCdr:
    """A stored CDR with its delivery state (what ``GET /cdrs/{session_id}`` shows)."""

    session_id: str
    cdr: dict[str, Any]
    peer_id: str
    peer_key: str
    operator_id: str
    provider_id: str | None
    evse_id: str | None
    state: CdrState
    submitted_at: str
    attempts: int = 0
    last_error: str | None = None
    last_error_at: str | None = None
    next_attempt: str | None = None
    delivered_at: str | None = None
    parked_at: str | None = None
    parked_reason: str | None = None
    session_known: bool = True
    source: str = "submit"
    replays: int = 0
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def forwarded(self) -> bool:
        return self.state is CdrState.DELIVERED

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "extra"}
        data["state"] = self.state.value
        data["forwarded"] = self.forwarded
        return data

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> OutboxCdr:
        data = {k.decode(): v.decode() for k, v in raw.items()}

        def opt(name: str) -> str | None:
            return data.get(name) or None

        return cls(
            session_id=data["session_id"],
            cdr=orjson.loads(data["body"]),
            peer_id=data["peer_id"],
            peer_key=data["peer_key"],
            operator_id=data["operator_id"],
            provider_id=opt("provider_id"),
            evse_id=opt("evse_id"),
            state=CdrState(data["state"]),
            submitted_at=data["submitted_at"],
            attempts=int(data.get("attempts") or 0),
            last_error=opt("last_error"),
            last_error_at=opt("last_error_at"),
            next_attempt=opt("next_attempt"),
            delivered_at=opt("delivered_at"),
            parked_at=opt("parked_at"),
            parked_reason=opt("parked_reason"),
            session_known=data.get("session_known", "1") == "1",
            source=data.get("source") or "submit",
            replays=int(data.get("replays") or 0),
        )


# Shared by the scripts: index keys from the outbox prefix (KEYS[2]) and the record's own fields, so
# a caller needs no extra round trip to learn a CDR's peer and operator before moving it.
_LUA_KEYS = """
local rec, prefix = KEYS[1], KEYS[2]
local function idx(peer, op, fwd) return prefix .. 'idx:' .. peer .. ':' .. op .. ':' .. fwd end
local function due(peer) return prefix .. 'due:' .. peer end
"""

# ARGV[1] SessionID, ARGV[2] digest, ARGV[3] score (submission, epoch ms), ARGV[4] session known 1/0,
# ARGV[5] peer key, ARGV[6] operator key, ARGV[7..] field/value pairs of the record.
# Returns {1 stored | 0 identical one stored | -1 a different one stored, submitted_at of the stored one}.
_SUBMIT = (
    _LUA_KEYS
    + """
local existing = redis.call('HMGET', rec, 'digest', 'submitted_at')
if existing[1] then
  if existing[1] == ARGV[2] then return {0, existing[2]} end
  return {-1, existing[2]}
end
local sid, score, peer, op = ARGV[1], ARGV[3], ARGV[5], ARGV[6]
redis.call('HSET', rec, unpack(ARGV, 7))
redis.call('ZADD', due(peer), score, sid)
redis.call('ZADD', prefix .. 'all', score, sid)
redis.call('ZADD', prefix .. 'pending', score, sid)
for _, o in ipairs({'*', op}) do
  redis.call('ZADD', idx(peer, o, '*'), score, sid)
  redis.call('ZADD', idx(peer, o, '0'), score, sid)
end
if ARGV[4] == '0' then redis.call('ZADD', prefix .. 'unknown', score, sid) end
return {1, ''}
"""
)

# ARGV[1] SessionID, ARGV[2] delivered_at (ISO). Delivered from pending, or from parked (a replay
# and a late acknowledgement may cross). Returns 1 if it moved, 0 if unknown or delivered already.
_DELIVERED = (
    _LUA_KEYS
    + """
local f = redis.call('HMGET', rec, 'state', 'peer_key', 'op_key', 'score')
local state, peer, op, score, sid = f[1], f[2], f[3], f[4], ARGV[1]
if not state or state == 'delivered' then return 0 end
redis.call('HSET', rec, 'state', 'delivered', 'delivered_at', ARGV[2], 'next_attempt', '', 'next_ms', '')
redis.call('ZREM', due(peer), sid)
redis.call('ZREM', prefix .. 'pending', sid)
redis.call('ZREM', prefix .. 'parked', sid)
redis.call('ZREM', prefix .. 'parked-by:' .. peer, sid)
for _, o in ipairs({'*', op}) do
  redis.call('ZREM', idx(peer, o, '0'), sid)
  redis.call('ZADD', idx(peer, o, '1'), score, sid)
end
return 1
"""
)

_PARK_BODY = """
local function park(sid, peer, reason, now_ms, now_iso)
  redis.call('HSET', rec, 'state', 'parked', 'parked_at', now_iso, 'parked_reason', reason,
             'next_attempt', '', 'next_ms', '')
  redis.call('ZREM', due(peer), sid)
  redis.call('ZREM', prefix .. 'pending', sid)
  redis.call('ZADD', prefix .. 'parked', now_ms, sid)
  redis.call('ZADD', prefix .. 'parked-by:' .. peer, now_ms, sid)
end
"""

# ARGV[1] SessionID, ARGV[2] error, ARGV[3] next attempt (epoch ms), ARGV[4] its ISO text,
# ARGV[5] park once attempts reach this (0: never), ARGV[6] now (epoch ms), ARGV[7] now (ISO).
# Only a pending CDR counts a failure. Returns {attempts, 1 if parked now} ({-1, 0}: not pending).
_FAILED = (
    _LUA_KEYS
    + _PARK_BODY
    + """
local f = redis.call('HMGET', rec, 'state', 'peer_key')
local state, peer, sid = f[1], f[2], ARGV[1]
if state ~= 'pending' then return {-1, 0} end
local attempts = redis.call('HINCRBY', rec, 'attempts', 1)
redis.call('HSET', rec, 'last_error', ARGV[2], 'last_error_at', ARGV[7])
local park_after = tonumber(ARGV[5])
if park_after > 0 and attempts >= park_after then
  park(sid, peer, ARGV[2], ARGV[6], ARGV[7])
  return {attempts, 1}
end
redis.call('HSET', rec, 'next_attempt', ARGV[4], 'next_ms', ARGV[3])
redis.call('ZADD', due(peer), ARGV[3], sid)
return {attempts, 0}
"""
)

# ARGV[1] SessionID, ARGV[2] reason, ARGV[3] now (epoch ms), ARGV[4] now (ISO), ARGV[5] 1 if the
# refused delivery counts as an attempt. Only a pending CDR is parked. Returns attempts, -1 if not.
_PARK = (
    _LUA_KEYS
    + _PARK_BODY
    + """
local f = redis.call('HMGET', rec, 'state', 'peer_key')
local state, peer, sid = f[1], f[2], ARGV[1]
if state ~= 'pending' then return -1 end
local attempts = tonumber(redis.call('HGET', rec, 'attempts') or '0')
if ARGV[5] == '1' then attempts = redis.call('HINCRBY', rec, 'attempts', 1) end
redis.call('HSET', rec, 'last_error', ARGV[2], 'last_error_at', ARGV[4])
park(sid, peer, ARGV[2], ARGV[3], ARGV[4])
return attempts
"""
)

# ARGV[1] SessionID, ARGV[2] only this peer ('' = any), ARGV[3] now (epoch ms), ARGV[4] now (ISO).
# A parked CDR becomes pending, due now, attempts reset. Returns the peer key if replayed, else ''.
_REPLAY = (
    _LUA_KEYS
    + """
local f = redis.call('HMGET', rec, 'state', 'peer_key', 'score')
local state, peer, score, sid = f[1], f[2], f[3], ARGV[1]
if state ~= 'parked' then
  -- a stale index entry (cannot happen through these scripts; cheap to heal)
  if not state or state == 'delivered' then redis.call('ZREM', prefix .. 'parked', sid) end
  return ''
end
if ARGV[2] ~= '' and peer ~= ARGV[2] then return '' end
redis.call('HSET', rec, 'state', 'pending', 'attempts', 0, 'next_attempt', ARGV[4], 'next_ms', ARGV[3],
           'parked_at', '', 'source', 'replay')
redis.call('HINCRBY', rec, 'replays', 1)
redis.call('ZREM', prefix .. 'parked', sid)
redis.call('ZREM', prefix .. 'parked-by:' .. peer, sid)
redis.call('ZADD', prefix .. 'pending', score, sid)
redis.call('ZADD', due(peer), ARGV[3], sid)
return peer
"""
)

_CHUNK = 500  # SessionIDs per pipeline round trip


class CdrOutbox:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace) -> None:
        self._redis = redis
        self._keys = keys
        self._prefix = keys.key("cdr", "out", "")
        self._submit = redis.register_script(_SUBMIT)
        self._delivered = redis.register_script(_DELIVERED)
        self._failed = redis.register_script(_FAILED)
        self._park = redis.register_script(_PARK)
        self._replay = redis.register_script(_REPLAY)

    # ---- keys ---------------------------------------------------------------------------------

    def _rec(self, session_id: str) -> str:
        return f"{self._prefix}rec:{session_id}"

    def _due(self, peer_key: str) -> str:
        return f"{self._prefix}due:{peer_key}"

    def _idx(self, peer_key: str, operator: str | None, forwarded: bool | None) -> str:
        op = normalize_id(operator) if operator else _ALL
        fwd = _ALL if forwarded is None else ("1" if forwarded else "0")
        return f"{self._prefix}idx:{peer_key}:{op}:{fwd}"

    def _index(self, name: str) -> str:
        return f"{self._prefix}{name}"

    def _script_keys(self, session_id: str) -> list[str]:
        return [self._rec(session_id), self._prefix]

    # ---- writes -------------------------------------------------------------------------------

    def _submit_args(self, entry: CdrEntry) -> tuple[list[str], list[Any]]:
        sid = entry.session_id
        ms = to_ms(entry.submitted_at or datetime.now(UTC))
        peer_key, op_key = normalize_id(entry.peer_id), normalize_id(entry.operator_id)
        record = {
            "session_id": sid,
            "body": orjson.dumps(entry.cdr),
            "digest": cdr_digest(entry.cdr),
            "peer_id": entry.peer_id,
            "peer_key": peer_key,
            "operator_id": entry.operator_id,
            "op_key": op_key,
            "provider_id": entry.provider_id or "",
            "evse_id": str(entry.cdr.get("EvseID") or ""),
            "state": CdrState.PENDING.value,
            "attempts": 0,
            "score": ms,
            "submitted_at": _iso(ms),
            "next_attempt": _iso(ms),
            "next_ms": ms,
            "session_known": "1" if entry.session_known else "0",
            "source": entry.source,
            # set once cdr.submitted is published: a repeat of a CDR stored while the broker was
            # down publishes it then (at least once, never lost between storing and publishing)
            "announced": "0",
        }
        args: list[Any] = [sid, record["digest"], ms, record["session_known"], peer_key, op_key]
        for name, value in record.items():
            args += [name, value]
        return self._script_keys(sid), args

    @staticmethod
    def _submitted(session_id: str, result: list[Any], fallback: str) -> Submitted:
        code, at = int(result[0]), result[1]
        at_text = at.decode() if isinstance(at, bytes) else str(at)
        outcome = {1: SubmitOutcome.STORED, 0: SubmitOutcome.DUPLICATE, -1: SubmitOutcome.CONFLICT}[code]
        return Submitted(outcome, session_id, at_text or fallback)

    async def submit(self, entry: CdrEntry) -> Submitted:
        """Store a CDR and queue it for its peer, unless its SessionID has one already (then nothing
        changes: ``DUPLICATE`` if it is the same CDR, ``CONFLICT`` if it differs)."""
        keys, args = self._submit_args(entry)
        result = await self._submit(keys=keys, args=args)
        return self._submitted(entry.session_id, result, _iso(int(args[2])))

    async def submit_many(self, entries: Iterable[CdrEntry]) -> list[Submitted]:
        """``submit`` for many CDRs, pipelined (imports, tests); each CDR is still its own atomic write."""
        results: list[Submitted] = []
        batch = list(entries)
        for start in range(0, len(batch), _CHUNK):
            chunk = batch[start : start + _CHUNK]
            calls = [self._submit_args(e) for e in chunk]
            async with self._redis.pipeline(transaction=False) as pipe:
                for keys, args in calls:
                    await self._submit(keys=keys, args=args, client=pipe)
                raw = await pipe.execute()
            results += [
                self._submitted(e.session_id, r, _iso(int(c[1][2]))) for e, r, c in zip(chunk, raw, calls, strict=True)
            ]
        return results

    async def unannounced(self, session_id: str) -> bool:
        """Stored, but cdr.submitted not published yet."""
        return await self._redis.hget(self._rec(session_id), "announced") == b"0"

    async def announced(self, session_id: str) -> None:
        await self._redis.hset(self._rec(session_id), "announced", "1")

    async def mark_delivered(self, session_id: str, at: datetime | None = None) -> bool:
        """The EMP acknowledged the CDR: off the due queue, forwarded. False if unknown or done already."""
        ms = to_ms(at or datetime.now(UTC))
        return bool(await self._delivered(keys=self._script_keys(session_id), args=[session_id, _iso(ms)]))

    async def record_failure(
        self, session_id: str, error: str, next_attempt: datetime, *, park_after: int = 0
    ) -> tuple[int, bool]:
        """A failed delivery: attempts + 1 and due again at ``next_attempt``, or parked once the attempts
        reach ``park_after`` (0: never), in one step. Returns (attempts, parked now); attempts is -1
        when the CDR is not pending (delivered or parked meanwhile: nothing changed)."""
        now = to_ms(datetime.now(UTC))
        next_ms = to_ms(next_attempt)
        attempts, parked = await self._failed(
            keys=self._script_keys(session_id),
            args=[session_id, error[:1000], next_ms, _iso(next_ms), park_after, now, _iso(now)],
        )
        return int(attempts), bool(parked)

    async def park(self, session_id: str, reason: str, *, attempted: bool = True) -> int | None:
        """Park a pending CDR at once (the EMP refused it for good); ``attempted``: the refused delivery
        counts as an attempt. Returns the attempts, None if the CDR was not pending."""
        now = to_ms(datetime.now(UTC))
        attempts = int(
            await self._park(
                keys=self._script_keys(session_id),
                args=[session_id, reason[:1000], now, _iso(now), "1" if attempted else "0"],
            )
        )
        return None if attempts < 0 else attempts

    async def replay(self, session_ids: list[str] | None = None, peer_key: str | None = None) -> dict[str, int]:
        """Parked CDRs back to pending, due now, attempts reset: the given SessionIDs (of ``peer_key``
        if given), or every parked one (of ``peer_key``). Returns peer key → CDRs replayed."""
        now = to_ms(datetime.now(UTC))
        only = normalize_id(peer_key) if peer_key else ""
        replayed: dict[str, int] = {}

        async def run(ids: list[str]) -> int:
            async with self._redis.pipeline(transaction=False) as pipe:
                for sid in ids:
                    await self._replay(keys=self._script_keys(sid), args=[sid, only, now, _iso(now)], client=pipe)
                peers = await pipe.execute()
            moved = 0
            for peer in peers:
                if peer:
                    key = peer.decode() if isinstance(peer, bytes) else str(peer)
                    replayed[key] = replayed.get(key, 0) + 1
                    moved += 1
            return moved

        if session_ids is not None:
            unique = list(dict.fromkeys(session_ids))
            for start in range(0, len(unique), _CHUNK):
                await run(unique[start : start + _CHUNK])
            return replayed
        index = self._index(f"parked-by:{only}") if only else self._index("parked")
        # Each replayed CDR leaves the index, so the head of the index is always the next chunk; a
        # chunk that moves nothing (only entries the script declined) ends the loop.
        seen: set[bytes] = set()
        while True:
            chunk = [m for m in await self._redis.zrange(index, 0, _CHUNK - 1) if m not in seen]
            if not chunk:
                return replayed
            seen.update(chunk)
            await run([m.decode() for m in chunk])

    # ---- the delivery lanes -------------------------------------------------------------------

    async def due(self, peer_key: str, now: datetime | None = None, limit: int = 100) -> list[OutboxCdr]:
        """Pending CDRs of a peer due at ``now``, earliest due first (a first attempt is due at its
        submission, so new CDRs go in submission order)."""
        ids = await self._redis.zrangebyscore(
            self._due(peer_key), "-inf", to_ms(now or datetime.now(UTC)), start=0, num=limit
        )
        records = await self._many(ids)
        return [r for r in records if r.state is CdrState.PENDING]

    async def next_due(self, peer_key: str) -> datetime | None:
        """When the peer's earliest pending CDR is due, None if it has none."""
        head = await self._redis.zrange(self._due(peer_key), 0, 0, withscores=True)
        return _EPOCH + timedelta(milliseconds=int(head[0][1])) if head else None

    # ---- look-ups -----------------------------------------------------------------------------

    async def get(self, session_id: str) -> OutboxCdr | None:
        raw = await self._redis.hgetall(self._rec(session_id))
        return OutboxCdr.from_hash(raw) if raw else None

    async def _many(self, ids: Iterable[bytes | str]) -> list[OutboxCdr]:
        names = [i.decode() if isinstance(i, bytes) else i for i in ids]
        if not names:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for sid in names:
                pipe.hgetall(self._rec(sid))
            raws = await pipe.execute()
        return [OutboxCdr.from_hash(raw) for raw in raws if raw]

    async def _range(
        self, index: str, from_: datetime | None, to: datetime | None, offset: int, limit: int
    ) -> tuple[list[bytes], int]:
        low: int | str = _ceil_ms(from_) if from_ else "-inf"
        high: int | str = to_ms(to) if to else "+inf"
        if isinstance(low, int) and isinstance(high, int) and low > high:
            return [], 0
        async with self._redis.pipeline(transaction=False) as pipe:
            if limit > 0:
                pipe.zrangebyscore(index, low, high, start=max(0, offset), num=limit)
            pipe.zcount(index, low, high)
            result = await pipe.execute()
        return (result[0] if limit > 0 else []), int(result[-1])

    async def by_peer(
        self,
        peer_key: str,
        from_: datetime | None = None,
        to: datetime | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> list[OutboxCdr]:
        """A page of a peer's CDRs submitted within [from_, to], in submission order."""
        ids, _ = await self._range(self._idx(normalize_id(peer_key), None, None), from_, to, offset, limit)
        return await self._many(ids)

    async def count_by_peer(self, peer_key: str, from_: datetime | None = None, to: datetime | None = None) -> int:
        _, total = await self._range(self._idx(normalize_id(peer_key), None, None), from_, to, 0, 0)
        return total

    async def by_time(
        self, from_: datetime | None = None, to: datetime | None = None, offset: int = 0, limit: int = 100
    ) -> list[OutboxCdr]:
        """A page of all CDRs submitted within [from_, to], in submission order."""
        ids, _ = await self._range(self._index("all"), from_, to, offset, limit)
        return await self._many(ids)

    async def count_by_time(self, from_: datetime | None = None, to: datetime | None = None) -> int:
        _, total = await self._range(self._index("all"), from_, to, 0, 0)
        return total

    async def _page_of(self, index: str, offset: int, limit: int) -> list[OutboxCdr]:
        if limit <= 0:
            return []
        return await self._many(await self._redis.zrange(index, max(0, offset), max(0, offset) + limit - 1))

    async def parked(self, offset: int = 0, limit: int = 100) -> list[OutboxCdr]:
        """A page of the parked CDRs, oldest parked first (``count_parked`` is the total)."""
        return await self._page_of(self._index("parked"), offset, limit)

    async def unknown_sessions(self, offset: int = 0, limit: int = 100) -> list[OutboxCdr]:
        """A page of the CDRs submitted for a SessionID the CPO ledger did not know, in submission
        order (``count_unknown_sessions`` is the total)."""
        return await self._page_of(self._index("unknown"), offset, limit)

    async def count_parked(self, peer_key: str | None = None) -> int:
        index = self._index(f"parked-by:{normalize_id(peer_key)}") if peer_key else self._index("parked")
        return int(await self._redis.zcard(index))

    async def count_pending(self, peer_key: str | None = None) -> int:
        """CDRs not delivered yet and not parked (of one peer: its lane's backlog)."""
        index = self._due(normalize_id(peer_key)) if peer_key else self._index("pending")
        return int(await self._redis.zcard(index))

    async def count_unknown_sessions(self, since: datetime | None = None) -> int:
        """CDRs without a known session (submitted since ``since``, if given)."""
        low = _ceil_ms(since) if since else "-inf"
        return int(await self._redis.zcount(self._index("unknown"), low, "+inf"))

    # ---- GetChargeDetailRecords ----------------------------------------------------------------

    async def query(
        self,
        peer_key: str,
        from_: datetime,
        to: datetime,
        *,
        session_ids: list[str] | None,
        operator_id: str | None,
        forwarded: bool | None,
        offset: int,
        limit: int,
    ) -> tuple[list[dict[str, Any]], int]:
        """The OICP bodies (as submitted) of the CDRs owned by ``peer_key`` submitted within
        [from_, to] (inclusive), optionally only these SessionIDs / this OperatorID / this forwarded
        state, in submission order: the page ``offset .. offset+limit`` and the total count."""
        peer_key = normalize_id(peer_key)
        if session_ids is not None:
            return await self._query_ids(peer_key, from_, to, session_ids, operator_id, forwarded, offset, limit)
        ids, total = await self._range(self._idx(peer_key, operator_id, forwarded), from_, to, offset, limit)
        if not ids:
            return [], total
        async with self._redis.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hget(self._rec(sid.decode()), "body")
            bodies = await pipe.execute()
        return [orjson.loads(b) for b in bodies if b], total

    async def _query_ids(
        self,
        peer_key: str,
        from_: datetime,
        to: datetime,
        session_ids: list[str],
        operator_id: str | None,
        forwarded: bool | None,
        offset: int,
        limit: int,
    ) -> tuple[list[dict[str, Any]], int]:
        """A SessionID list is looked up directly (at most 2000 per OICP request), then filtered."""
        low, high = _ceil_ms(from_), to_ms(to)
        op_key = normalize_id(operator_id) if operator_id else None
        unique = list(dict.fromkeys(session_ids))
        fields = ("peer_key", "op_key", "state", "score", "body")
        async with self._redis.pipeline(transaction=False) as pipe:
            for sid in unique:
                pipe.hmget(self._rec(sid), fields)
            rows = await pipe.execute()
        matches: list[tuple[int, str, bytes]] = []
        for sid, (peer, op, state, score, body) in zip(unique, rows, strict=True):
            if body is None or peer.decode() != peer_key:
                continue  # unknown, or another peer's CDR: never shown
            if op_key is not None and op.decode() != op_key:
                continue
            if forwarded is not None and (state.decode() == CdrState.DELIVERED.value) != forwarded:
                continue
            ms = int(score)
            if low <= ms <= high:
                matches.append((ms, sid, body))
        matches.sort(key=lambda m: (m[0], m[1]))
        page = matches[max(0, offset) : max(0, offset) + max(0, limit)]
        return [orjson.loads(body) for _, _, body in page], len(matches)
