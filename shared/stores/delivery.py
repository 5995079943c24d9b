"""Per-peer delivery state in Redis: the coalescing outbox, the sender lease and the lane state.

The outbox of a (peer, operation) is a hash keyed by record (EvseID): a newer change overwrites the
older one, so the backlog is bounded by the number of EVSEs, never by time (latest status wins).
A sent record is removed only if it was not overwritten meanwhile (compare-and-delete), so a change
that arrives during a request is never lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from shared.stores.redis import KeySpace

_ACK_SENT = """
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    removed = removed + 1
  end
end
return removed
"""

# Take or renew the lease: only its holder may renew it.
_ACQUIRE_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class LaneState:
    peer_id: str
    operation: str
    backlog: int
    last_success: float | None
    last_error: str | None
    last_error_at: float | None
    next_attempt: float | None
    consecutive_failures: int

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class DeliveryStore:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace) -> None:
        self._redis = redis
        self._keys = keys
        self._ack = redis.register_script(_ACK_SENT)
        self._acquire = redis.register_script(_ACQUIRE_LEASE)
        self._release = redis.register_script(_RELEASE_LEASE)

    def pending_key(self, peer_key: str, operation: str) -> str:
        return self._keys.key("delivery", peer_key, operation, "pending")

    def _state_key(self, peer_key: str, operation: str) -> str:
        return self._keys.key("delivery", peer_key, operation, "state")

    def _lease_key(self, peer_key: str, operation: str) -> str:
        return self._keys.key("delivery", peer_key, operation, "lease")

    async def take_batch(self, peer_key: str, operation: str, limit: int) -> dict[bytes, bytes]:
        """Up to ``limit`` pending records (field → value), without removing them."""
        key = self.pending_key(peer_key, operation)
        batch: dict[bytes, bytes] = {}
        cursor = 0
        while True:
            cursor, chunk = await self._redis.hscan(key, cursor, count=limit)
            for field, value in chunk.items():
                if len(batch) >= limit:
                    return batch
                batch[field] = value
            if cursor == 0:
                return batch

    async def ack_sent(self, peer_key: str, operation: str, sent: dict[bytes, bytes]) -> int:
        if not sent:
            return 0
        args: list[bytes] = []
        for field, value in sent.items():
            args += [field, value]
        return int(await self._ack(keys=[self.pending_key(peer_key, operation)], args=args))

    async def seed(self, peer_key: str, operation: str, records: dict[str, bytes]) -> bool:
        """Queue a new peer's initial state once: fields already pending (newer) are kept.
        Returns False if the peer had been seeded before."""
        state = self._state_key(peer_key, operation)
        if await self._redis.hexists(state, "seeded_at"):
            return False
        async with self._redis.pipeline(transaction=True) as pipe:
            for field, value in records.items():
                pipe.hsetnx(self.pending_key(peer_key, operation), field, value)
            pipe.hset(state, "seeded_at", time.time())
            await pipe.execute()
        return True

    async def backlog(self, peer_key: str, operation: str) -> int:
        return int(await self._redis.hlen(self.pending_key(peer_key, operation)))

    async def acquire_lease(self, peer_key: str, operation: str, owner: str, ttl_seconds: float) -> bool:
        ttl_ms = int(ttl_seconds * 1000)
        return bool(await self._acquire(keys=[self._lease_key(peer_key, operation)], args=[owner, ttl_ms]))

    async def release_lease(self, peer_key: str, operation: str, owner: str) -> None:
        await self._release(keys=[self._lease_key(peer_key, operation)], args=[owner])

    async def record_success(self, peer_key: str, operation: str) -> None:
        await self._redis.hset(
            self._state_key(peer_key, operation),
            mapping={"last_success": time.time(), "consecutive_failures": 0, "next_attempt": ""},
        )

    async def record_failure(self, peer_key: str, operation: str, error: str, next_attempt: float) -> int:
        key = self._state_key(peer_key, operation)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "consecutive_failures", 1)
            pipe.hset(
                key,
                mapping={"last_error": error[:500], "last_error_at": time.time(), "next_attempt": next_attempt},
            )
            failures, _ = await pipe.execute()
        return int(failures)

    async def state(self, peer_id: str, peer_key: str, operation: str) -> LaneState:
        raw = {
            k.decode(): v.decode() for k, v in (await self._redis.hgetall(self._state_key(peer_key, operation))).items()
        }

        def num(name: str) -> float | None:
            return float(raw[name]) if raw.get(name) else None

        return LaneState(
            peer_id=peer_id,
            operation=operation,
            backlog=await self.backlog(peer_key, operation),
            last_success=num("last_success"),
            last_error=raw.get("last_error") or None,
            last_error_at=num("last_error_at"),
            next_attempt=num("next_attempt"),
            consecutive_failures=int(raw.get("consecutive_failures") or 0),
        )
