"""Per-peer delivery state in Redis: the coalescing outbox, what the peer holds, the sender lease
and the lane state.

The outbox of a (peer, operation) is a hash keyed by record (EvseID, …): a newer change overwrites
the older one, so the backlog is bounded by the number of records, never by time (latest wins). The
lane reads the record's current state when it sends, not the queued value. A sent record is removed
only if it was not overwritten meanwhile (compare-and-delete), so a change that arrives during a
request is never lost.

The ``known`` set holds the keys the peer has acknowledged holding: the lane sends ``insert`` for a
record the peer does not hold, ``update`` for one it does and ``delete`` only for one it holds, so a
peer with strict ActionType semantics (DIGEST §9.1, as this project's EMP nodes are) never gets a
conflict unless it lost data — and then the lane resyncs it with a ``fullLoad``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from shared.stores.redis import KeySpace, Leases

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
    failing_since: float | None
    synced_at: float | None
    resync_pending: str | None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class DeliveryStore:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace) -> None:
        self._redis = redis
        self._keys = keys
        self._ack = redis.register_script(_ACK_SENT)
        self._leases = Leases(redis)

    def _known_key(self, peer_key: str, operation: str) -> str:
        return self._keys.key("delivery", peer_key, operation, "known")

    @property
    def wake_channel(self) -> str:
        """Pub/sub channel that wakes the lanes of every replica after an enqueue."""
        return self._keys.key("delivery", "wake")

    async def enqueue(self, pending_keys: list[str], records: list[str], stamp: bytes) -> None:
        """Queue records (by key) in the outboxes; the stamp makes a re-queue visible to ack_sent."""
        if not pending_keys or not records:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in pending_keys:
                pipe.hset(key, mapping=dict.fromkeys(records, stamp))
            await pipe.execute()

    async def notify(self, operation: str) -> None:
        await self._redis.publish(self.wake_channel, operation)

    async def pending_snapshot(self, peer_key: str, operation: str) -> dict[bytes, bytes]:
        """The whole outbox (bounded by the number of records), taken before a resync."""
        return await self._redis.hgetall(self.pending_key(peer_key, operation))

    async def known(self, peer_key: str, operation: str, records: list[str]) -> list[bool]:
        if not records:
            return []
        return [bool(x) for x in await self._redis.smismember(self._known_key(peer_key, operation), records)]

    async def known_all(self, peer_key: str, operation: str) -> set[str]:
        return {k.decode() for k in await self._redis.smembers(self._known_key(peer_key, operation))}

    async def mark_known(self, peer_key: str, operation: str, held: list[str], gone: list[str]) -> None:
        key = self._known_key(peer_key, operation)
        async with self._redis.pipeline(transaction=True) as pipe:
            if held:
                pipe.sadd(key, *held)
            if gone:
                pipe.srem(key, *gone)
            await pipe.execute()

    async def replace_known(self, peer_key: str, operation: str, held: list[str]) -> None:
        """After a fullLoad the peer holds exactly these records."""
        key = self._known_key(peer_key, operation)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if held:
                pipe.sadd(key, *held)
            await pipe.execute()

    async def request_resync(self, peer_key: str, operation: str, reason: str) -> None:
        await self._redis.hset(self._state_key(peer_key, operation), mapping={"resync": reason})

    async def resync_reason(self, peer_key: str, operation: str, resync_after_seconds: float) -> str | None:
        """Why the lane must send a fullLoad next: never synced, a conflict, or failing for longer
        than ``resync_after_seconds`` (checked before every attempt, so a peer that comes back
        after a long outage is resynced by its first successful request)."""
        state = self._state_key(peer_key, operation)
        synced_at, reason, failing_since = await self._redis.hmget(state, ["synced_at", "resync", "failing_since"])
        if synced_at is None:
            return "first delivery to this peer"
        if reason:
            return reason.decode()
        if failing_since and time.time() - float(failing_since) > resync_after_seconds:
            return f"failing since {time.ctime(float(failing_since))}"
        return None

    async def record_resync(self, peer_key: str, operation: str) -> None:
        await self._redis.hset(self._state_key(peer_key, operation), mapping={"synced_at": time.time(), "resync": ""})

    async def forget(self, peer_key: str, operation: str) -> None:
        """Drop everything of a (peer, operation): outbox, known set, state (peer removed)."""
        await self._redis.delete(
            self.pending_key(peer_key, operation),
            self._known_key(peer_key, operation),
            self._state_key(peer_key, operation),
        )

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

    async def backlog(self, peer_key: str, operation: str) -> int:
        return int(await self._redis.hlen(self.pending_key(peer_key, operation)))

    async def acquire_lease(self, peer_key: str, operation: str, owner: str, ttl_seconds: float) -> bool:
        ttl_ms = int(ttl_seconds * 1000)
        return await self._leases.acquire(self._lease_key(peer_key, operation), owner, ttl_ms)

    async def release_lease(self, peer_key: str, operation: str, owner: str) -> None:
        await self._leases.release(self._lease_key(peer_key, operation), owner)

    async def after_sent(
        self, peer_key: str, operation: str, held: list[str], gone: list[str], sent: dict[bytes, bytes]
    ) -> None:
        """After an acknowledged request, in one round trip: what the peer now holds, the sent records
        out of the outbox (unless changed meanwhile), and the lane's last success."""
        known = self._known_key(peer_key, operation)
        args: list[bytes] = []
        for field, value in sent.items():
            args += [field, value]
        async with self._redis.pipeline(transaction=True) as pipe:
            if held:
                pipe.sadd(known, *held)
            if gone:
                pipe.srem(known, *gone)
            if args:
                await self._ack(keys=[self.pending_key(peer_key, operation)], args=args, client=pipe)
            pipe.hset(
                self._state_key(peer_key, operation),
                mapping={
                    "last_success": time.time(),
                    "consecutive_failures": 0,
                    "next_attempt": "",
                    "failing_since": "",
                },
            )
            await pipe.execute()

    async def record_success(self, peer_key: str, operation: str) -> None:
        await self._redis.hset(
            self._state_key(peer_key, operation),
            mapping={"last_success": time.time(), "consecutive_failures": 0, "next_attempt": "", "failing_since": ""},
        )

    async def record_failure(self, peer_key: str, operation: str, error: str, next_attempt: float) -> tuple[int, float]:
        """Count a failed attempt; returns (consecutive failures, start of the failing streak)."""
        key = self._state_key(peer_key, operation)
        now = time.time()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "consecutive_failures", 1)
            pipe.hsetnx(key, "failing_since", now)
            pipe.hset(key, mapping={"last_error": error[:500], "last_error_at": now, "next_attempt": next_attempt})
            pipe.hget(key, "failing_since")
            failures, _, _, since = await pipe.execute()
        # hsetnx does not replace the "" a success leaves behind
        if not since:
            await self._redis.hset(key, "failing_since", now)
            since = now
        return int(failures), float(since)

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
            failing_since=num("failing_since"),
            synced_at=num("synced_at"),
            resync_pending=raw.get("resync") or (None if raw.get("synced_at") else "first delivery to this peer"),
        )
