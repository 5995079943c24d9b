"""The latest peer probe result per peer (shared/peers/probe.py), in Redis: whoever ran it (the periodic
job of a sessions worker, or the gateway on demand), every gateway replica reads and exports the same.

One hash, field ``<role>:<peer key>`` → the result as JSON; and the lease that lets one process of the
node run the periodic probes.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis

from shared.stores.redis import KeySpace, Leases


class ProbeStore:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace) -> None:
        self._redis = redis
        self._results = keys.key("probes", "results")
        self._lease = keys.key("probes", "lease")
        self._leases = Leases(redis)

    @staticmethod
    def field(role: str, peer_key: str) -> str:
        return f"{role}:{peer_key}"

    async def save(self, role: str, peer_key: str, result: dict[str, Any]) -> None:
        await self._redis.hset(self._results, self.field(role, peer_key), orjson.dumps(result))

    async def get(self, role: str, peer_key: str) -> dict[str, Any] | None:
        raw = await self._redis.hget(self._results, self.field(role, peer_key))
        return orjson.loads(raw) if raw else None

    async def all(self) -> dict[str, dict[str, Any]]:
        """Every stored result by ``<role>:<peer key>`` (peers removed since included: filter by the registry)."""
        return {k.decode(): orjson.loads(v) for k, v in (await self._redis.hgetall(self._results)).items()}

    async def forget(self, keep: set[str]) -> None:
        """Drop the results of peers no longer registered (fields not in ``keep``)."""
        stale = [k for k in await self._redis.hkeys(self._results) if k.decode() not in keep]
        if stale:
            await self._redis.hdel(self._results, *stale)

    async def acquire_lease(self, owner: str, ttl_seconds: float) -> bool:
        return await self._leases.acquire(self._lease, owner, int(ttl_seconds * 1000))

    async def release_lease(self, owner: str) -> None:
        await self._leases.release(self._lease, owner)
