"""The EMP's CDR inbox (EMP role): exactly one charge detail record per SessionID, in Redis.

A CDR is stored once. The same CDR again (pushed twice, or pushed and then fetched with
GetChargeDetailRecords) is a ``duplicate``: acknowledged again, no second record, no second event for
billing. A *different* CDR for a SessionID that already has one is a ``conflict``: refused, the first
one stays. "The same" is the canonical JSON of the OICP body (sorted keys), so a CDR that travelled
through another node unchanged compares equal, whatever the key order.

Keys (one Lua script writes all of them, so a record never exists without its indexes)::

    cdr:in:records             hash SessionID -> {"cdr", "digest", "peer_id", "peer_key", "received_at",
                               "source", "session_known"}
    cdr:in:by-time             zset SessionID -> received at (epoch s)
    cdr:in:by-peer:<PEER>      zset SessionID -> received at, per CPO peer
    cdr:in:unknown-session     zset SessionID -> received at: CDRs of sessions the ledger did not know
    cdr:in:unannounced         set of SessionIDs stored but not yet published as cdr.received: a
                               repeat of such a CDR publishes it (at least once, never lost to a
                               broker outage between storing and publishing)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
import redis.asyncio as aioredis

from shared.stores.redis import KeySpace


class Stored(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


def digest_of(cdr: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(cdr, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class InboxCdr:
    session_id: str
    cdr: dict[str, Any]
    peer_id: str
    received_at: str
    source: str
    session_known: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "direction": "in",
            "peer_id": self.peer_id,
            "received_at": self.received_at,
            "source": self.source,
            "session_known": self.session_known,
            "cdr": self.cdr,
        }


def _decode(session_id: str, raw: bytes | str) -> InboxCdr:
    data = orjson.loads(raw)
    return InboxCdr(
        session_id=session_id,
        cdr=data["cdr"],
        peer_id=data["peer_id"],
        received_at=data["received_at"],
        source=data["source"],
        session_known=bool(data["session_known"]),
    )


# KEYS[1] records hash, KEYS[2] by-time zset, KEYS[3] by-peer zset, KEYS[4] unknown-session zset,
# KEYS[5] unannounced set.
# ARGV[1] SessionID, ARGV[2] record JSON, ARGV[3] digest, ARGV[4] score, ARGV[5] "1" if the session is unknown.
# Returns {outcome, the stored record JSON (for duplicate/conflict: the first one)}.
_STORE = """
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then
  local first = cjson.decode(existing)
  if first['digest'] == ARGV[3] then return {'duplicate', existing} end
  return {'conflict', existing}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
if ARGV[5] == '1' then redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1]) end
redis.call('SADD', KEYS[5], ARGV[1])
return {'stored', ARGV[2]}
"""


class CdrInbox:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace) -> None:
        self._redis = redis
        self._records = keys.key("cdr", "in", "records")
        self._by_time = keys.key("cdr", "in", "by-time")
        self._unknown = keys.key("cdr", "in", "unknown-session")
        self._unannounced = keys.key("cdr", "in", "unannounced")
        self._keys = keys
        self._store = redis.register_script(_STORE)

    def _by_peer(self, peer_key: str) -> str:
        return self._keys.key("cdr", "in", "by-peer", peer_key)

    async def store(
        self,
        cdr: dict[str, Any],
        *,
        peer_id: str,
        peer_key: str,
        received_at: datetime,
        source: str,
        session_known: bool,
    ) -> tuple[Stored, InboxCdr]:
        """Keep the CDR unless its SessionID has one: (stored | duplicate | conflict, the record kept)."""
        session_id = str(cdr["SessionID"])
        record = {
            "cdr": cdr,
            "digest": digest_of(cdr),
            "peer_id": peer_id,
            "peer_key": peer_key,
            "received_at": received_at.isoformat(),
            "source": source,
            "session_known": session_known,
        }
        outcome, raw = await self._store(
            keys=[self._records, self._by_time, self._by_peer(peer_key), self._unknown, self._unannounced],
            args=[
                session_id,
                orjson.dumps(record),
                record["digest"],
                received_at.timestamp(),
                "0" if session_known else "1",
            ],
        )
        return Stored(outcome.decode()), _decode(session_id, raw)

    async def unannounced(self, session_id: str) -> bool:
        """Stored, but its cdr.received event is not known to be published."""
        return bool(await self._redis.sismember(self._unannounced, session_id))

    async def announced(self, session_id: str) -> None:
        await self._redis.srem(self._unannounced, session_id)

    async def get(self, session_id: str) -> InboxCdr | None:
        raw = await self._redis.hget(self._records, session_id)
        return _decode(session_id, raw) if raw is not None else None

    async def _page(self, index: str, start: float | str, end: float | str, offset: int, limit: int) -> list[InboxCdr]:
        ids = [i.decode() for i in await self._redis.zrangebyscore(index, start, end, offset, limit)]
        if not ids:
            return []
        raws = await self._redis.hmget(self._records, ids)
        return [_decode(i, r) for i, r in zip(ids, raws, strict=True) if r is not None]

    async def by_time(self, from_: datetime | None, to: datetime | None, offset: int, limit: int) -> list[InboxCdr]:
        """CDRs received within [from_, to], oldest first."""
        return await self._page(self._by_time, _score(from_, "-inf"), _score(to, "+inf"), offset, limit)

    async def by_peer(
        self, peer_key: str, from_: datetime | None, to: datetime | None, offset: int, limit: int
    ) -> list[InboxCdr]:
        return await self._page(self._by_peer(peer_key), _score(from_, "-inf"), _score(to, "+inf"), offset, limit)

    async def unknown_sessions(self, offset: int, limit: int) -> list[InboxCdr]:
        """CDRs of sessions this node never saw (e.g. started offline), oldest first."""
        return await self._page(self._unknown, "-inf", "+inf", offset, limit)

    async def count(self) -> int:
        return int(await self._redis.zcard(self._by_time))

    async def count_unknown_sessions(self, since: datetime | None = None) -> int:
        return int(await self._redis.zcount(self._unknown, _score(since, "-inf"), "+inf"))


def _score(moment: datetime | None, default: str) -> float | str:
    return moment.timestamp() if moment is not None else default
