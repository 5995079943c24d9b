"""Dynamic pricing read models in Redis: pricing products and EVSE pricing (DIGEST §7.8, §7.9, §9.1, §9.4).

Two scopes, as for EVSE status: ``own`` (a CPO node's own prices, served to its EMP peers) and
``roaming`` (what CPO peers pushed to an EMP node). Every push is applied by one Lua script, so the
all-or-nothing rules of insert/update hold under concurrent consumers and a reader never sees half a push.

**Pricing products** — one document per (OperatorID, ProviderID), ProviderID possibly ``*`` (offered to
all EMPs). That pair is the scope of a fullLoad (DIGEST §9.1, inference). Keys (``S`` = scope)::

    S:pricing-products:<OP>:<PROV>            hash ProductID -> record JSON
    S:pricing-products-meta:<OP>:<PROV>       hash d -> defaults JSON (the document without its records),
                                                   t -> last change (UTC ISO, fixed width)
    S:pricing-products-documents:<OP>         hash <PROV> -> ProviderID as pushed (the operator's documents)
    S:pricing-products-operators              hash <OP> -> OperatorID as pushed

**EVSE pricing** — records keyed by (EvseID, ProviderID), ProviderID possibly ``*``; the fullLoad scope is
the OperatorID of the push (its path: the body has no OperatorID). Keys::

    S:evse-pricing:<OP>:<PROV>                hash EvseID -> record JSON
    S:evse-pricing-times:<OP>:<PROV>          hash EvseID -> last change
    S:evse-pricing-providers:<OP>             set of <PROV> the operator has records for (fullLoad scope)
    S:evse-pricing-owners                     hash "<EvseID>|<PROV>" -> <OP> (lookup by record key)
    S:evse-pricing-operators                  hash <OP> -> OperatorID as pushed

(EvseID, ProviderID) is one record store-wide: insert/update check it against every operator, and a
record another operator pushes (a hub relaying a sub-operator) moves to that operator; delete only reaches
the pushing operator's own records.

``<OP>``/``<PROV>`` are normalised IDs (separators and case ignored, DIGEST §4) and ``*`` stays ``*``,
so a pull for a provider reads exactly the (operator, provider) and (operator, ``*``) slots it needs and
never scans the key space.

Record JSON is canonical (OICP names, sorted keys), so "nothing changed" is a string comparison in the
script: an unchanged record keeps its timestamp and is not reported as changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis

from shared.oicp.ids import normalize_id
from shared.oicp.types import ActionType, EvsePricing, OperatorEvsePricing, PricingProductData
from shared.stores.push import ApplyResult
from shared.stores.redis import KeySpace

ALL_PROVIDERS = "*"
RECORDS_FIELD = "PricingProductDataRecords"
KEY_SEPARATOR = "|"

# KEYS[1] records hash, KEYS[2] meta hash, KEYS[3] the operator's document directory, KEYS[4] operator
# directory. ARGV[1] action, ARGV[2] defaults JSON, ARGV[3] timestamp, ARGV[4] operator norm, ARGV[5]
# OperatorID as pushed, ARGV[6] provider norm, ARGV[7] ProviderID as pushed, then pairs (ProductID,
# record JSON; empty for delete). Returns {conflicts, changed, deleted, defaults changed (0/1)};
# with conflicts nothing is written.
_APPLY_PRODUCTS = """
local action, defaults, at = ARGV[1], ARGV[2], ARGV[3]
local first = 8
if action == 'insert' or action == 'update' then
  local conflicts = {}
  for i = first, #ARGV, 2 do
    local exists = redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1
    if exists == (action == 'insert') then table.insert(conflicts, ARGV[i]) end
  end
  if #conflicts > 0 then return {conflicts, {}, {}, 0} end
end
local changed, deleted = {}, {}
if action == 'fullLoad' then
  local keep = {}
  for i = first, #ARGV, 2 do keep[ARGV[i]] = true end
  for _, product in ipairs(redis.call('HKEYS', KEYS[1])) do
    if not keep[product] then
      redis.call('HDEL', KEYS[1], product)
      table.insert(deleted, product)
    end
  end
end
for i = first, #ARGV, 2 do
  local product, value = ARGV[i], ARGV[i + 1]
  if action == 'delete' then
    if redis.call('HDEL', KEYS[1], product) == 1 then table.insert(deleted, product) end
  elseif redis.call('HGET', KEYS[1], product) ~= value then
    redis.call('HSET', KEYS[1], product, value)
    table.insert(changed, product)
  end
end
local defaults_changed = 0
if redis.call('HGET', KEYS[2], 'd') ~= defaults then
  redis.call('HSET', KEYS[2], 'd', defaults)
  defaults_changed = 1
end
if defaults_changed == 1 or #changed > 0 or #deleted > 0 then redis.call('HSET', KEYS[2], 't', at) end
redis.call('HSET', KEYS[3], ARGV[6], ARGV[7])
redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
return {{}, changed, deleted, defaults_changed}
"""

# KEYS[1] owner index, KEYS[2] operator directory, KEYS[3] the operator's provider set. ARGV[1] key
# prefix of the scope, ARGV[2] action, ARGV[3] timestamp, ARGV[4] operator norm, ARGV[5] OperatorID as
# pushed, then triples (EvseID, provider norm, record JSON; empty for delete).
# The per-(operator, provider) hash names are built here from the prefix: which of them a push touches
# depends on the stored data (fullLoad scope, a record moving between operators), and the node runs on
# one Redis instance, not a cluster.
# Returns {conflicts (item numbers), changed (item numbers), deleted (old record JSONs)}; with
# conflicts nothing is written.
_APPLY_EVSE_PRICING = """
local prefix, action, at, op, op_display = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local owners, directory, providers = KEYS[1], KEYS[2], KEYS[3]
local function records_key(operator, provider) return prefix .. 'evse-pricing:' .. operator .. ':' .. provider end
local function times_key(operator, provider) return prefix .. 'evse-pricing-times:' .. operator .. ':' .. provider end
local items = {}
for i = 6, #ARGV, 3 do table.insert(items, {ARGV[i], ARGV[i + 1], ARGV[i + 2]}) end
if action == 'insert' or action == 'update' then
  local conflicts = {}
  for n, item in ipairs(items) do
    local exists = redis.call('HEXISTS', owners, item[1] .. '|' .. item[2]) == 1
    if exists == (action == 'insert') then table.insert(conflicts, n) end
  end
  if #conflicts > 0 then return {conflicts, {}, {}} end
end
local function remove(operator, evse, provider)
  local old = redis.call('HGET', records_key(operator, provider), evse)
  redis.call('HDEL', records_key(operator, provider), evse)
  redis.call('HDEL', times_key(operator, provider), evse)
  redis.call('HDEL', owners, evse .. '|' .. provider)
  return old
end
local changed, deleted = {}, {}
if action == 'fullLoad' then
  local keep = {}
  for _, item in ipairs(items) do keep[item[1] .. '|' .. item[2]] = true end
  for _, provider in ipairs(redis.call('SMEMBERS', providers)) do
    for _, evse in ipairs(redis.call('HKEYS', records_key(op, provider))) do
      if not keep[evse .. '|' .. provider] then table.insert(deleted, remove(op, evse, provider)) end
    end
  end
elseif action == 'delete' then
  for _, item in ipairs(items) do
    -- only the operator's own records: another operator's record with that key is not in its scope
    if redis.call('HGET', owners, item[1] .. '|' .. item[2]) == op then
      local old = remove(op, item[1], item[2])
      if old then table.insert(deleted, old) end
    end
  end
end
if action ~= 'delete' then
  for n, item in ipairs(items) do
    local evse, provider, value = item[1], item[2], item[3]
    local owner = redis.call('HGET', owners, evse .. '|' .. provider)
    -- (EvseID, ProviderID) is one record store-wide: written by another operator (a hub relaying a
    -- sub-operator), it moves to the pushing operator.
    if owner and owner ~= op then remove(owner, evse, provider) end
    if owner ~= op or redis.call('HGET', records_key(op, provider), evse) ~= value then
      redis.call('HSET', records_key(op, provider), evse, value)
      redis.call('HSET', times_key(op, provider), evse, at)
      redis.call('HSET', owners, evse .. '|' .. provider, op)
      redis.call('SADD', providers, provider)
      table.insert(changed, n)
    end
  end
end
for _, provider in ipairs(redis.call('SMEMBERS', providers)) do
  if redis.call('EXISTS', records_key(op, provider)) == 0 then redis.call('SREM', providers, provider) end
end
redis.call('HSET', directory, op, op_display)
return {{}, changed, deleted}
"""

# KEYS[1] owner index. ARGV[1] key prefix of the scope, then pairs (EvseID, provider norm).
# Returns per pair {operator norm, record JSON, timestamp}, or an empty list for an unknown record.
_GET_EVSE_PRICING = """
local prefix = ARGV[1]
local found = {}
for i = 2, #ARGV, 2 do
  local evse, provider = ARGV[i], ARGV[i + 1]
  local op = redis.call('HGET', KEYS[1], evse .. '|' .. provider)
  local entry = {}
  if op then
    local value = redis.call('HGET', prefix .. 'evse-pricing:' .. op .. ':' .. provider, evse)
    local at = redis.call('HGET', prefix .. 'evse-pricing-times:' .. op .. ':' .. provider, evse)
    if value then entry = {op, value, at or ''} end
  end
  table.insert(found, entry)
end
return found
"""


@dataclass(frozen=True)
class ProductsApplyResult(ApplyResult):
    """An ApplyResult whose keys are ProductIDs, plus whether the document's defaults changed (they are
    part of the document but no product: a change of the default price alone changes no ProductID)."""

    defaults_changed: bool = False

    @property
    def document_changed(self) -> bool:
        return bool(self.changed or self.deleted or self.defaults_changed)


@dataclass(frozen=True)
class StoredPricingProducts:
    data: PricingProductData
    updated_at: datetime
    """When the document (defaults or any product) last changed."""


@dataclass(frozen=True)
class StoredEvsePricing:
    record: EvsePricing
    operator_id: str
    """The OperatorID whose push holds the record, as it spelled it."""
    updated_at: datetime


def provider_slot(provider_id: str) -> str:
    """The provider part of a key: normalised ProviderID, ``*`` (offered to all EMPs) kept as is.

    (``normalize_id`` removes ``*`` as a separator, which would turn "all EMPs" into an empty string.)
    """
    stripped = provider_id.strip()
    return ALL_PROVIDERS if stripped == ALL_PROVIDERS else normalize_id(stripped)


def evse_pricing_key(record: EvsePricing) -> str:
    """The record key of ApplyResult and get_many: ``<EvseID>|<ProviderID>`` as the record spells them."""
    return f"{record.evse_id}{KEY_SEPARATOR}{record.provider_id}"


class PricingProductStore:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace, scope: str) -> None:
        self._redis = redis
        self._keys = keys
        self._scope = scope
        self._apply_script = redis.register_script(_APPLY_PRODUCTS)

    def _records(self, operator_norm: str, slot: str) -> str:
        return self._keys.key(self._scope, "pricing-products", operator_norm, slot)

    def _meta(self, operator_norm: str, slot: str) -> str:
        return self._keys.key(self._scope, "pricing-products-meta", operator_norm, slot)

    def _documents(self, operator_norm: str) -> str:
        return self._keys.key(self._scope, "pricing-products-documents", operator_norm)

    @property
    def _operators(self) -> str:
        return self._keys.key(self._scope, "pricing-products-operators")

    async def apply(self, action: ActionType | str, data: PricingProductData, at: datetime) -> ProductsApplyResult:
        """One PushPricingProductData with its ActionType semantics on the (OperatorID, ProviderID)
        document, atomically. insert/update/delete also take the body's defaults (unless a conflict
        aborts the push); a ProductID given twice in one body counts once, the last one wins."""
        action = ActionType(action)
        operator_norm, slot = normalize_id(data.operator_id), provider_slot(data.provider_id)
        records = {r.product_id: _canonical(r) for r in data.pricing_product_data_records}
        argv: list[Any] = [
            action.value,
            _canonical(data, exclude={"pricing_product_data_records"}),
            _timestamp(at),
            operator_norm,
            data.operator_id,
            slot,
            data.provider_id,
        ]
        for product_id, value in records.items():
            argv += [product_id, b"" if action is ActionType.DELETE else value]
        keys = [self._records(operator_norm, slot), self._meta(operator_norm, slot)]
        keys += [self._documents(operator_norm), self._operators]
        conflicts, changed, deleted, defaults_changed = await self._apply_script(keys=keys, args=argv)
        return ProductsApplyResult(
            conflicts=_decoded(conflicts),
            changed=_decoded(changed),
            deleted=_decoded(deleted),
            defaults_changed=bool(defaults_changed),
        )

    async def get_document(self, operator_id: str, provider_id: str) -> StoredPricingProducts | None:
        documents = await self._read(normalize_id(operator_id), [provider_slot(provider_id)])
        return documents[0] if documents else None

    async def provider_ids(self, operator_id: str) -> list[str]:
        """The ProviderIDs (``*`` included) the operator has a document for, as it spelled them."""
        return sorted(v.decode() for v in await self._redis.hvals(self._documents(normalize_id(operator_id))))

    async def documents_for_provider(self, provider_id: str) -> list[StoredPricingProducts]:
        """Every operator's documents meant for the provider (its own ProviderID or ``*``), e.g. to
        resync a peer."""
        slots = _slots_for(provider_id)
        found: list[StoredPricingProducts] = []
        for operator_norm in sorted(k.decode() for k in await self._redis.hkeys(self._operators)):
            found += await self._read(operator_norm, slots)
        return found

    async def pull(
        self, operator_ids: list[str], provider_id: str, last_call: datetime | None
    ) -> list[PricingProductData]:
        """The documents of these operators meant for the provider (its ProviderID or ``*``).

        With ``last_call`` only the documents that changed after it, each complete: the granularity
        is the document (DIGEST §9.4 leaves the delta format open), and since a document is always
        returned whole, a product removed since ``last_call`` shows as missing from it.
        """
        slots = _slots_for(provider_id)
        found: list[PricingProductData] = []
        for operator_norm in dict.fromkeys(normalize_id(o) for o in operator_ids):
            for document in await self._read(operator_norm, slots):
                if last_call is None or document.updated_at > last_call:
                    found.append(document.data)
        return found

    async def _read(self, operator_norm: str, slots: list[str]) -> list[StoredPricingProducts]:
        # One MULTI/EXEC: the defaults and the records of a document always come from the same version.
        async with self._redis.pipeline(transaction=True) as pipe:
            for slot in slots:
                pipe.hgetall(self._meta(operator_norm, slot))
                pipe.hgetall(self._records(operator_norm, slot))
            raw = await pipe.execute()
        found: list[StoredPricingProducts] = []
        for meta, records in zip(raw[::2], raw[1::2], strict=True):
            if b"d" not in meta:
                continue
            document = orjson.loads(meta[b"d"])
            document[RECORDS_FIELD] = [orjson.loads(records[k]) for k in sorted(records)]
            found.append(
                StoredPricingProducts(
                    data=PricingProductData.model_validate(document), updated_at=_parse_timestamp(meta[b"t"])
                )
            )
        return found


class EvsePricingStore:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace, scope: str) -> None:
        self._redis = redis
        self._keys = keys
        self._scope = scope
        self._apply_script = redis.register_script(_APPLY_EVSE_PRICING)
        self._get_script = redis.register_script(_GET_EVSE_PRICING)

    @property
    def _prefix(self) -> str:
        """The start of every per-(operator, provider) key; the scripts complete it."""
        return self._keys.key(self._scope, "")

    def _records(self, operator_norm: str, slot: str) -> str:
        return self._keys.key(self._scope, "evse-pricing", operator_norm, slot)

    def _times(self, operator_norm: str, slot: str) -> str:
        return self._keys.key(self._scope, "evse-pricing-times", operator_norm, slot)

    def _providers(self, operator_norm: str) -> str:
        return self._keys.key(self._scope, "evse-pricing-providers", operator_norm)

    @property
    def _owners(self) -> str:
        return self._keys.key(self._scope, "evse-pricing-owners")

    @property
    def _operators(self) -> str:
        return self._keys.key(self._scope, "evse-pricing-operators")

    async def apply(
        self, action: ActionType | str, operator_id: str, records: list[EvsePricing], at: datetime
    ) -> ApplyResult:
        """One PushEVSEPricing of ``operator_id`` (from the path) with its ActionType semantics,
        atomically; the fullLoad scope is every record of that operator, for all providers.
        ApplyResult keys are ``<EvseID>|<ProviderID>``; a key given twice in one body counts once, the
        last one wins."""
        action = ActionType(action)
        operator_norm = normalize_id(operator_id)
        by_key: dict[tuple[str, str], EvsePricing] = {}
        for record in records:
            by_key[(record.evse_id, provider_slot(record.provider_id))] = record
        items = list(by_key.values())
        argv: list[Any] = [self._prefix, action.value, _timestamp(at), operator_norm, operator_id]
        for (evse_id, slot), record in by_key.items():
            argv += [evse_id, slot, b"" if action is ActionType.DELETE else _canonical(record)]
        keys = [self._owners, self._operators, self._providers(operator_norm)]
        conflicts, changed, deleted = await self._apply_script(keys=keys, args=argv)
        return ApplyResult(
            conflicts=[evse_pricing_key(items[int(n) - 1]) for n in conflicts],
            changed=[evse_pricing_key(items[int(n) - 1]) for n in changed],
            deleted=[evse_pricing_key(EvsePricing.model_validate(orjson.loads(old))) for old in deleted],
        )

    async def get_many(self, keys: list[str]) -> dict[str, StoredEvsePricing | None]:
        """Records by ``<EvseID>|<ProviderID>`` key (ProviderID spelled any way, or ``*``)."""
        if not keys:
            return {}
        argv: list[Any] = [self._prefix]
        for key in keys:
            evse_id, _, provider_id = key.rpartition(KEY_SEPARATOR)
            argv += [evse_id, provider_slot(provider_id)]
        raw = await self._get_script(keys=[self._owners], args=argv)
        operators = await self._operator_names()
        found: dict[str, StoredEvsePricing | None] = {}
        for key, entry in zip(keys, raw, strict=True):
            if not entry:
                found[key] = None
                continue
            operator_norm, value, at = (part.decode() for part in entry)
            found[key] = StoredEvsePricing(
                record=EvsePricing.model_validate(orjson.loads(value)),
                operator_id=operators.get(operator_norm, operator_norm),
                updated_at=_parse_timestamp(at),
            )
        return found

    async def keys_for_provider(self, provider_id: str) -> list[str]:
        """Every live record key meant for the provider (its ProviderID or ``*``), e.g. to resync a peer."""
        slots = _slots_for(provider_id)
        operators = sorted(await self._operator_names())
        async with self._redis.pipeline(transaction=True) as pipe:
            for operator_norm in operators:
                for slot in slots:
                    pipe.hvals(self._records(operator_norm, slot))
            raw = await pipe.execute()
        keys = [evse_pricing_key(EvsePricing.model_validate(orjson.loads(v))) for values in raw for v in values]
        return sorted(keys)

    async def pull(
        self, operator_ids: list[str], provider_id: str, last_call: datetime | None
    ) -> list[OperatorEvsePricing]:
        """The EVSE pricing of these operators meant for the provider, grouped per operator.

        Per EVSE the provider's own record wins over the ``*`` record (a provider-specific assignment
        overrides the offer to all EMPs); the ``*`` record is returned only for EVSEs without one.
        ProviderIDs are returned as stored (``*`` included; the answer on the wire may need to rewrite
        it). With ``last_call`` only records whose content changed after it. Deletions cannot be
        represented (DIGEST §9.4: not stated, and EVSEPricingType has no delta marker): a record removed
        since ``last_call`` — or a provider-specific record removed so that the ``*`` one applies again
        without having changed — is not reported; a pull without LastCall gives the complete set.
        Operators with nothing to return are left out.
        """
        slots = _slots_for(provider_id)
        operators = await self._operator_names()
        wanted = [o for o in dict.fromkeys(normalize_id(o) for o in operator_ids) if o in operators]
        async with self._redis.pipeline(transaction=True) as pipe:
            for operator_norm in wanted:
                for slot in slots:
                    pipe.hgetall(self._records(operator_norm, slot))
                    pipe.hgetall(self._times(operator_norm, slot))
            raw = await pipe.execute()
        found: list[OperatorEvsePricing] = []
        per_operator = 2 * len(slots)
        for index, operator_norm in enumerate(wanted):
            chunk = raw[index * per_operator : (index + 1) * per_operator]
            # slots are ordered (provider, "*"): the first record seen for an EVSE is the one that applies
            effective: dict[bytes, tuple[bytes, bytes]] = {}
            for records, times in zip(chunk[::2], chunk[1::2], strict=True):
                for evse, value in records.items():
                    effective.setdefault(evse, (value, times.get(evse, b"")))
            selected = [
                EvsePricing.model_validate(orjson.loads(value))
                for _, (value, at) in sorted(effective.items())
                if last_call is None or _parse_timestamp(at) > last_call
            ]
            if selected:
                found.append(OperatorEvsePricing(operator_id=operators[operator_norm], evse_pricing=selected))
        return found

    async def _operator_names(self) -> dict[str, str]:
        raw = await self._redis.hgetall(self._operators)
        return {k.decode(): v.decode() for k, v in raw.items()}


def _slots_for(provider_id: str) -> list[str]:
    """The key slots a provider reads: its own first, then ``*``."""
    return list(dict.fromkeys([provider_slot(provider_id), ALL_PROVIDERS]))


def _canonical(model: Any, exclude: set[str] | None = None) -> bytes:
    """OICP JSON with sorted keys: equal content gives equal bytes."""
    data = model.model_dump(by_alias=True, exclude_none=True, mode="json", exclude=exclude)
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _parse_timestamp(raw: bytes | str) -> datetime:
    text = raw.decode() if isinstance(raw, bytes) else raw
    return datetime.fromisoformat(text) if text else datetime.min.replace(tzinfo=UTC)


def _decoded(values: list[bytes]) -> list[str]:
    return [v.decode() for v in values]
