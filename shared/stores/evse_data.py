"""EVSE data read model in Redis: one hash per operator, field EvseID, value the OICP record."""

from __future__ import annotations

import orjson
import redis.asyncio as aioredis

from shared.oicp.ids import normalize_id
from shared.stores.redis import KeySpace


class EvseDataStore:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace, scope: str) -> None:
        self._redis = redis
        self._keys = keys
        self._scope = scope

    def _hash(self, operator_id: str) -> str:
        return self._keys.key(self._scope, "evse-data", normalize_id(operator_id))

    async def apply(self, operator_id: str, action: str, records: dict[str, dict[str, object]]) -> None:
        """Apply one push: ``fullLoad`` replaces the operator's set, ``delete`` removes the given
        records, ``insert``/``update`` write them (strict insert/update conflicts: issue #3)."""
        key = self._hash(operator_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            if action == "fullLoad":
                pipe.delete(key)
            if action == "delete":
                if records:
                    pipe.hdel(key, *records)
            elif records:
                pipe.hset(key, mapping={evse: orjson.dumps(record) for evse, record in records.items()})
            await pipe.execute()

    async def get(self, operator_id: str, evse_id: str) -> dict[str, object] | None:
        raw = await self._redis.hget(self._hash(operator_id), evse_id)
        return orjson.loads(raw) if raw else None

    async def count(self, operator_id: str) -> int:
        return int(await self._redis.hlen(self._hash(operator_id)))
