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
