"""The EMP's token store (EMP role): the authentication media of its customers, in Redis.

A token is keyed by its medium (:func:`medium_key`): the upper-cased UID of an RFID card, or the
normalised EvcoID (upper case, separators removed, DIGEST §4) of a QR code, Plug&Charge or remote
identification. Keys::

    tokens:records                 hash key -> token JSON (Token's OICP/bus field names, sorted keys)
    tokens:index                   zset key (score 0: lexicographic order, for paging the internal API)
    tokens:provider:<PROV>         set of the keys of one of the node's ProviderIDs (PushAuthenticationData
                                   sends one provider per request)

ActionType semantics (DIGEST §9.1) are applied by one Lua script, so the all-or-nothing rules of
insert/update hold under concurrent consumers. The same script queues every changed or deleted key in
the outboxes of the CPO peers that take PushAuthenticationData (``shared.stores.delivery`` layout), so a
change is never stored without being queued for them, even if the worker dies right after.

``fullLoad`` replaces the whole store: every token of the node belongs to one of its own ProviderIDs,
and the command is the node's complete set (TokensSet's contract).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis

from shared.bus.messages import Token
from shared.oicp import Identification
from shared.oicp.ids import normalize_id
from shared.stores.push import ApplyResult
from shared.stores.redis import KeySpace

RFID_KINDS = frozenset({"RFIDMifareFamilyIdentification", "RFIDIdentification"})


def medium_key(identification: Identification) -> str:
    """The store key of a medium: the upper-cased UID (RFID) or the normalised EvcoID (the others)."""
    if identification.kind in RFID_KINDS:
        uid = identification.uid
        assert uid is not None  # both RFID members require a UID
        return uid.upper()
    evco_id = identification.evco_id
    assert evco_id is not None  # QR, Plug&Charge and remote identifications require an EvcoID
    return normalize_id(evco_id)


def canonical(data: dict[str, Any]) -> str:
    """Canonical JSON (sorted keys): "unchanged" is a string comparison inside the Lua script."""
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()


# KEYS[1] records hash, KEYS[2] index zset, then the outbox hashes of the push peers.
# ARGV[1] action, ARGV[2] provider-set key prefix, ARGV[3] outbox stamp prefix (unique per call), then
# triples (key, token JSON or "" for delete, provider norm or "").
# Returns {conflicts, changed, deleted}; with conflicts nothing is written. An outbox entry is
# '{"s":"<stamp>:<n>","r":<record JSON as it was/is>}': the stamp makes every enqueue distinct (the
# lane removes an entry only if it was not overwritten meanwhile), the record lets the lane send a
# delete for a token that is gone.
_APPLY = """
local action, prefix, stamp = ARGV[1], ARGV[2], ARGV[3]
local items = {}
for i = 4, #ARGV, 3 do table.insert(items, {ARGV[i], ARGV[i + 1], ARGV[i + 2]}) end
if action == 'insert' or action == 'update' then
  local conflicts = {}
  for _, item in ipairs(items) do
    local exists = redis.call('HEXISTS', KEYS[1], item[1]) == 1
    if exists == (action == 'insert') then table.insert(conflicts, item[1]) end
  end
  if #conflicts > 0 then return {conflicts, {}, {}} end
end
local n = 0
local function enqueue(key, record)
  n = n + 1
  local entry = '{"s":"' .. stamp .. ':' .. n .. '","r":' .. record .. '}'
  for k = 3, #KEYS do redis.call('HSET', KEYS[k], key, entry) end
end
local function remove(key)
  local old = redis.call('HGET', KEYS[1], key)
  if not old then return false end
  local provider = cjson.decode(old)['provider_key']
  redis.call('HDEL', KEYS[1], key)
  redis.call('ZREM', KEYS[2], key)
  redis.call('SREM', prefix .. provider, key)
  enqueue(key, old)
  return true
end
local changed, deleted = {}, {}
if action == 'fullLoad' then
  local keep = {}
  for _, item in ipairs(items) do keep[item[1]] = true end
  for _, key in ipairs(redis.call('HKEYS', KEYS[1])) do
    if not keep[key] and remove(key) then table.insert(deleted, key) end
  end
end
for _, item in ipairs(items) do
  local key, value, provider = item[1], item[2], item[3]
  if action == 'delete' then
    if remove(key) then table.insert(deleted, key) end
  else
    local old = redis.call('HGET', KEYS[1], key)
    if old ~= value then
      if old then
        local previous = cjson.decode(old)['provider_key']
        if previous ~= provider then redis.call('SREM', prefix .. previous, key) end
      end
      redis.call('HSET', KEYS[1], key, value)
      redis.call('ZADD', KEYS[2], 0, key)
      redis.call('SADD', prefix .. provider, key)
      enqueue(key, value)
      table.insert(changed, key)
    end
  end
end
return {{}, changed, deleted}
"""


@dataclass(frozen=True)
class StoredToken:
    """A token as stored: the Token plus its key and the normalised ProviderID it belongs to."""

    key: str
    provider_key: str
    token: Token

    def expired(self, now: datetime | None = None) -> bool:
        until = self.token.valid_until
        return until is not None and until <= (now or datetime.now(UTC))

    @property
    def usable(self) -> bool:
        """Neither blocked nor expired."""
        return not self.token.blocked and not self.expired()

    def as_dict(self) -> dict[str, Any]:
        """What the internal API shows (PINs are never shown)."""
        data = self.token.model_dump(mode="json", by_alias=True, exclude_none=True)
        qr = data.get("Identification", {}).get("QRCodeIdentification")
        if qr is not None:
            qr.pop("PIN", None)
            qr.pop("HashedPIN", None)
            data["has_pin"] = True
        return {"key": self.key, **data}


def decode_token(key: str, raw: bytes | str) -> StoredToken:
    data = orjson.loads(raw)
    provider_key = data.pop("provider_key")
    return StoredToken(key=key, provider_key=provider_key, token=Token.model_validate(data))


class TokenStore:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace) -> None:
        self._redis = redis
        self._keys = keys
        self._records = keys.key("tokens", "records")
        self._index = keys.key("tokens", "index")
        self._apply = redis.register_script(_APPLY)

    def provider_set(self, provider_key: str) -> str:
        return self._keys.key("tokens", "provider", provider_key)

    async def apply(self, action: str, tokens: list[Token], outboxes: list[str] | None = None) -> ApplyResult:
        """Apply a TokensSet (every token's ``provider_id`` filled in by the caller). ``outboxes``: the
        pending hashes of the CPO peers that take PushAuthenticationData, queued in the same script."""
        args: list[str] = [action, self.provider_set(""), uuid.uuid4().hex]
        for token in tokens:
            assert token.provider_id is not None, "the caller fills in the default ProviderID"
            key = medium_key(token.identification)
            provider_key = normalize_id(token.provider_id)
            if action == "delete":
                args += [key, "", ""]
                continue
            record = token.model_dump(mode="json", by_alias=True, exclude_none=True)
            record["provider_key"] = provider_key
            args += [key, canonical(record), provider_key]
        conflicts, changed, deleted = await self._apply(keys=[self._records, self._index, *(outboxes or [])], args=args)
        return ApplyResult(
            conflicts=[c.decode() for c in conflicts],
            changed=[c.decode() for c in changed],
            deleted=[d.decode() for d in deleted],
        )

    async def get(self, key: str) -> StoredToken | None:
        """The token of a key (an UID or EvcoID in any case or separator style)."""
        key = normalize_id(key)
        raw = await self._redis.hget(self._records, key)
        return decode_token(key, raw) if raw is not None else None

    async def lookup(self, identification: Identification) -> StoredToken | None:
        return await self.get(medium_key(identification))

    async def get_many(self, keys: list[str]) -> dict[str, StoredToken | None]:
        if not keys:
            return {}
        raws = await self._redis.hmget(self._records, keys)
        return {k: decode_token(k, r) if r is not None else None for k, r in zip(keys, raws, strict=True)}

    async def count(self) -> int:
        return int(await self._redis.zcard(self._index))

    async def page(self, offset: int, limit: int) -> list[StoredToken]:
        """Tokens in key order, ``limit`` from ``offset`` (for the internal API)."""
        if limit <= 0:
            return []
        keys = [k.decode() for k in await self._redis.zrange(self._index, offset, offset + limit - 1)]
        found = await self.get_many(keys)
        return [t for t in found.values() if t is not None]

    async def keys_of_provider(self, provider_key: str) -> list[str]:
        return sorted(k.decode() for k in await self._redis.smembers(self.provider_set(provider_key)))
