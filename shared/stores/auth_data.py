"""Authentication data EMP peers pushed for offline authorization (CPO role, PushAuthenticationData).

The scope of every ActionType is one ProviderID (the body carries exactly one, DIGEST §5.2, §9.1):
``insert`` refuses a medium that provider already holds, ``update`` one it does not hold (009, nothing
applied), ``delete`` removes the given media, ``fullLoad`` replaces the provider's whole set (an empty
list deletes it). Keys (``<PROV>`` normalised)::

    authdata:provider:<PROV>     hash medium key -> record JSON {"Identification", "ProviderID", "peer_id"}
    authdata:owners              hash medium key -> <PROV> (lookup of a medium at AuthorizeStart)

A medium key is :func:`shared.stores.tokens.medium_key` (upper-cased UID or normalised EvcoID). If
two providers push the same medium, the owners index points at the one that pushed it last; when that
provider deletes it, the index falls back to no owner (the medium is then decided online).
One Lua script per push: readers never see half of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from shared.oicp import Identification
from shared.oicp.ids import normalize_id
from shared.stores.push import ApplyResult
from shared.stores.redis import KeySpace
from shared.stores.tokens import canonical, medium_key

# KEYS[1] the provider's hash, KEYS[2] owners index. ARGV[1] action, ARGV[2] provider norm, then
# pairs (medium key, record JSON or "" for delete). Returns {conflicts, changed, deleted}.
_APPLY = """
local action, provider = ARGV[1], ARGV[2]
if action == 'insert' or action == 'update' then
  local conflicts = {}
  for i = 3, #ARGV, 2 do
    local exists = redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1
    if exists == (action == 'insert') then table.insert(conflicts, ARGV[i]) end
  end
  if #conflicts > 0 then return {conflicts, {}, {}} end
end
local function remove(key)
  if redis.call('HDEL', KEYS[1], key) == 0 then return false end
  if redis.call('HGET', KEYS[2], key) == provider then redis.call('HDEL', KEYS[2], key) end
  return true
end
local changed, deleted = {}, {}
if action == 'fullLoad' then
  local keep = {}
  for i = 3, #ARGV, 2 do keep[ARGV[i]] = true end
  for _, key in ipairs(redis.call('HKEYS', KEYS[1])) do
    if not keep[key] and remove(key) then table.insert(deleted, key) end
  end
end
for i = 3, #ARGV, 2 do
  local key, value = ARGV[i], ARGV[i + 1]
  if action == 'delete' then
    if remove(key) then table.insert(deleted, key) end
  else
    if redis.call('HGET', KEYS[1], key) ~= value then
      redis.call('HSET', KEYS[1], key, value)
      table.insert(changed, key)
    end
    redis.call('HSET', KEYS[2], key, provider)
  end
end
return {{}, changed, deleted}
"""


@dataclass(frozen=True)
class AuthRecord:
    """One medium a provider may charge with offline."""

    key: str
    provider_id: str
    identification: Identification
    peer_id: str | None


class AuthDataStore:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace) -> None:
        self._redis = redis
        self._keys = keys
        self._owners = keys.key("authdata", "owners")
        self._apply = redis.register_script(_APPLY)

    def _provider_hash(self, provider_key: str) -> str:
        return self._keys.key("authdata", "provider", provider_key)

    async def apply(
        self, action: str, provider_id: str, identifications: list[Identification], peer_id: str | None = None
    ) -> ApplyResult:
        """Apply one PushAuthenticationData (ActionType semantics within the provider's set)."""
        provider_key = normalize_id(provider_id)
        args: list[str] = [action, provider_key]
        for identification in identifications:
            record: dict[str, Any] = {
                "Identification": identification.to_oicp(),
                "ProviderID": provider_id,
                "peer_id": peer_id,
            }
            args += [medium_key(identification), "" if action == "delete" else canonical(record)]
        conflicts, changed, deleted = await self._apply(
            keys=[self._provider_hash(provider_key), self._owners], args=args
        )
        return ApplyResult(
            conflicts=[c.decode() for c in conflicts],
            changed=[c.decode() for c in changed],
            deleted=[d.decode() for d in deleted],
        )

    async def lookup(self, identification: Identification) -> AuthRecord | None:
        """The record of this medium, whichever provider pushed it."""
        key = medium_key(identification)
        provider_key = await self._redis.hget(self._owners, key)
        if provider_key is None:
            return None
        raw = await self._redis.hget(self._provider_hash(provider_key.decode()), key)
        if raw is None:
            return None
        data = orjson.loads(raw)
        return AuthRecord(
            key=key,
            provider_id=data["ProviderID"],
            identification=Identification.model_validate(data["Identification"]),
            peer_id=data.get("peer_id"),
        )

    async def count(self, provider_id: str) -> int:
        return int(await self._redis.hlen(self._provider_hash(normalize_id(provider_id))))

    async def keys_of_provider(self, provider_id: str) -> list[str]:
        return sorted(k.decode() for k in await self._redis.hkeys(self._provider_hash(normalize_id(provider_id))))
