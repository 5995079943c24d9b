"""One Redis connection pool per process, and the node's key space."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from shared.settings import RedisSettings


def create_redis(settings: RedisSettings, client_name: str) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.url,
        max_connections=settings.max_connections,
        timeout=5,
        socket_timeout=5,
        socket_connect_timeout=2,
        health_check_interval=15,
        client_name=client_name,
    )
    return aioredis.Redis(connection_pool=pool, decode_responses=False)


@dataclass(frozen=True)
class KeySpace:
    """All keys of a node start with its prefix; tests give every run its own."""

    prefix: str

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)


# Take or renew a lease: only its holder may renew it.
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


class Leases:
    """Leases in Redis: one holder at a time per key (a delivery lane, the journal sealer, the probe
    job), taken and renewed only by its holder, gone when the holder stops renewing it."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._acquire = redis.register_script(_ACQUIRE_LEASE)
        self._release = redis.register_script(_RELEASE_LEASE)

    async def acquire(self, key: str, holder: str, ttl_ms: int) -> bool:
        """Take the lease, or renew it if ``holder`` has it; False while another holds it."""
        return bool(await self._acquire(keys=[key], args=[holder, ttl_ms]))

    async def release(self, key: str, holder: str) -> None:
        await self._release(keys=[key], args=[holder])
