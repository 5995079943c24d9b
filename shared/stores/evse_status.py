"""EVSE status read model in Redis.

One hash per operator (``…:evse-status:<OPERATOR>``, field EvseID, value JSON), so a pull by
EvseID or by OperatorID reads only the hashes it needs and never scans the key space. Two scopes:
``own`` (a CPO node's own EVSEs, the source of truth for pulls and pushes) and ``roaming`` (what CPO
peers pushed to an EMP node).

Changing a status and queueing it for every push peer is one Lua script, so a crash can never leave
a change stored but not queued (or the reverse).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis

from shared.oicp.ids import normalize_id, operator_id_of_evse
from shared.stores.push import ApplyResult
from shared.stores.redis import KeySpace

# KEYS[1] status hash, KEYS[2] operator directory, KEYS[3..] pending hashes of the push peers.
# ARGV[1] operator norm, ARGV[2] operator display id, then triples (evse, status, pending value).
# Returns a flat list of (evse, previous status or "") for the records whose status changed.
# Times are UTC ISO 8601 with microseconds (fixed width), so they compare as strings.
_SET_STATUSES = """
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local changed = {}
for i = 3, #ARGV, 3 do
  local evse, value, pending = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old = redis.call('HGET', KEYS[1], evse)
  local old_status, old_time = '', ''
  if old then
    local decoded = cjson.decode(old)
    old_status, old_time = decoded['s'], decoded['t']
  end
  local new = cjson.decode(value)
  -- Commands are consumed concurrently and may be redelivered: a change older than the stored
  -- one is stale and ignored, so the latest status wins whatever the order of processing.
  if old_status ~= new['s'] and new['t'] >= old_time then
    redis.call('HSET', KEYS[1], evse, value)
    for k = 3, #KEYS do redis.call('HSET', KEYS[k], evse, pending) end
    table.insert(changed, evse)
    table.insert(changed, old_status)
  end
end
return changed
"""


# ActionType semantics (DIGEST §9.1) in one atomic step. KEYS[1] operator directory, KEYS[2] the
# pushing operator's hash (the fullLoad scope), KEYS[3..] hashes of other operators in the push
# (a hub relays sub-operators' EVSEs). ARGV[1] action, ARGV[2] timestamp, ARGV[3] number of operator
# pairs, then (norm, display) pairs for KEYS[2..], then triples (key index, evse, status).
# Returns {conflicts, changed, deleted}; with conflicts nothing is written.
_APPLY = """
local action, at, n_ops = ARGV[1], ARGV[2], tonumber(ARGV[3])
local first = 4 + 2 * n_ops
local conflicts, changed, deleted = {}, {}, {}
local function value_of(status) return cjson.encode({s = status, t = at}) end
if action == 'insert' or action == 'update' then
  for i = first, #ARGV, 3 do
    local exists = redis.call('HEXISTS', KEYS[tonumber(ARGV[i])], ARGV[i + 1]) == 1
    if (action == 'insert' and exists) or (action == 'update' and not exists) then
      table.insert(conflicts, ARGV[i + 1])
    end
  end
  if #conflicts > 0 then return {conflicts, changed, deleted} end
end
for k = 0, n_ops - 1 do
  redis.call('HSET', KEYS[1], ARGV[4 + 2 * k], ARGV[5 + 2 * k])
end
if action == 'fullLoad' then
  local keep = {}
  for i = first, #ARGV, 3 do keep[ARGV[i + 1]] = true end
  for _, evse in ipairs(redis.call('HKEYS', KEYS[2])) do
    if not keep[evse] then
      redis.call('HDEL', KEYS[2], evse)
      table.insert(deleted, evse)
    end
  end
end
for i = first, #ARGV, 3 do
  local key, evse, status = KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2]
  if action == 'delete' then
    if redis.call('HDEL', key, evse) == 1 then table.insert(deleted, evse) end
  else
    local old = redis.call('HGET', key, evse)
    if not old or cjson.decode(old)['s'] ~= status then
      redis.call('HSET', key, evse, value_of(status))
      table.insert(changed, evse)
    end
  end
end
return {conflicts, changed, deleted}
"""


@dataclass(frozen=True)
class StatusChange:
    evse_id: str
    operator_id: str
    status: str
    previous_status: str | None


@dataclass(frozen=True)
class StoredStatus:
    evse_id: str
    status: str
    changed_at: str


class EvseStatusStore:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace, scope: str) -> None:
        self._redis = redis
        self._keys = keys
        self._scope = scope
        self._set_script = redis.register_script(_SET_STATUSES)
        self._apply_script = redis.register_script(_APPLY)

    def _hash(self, operator_norm: str) -> str:
        return self._keys.key(self._scope, "evse-status", operator_norm)

    @property
    def _directory(self) -> str:
        return self._keys.key(self._scope, "evse-status-operators")

    async def set_statuses(
        self,
        operator_id: str,
        records: list[tuple[str, str]],
        changed_at: datetime,
        pending_keys: list[str] = (),  # type: ignore[assignment]
    ) -> list[StatusChange]:
        """Store (EvseID, status) pairs of one operator; queue changes in ``pending_keys``.

        Returns only the records whose status actually changed.
        """
        by_operator: dict[str, list[tuple[str, str]]] = {}
        for evse_id, status in records:
            by_operator.setdefault(operator_id_of_evse(evse_id), []).append((evse_id, status))
        at = _timestamp(changed_at)
        changes: list[StatusChange] = []
        for operator_norm, group in by_operator.items():
            display = operator_id if normalize_id(operator_id) == operator_norm else operator_norm
            argv: list[Any] = [operator_norm, display]
            for evse_id, status in group:
                value = orjson.dumps({"s": status, "t": at})
                pending = orjson.dumps({"o": display, "s": status, "t": at})  # same shape as as_pending()
                argv += [evse_id, value, pending]
            flat = await self._set_script(keys=[self._hash(operator_norm), self._directory, *pending_keys], args=argv)
            statuses = dict(group)
            for i in range(0, len(flat), 2):
                evse_id = flat[i].decode()
                previous = flat[i + 1].decode() or None
                changes.append(StatusChange(evse_id, display, statuses[evse_id], previous))
        return changes

    async def apply(self, action: str, operator_id: str, records: list[tuple[str, str]], at: datetime) -> ApplyResult:
        """One PushEvseStatus with its ActionType semantics (strict insert/update, fullLoad scope =
        the pushing operator), atomically."""
        scope_norm = normalize_id(operator_id)
        hashes = [self._hash(scope_norm)]
        argv_ops: list[Any] = [scope_norm, operator_id]
        triples: list[Any] = []
        for evse_id, status in records:
            norm = operator_id_of_evse(evse_id)
            if norm.lstrip("+") == scope_norm.lstrip("+"):
                norm = scope_norm
            key = self._hash(norm)
            if key not in hashes:
                hashes.append(key)
                argv_ops += [norm, norm]
            triples += [hashes.index(key) + 2, evse_id, status]
        argv = [action, _timestamp(at), len(hashes), *argv_ops, *triples]
        conflicts, changed, deleted = await self._apply_script(keys=[self._directory, *hashes], args=argv)
        return ApplyResult(
            conflicts=[c.decode() for c in conflicts],
            changed=[c.decode() for c in changed],
            deleted=[d.decode() for d in deleted],
        )

    async def replace_operator(self, operator_id: str, records: list[tuple[str, str]], changed_at: datetime) -> None:
        """fullLoad: the given records become the operator's complete set."""
        operator_norm = normalize_id(operator_id)
        at = _timestamp(changed_at)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._hash(operator_norm))
            pipe.hset(self._directory, operator_norm, operator_id)
            if records:
                pipe.hset(
                    self._hash(operator_norm),
                    mapping={evse: orjson.dumps({"s": status, "t": at}) for evse, status in records},
                )
            await pipe.execute()
        # Records of sub-operators (EvseIDs with another prefix) live in their own hashes.
        foreign = [r for r in records if operator_id_of_evse(r[0]) != operator_norm]
        if foreign:
            await self.set_statuses(operator_id, foreign, changed_at)

    async def as_pending(self) -> dict[str, bytes]:
        """Every stored status as an outbox entry (for a new peer's initial state)."""
        entries: dict[str, bytes] = {}
        for operator_id, records in (await self.by_operator()).items():
            for r in records:
                entries[r.evse_id] = orjson.dumps({"o": operator_id, "s": r.status, "t": r.changed_at})
        return entries

    async def delete(self, evse_ids: list[str]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for evse_id in evse_ids:
                pipe.hdel(self._hash(operator_id_of_evse(evse_id)), evse_id)
            await pipe.execute()

    async def get_many(self, evse_ids: list[str]) -> dict[str, StoredStatus | None]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for evse_id in evse_ids:
                pipe.hget(self._hash(operator_id_of_evse(evse_id)), evse_id)
            raw = await pipe.execute()
        return {evse_id: _decode(evse_id, value) for evse_id, value in zip(evse_ids, raw, strict=True)}

    async def evse_ids_of_operator(self, operator_id: str) -> list[str]:
        return sorted(k.decode() for k in await self._redis.hkeys(self._hash(normalize_id(operator_id))))

    async def operators(self) -> dict[str, str]:
        """Operator norm → OperatorID as the operator spells it."""
        raw = await self._redis.hgetall(self._directory)
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def by_operator(self, operator_ids: list[str] | None = None) -> dict[str, list[StoredStatus]]:
        """OperatorID → its status records; all operators when ``operator_ids`` is None."""
        directory = await self.operators()
        wanted = (
            directory
            if operator_ids is None
            else {normalize_id(o): directory.get(normalize_id(o), o) for o in operator_ids}
        )
        result: dict[str, list[StoredStatus]] = {}
        for operator_norm, display in wanted.items():
            raw = await self._redis.hgetall(self._hash(operator_norm))
            if raw or operator_ids is not None:
                result[display] = [s for k, v in sorted(raw.items()) if (s := _decode(k.decode(), v)) is not None]
        return result


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _decode(evse_id: str, raw: bytes | None) -> StoredStatus | None:
    if raw is None:
        return None
    value = orjson.loads(raw)
    return StoredStatus(evse_id=evse_id, status=value["s"], changed_at=value["t"])
