"""EVSE data read model in Redis, with indexes so that a PullEvseData page never reads every record.

Two scopes: ``own`` (a CPO node's own EVSEs, served to EMP peers) and ``roaming`` (what CPO peers pushed
to an EMP node). Records are identified by their normalised EvseID (``<ID>``; separators and case ignored,
DIGEST §4) and keep the EvseID as pushed. Keys (``P`` = ``<scope>:evse-data``)::

    P:body                     hash <ID> -> the EvseDataRecord as OICP JSON (as pushed, without
                                            deltaType/lastUpdate, which are this store's)
    P:meta                     hash <ID> -> {e: EvseID, o: OperatorID, n: OperatorName, c: created,
                                            u: lastUpdate, d: deleted ("" while live), h: content hash,
                                            x: the index keys the record is a member of}
    P:live                     zset <ID>, all scores 0: lexicographic order = stable page order
    P:changes                  zset <ID> -> time of its last insert/update/delete (µs), for LastCall
    P:tombstones               zset <ID> -> deletion time (µs), pruned after the retention
    P:geo                      GEO set <ID> at the record's GeoCoordinates (for SearchCenter)
    P:idx:<field>:<value>      zset <ID> (scores 0), one per filter value: country, operator,
                               auth (each AuthenticationMode), accessibility, calibration,
                               renewable / hubject / open24 (true|false)
    P:operators                hash <OP> -> [OperatorID, OperatorName] as last pushed
    P:generation               counter, incremented by every write that changes something
    P:q:<generation>:<hash>    cached result of one query (zset, scores 0), short TTL

Writes are one Lua script per push (ActionType semantics, DIGEST §9.1): checks first, then writes, so a
conflicting insert/update writes nothing, and Redis runs the script atomically - no reader or crash ever
sees half a push. A deleted record becomes a tombstone: it leaves ``live`` but keeps its last content and
its index memberships, so a delta pull (LastCall) can return it with deltaType ``delete`` under the same
filters; tombstones older than the retention are pruned by the next write.

A query intersects the index keys it needs server-side (ZUNIONSTORE within a list filter, GEOSEARCHSTORE
for SearchCenter, ZRANGESTORE BYSCORE over ``changes`` for LastCall, ZINTERSTORE with weights 0 across
them) into a key named after the write generation: the pages of one query reuse it until the next write
changes the generation. Then ZCARD (total), ZRANGE (the page's IDs) and HMGET of only those IDs. The
cost of a page is the index work plus the page, never a read of every record.

The store uses key names computed inside its scripts (index keys, cache keys), so it needs a
non-cluster Redis, as the rest of the node does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis.asyncio as aioredis

from shared.oicp.base import format_oicp_datetime
from shared.oicp.geo import GeoFormatError, lat_lon_of
from shared.oicp.ids import normalize_id
from shared.oicp.messages import PullEvseDataRequest
from shared.oicp.types import ActionType, DeltaType, EvseDataRecord
from shared.stores.push import ApplyResult
from shared.stores.redis import KeySpace

__all__ = ["EvseDataQuery", "EvseDataStore", "StoredEvseData"]

DEFAULT_TOMBSTONE_RETENTION_SECONDS = 30 * 86400
#: Lifetime of a cached query result: long enough for an EMP to page through, short enough to bound
#: the memory of abandoned queries (every write makes the cached results unreachable anyway).
QUERY_CACHE_TTL_SECONDS = 120
#: Tombstones pruned by one write at most, so that a write after a long pause stays short.
PRUNE_BATCH = 1000
#: Redis GEO cannot index positions nearer to the poles than this (EPSG:3857 limits).
GEO_MAX_LATITUDE = 85.05112878
#: Redis ranks are 64-bit: a page start beyond any real set is clamped here (answers an empty page).
MAX_RANK = 2**62

# Fields of a record in the script arguments, and where the records start.
_RECORD_FIELDS = 7
_FIRST_RECORD = 10

# KEYS: 1 body, 2 meta, 3 live, 4 changes, 5 tombstones, 6 geo, 7 operators, 8 generation, 9 the
# pushing operator's index.
# ARGV: 1 action (or "prune"), 2 now (UTC ISO, fixed width), 3 now (µs, change score), 4 prune cutoff
# (µs), 5 prune batch, 6 operator directory value, 7 OperatorID, 8 OperatorName, 9 operator norm, then per
# record: ID, EvseID, body JSON, content hash, longitude, latitude ("" = not in the GEO set), index keys
# (JSON list). Returns {conflicts, changed, deleted, pruned}; with conflicts nothing is written.
_APPLY = """
local action, now, score = ARGV[1], ARGV[2], ARGV[3]
local FIELDS, FIRST = 7, 10
local conflicts, changed, deleted = {}, {}, {}

local function is_live(id) return redis.call('ZSCORE', KEYS[3], id) ~= false end

if action == 'insert' or action == 'update' then
  for i = FIRST, #ARGV, FIELDS do
    if is_live(ARGV[i]) == (action == 'insert') then table.insert(conflicts, ARGV[i + 1]) end
  end
  if #conflicts > 0 then return {conflicts, changed, deleted, 0} end
end

local function unindex(id, meta)
  for _, key in ipairs(meta['x']) do redis.call('ZREM', key, id) end
  redis.call('ZREM', KEYS[6], id)
end

local function tombstone(id)
  local meta = cjson.decode(redis.call('HGET', KEYS[2], id))
  meta['d'] = now
  meta['u'] = now
  redis.call('HSET', KEYS[2], id, cjson.encode(meta))
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[4], score, id)
  redis.call('ZADD', KEYS[5], score, id)
  return meta['e']
end

local function upsert(i)
  local id, evse, body, hash = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local lon, lat, index = ARGV[i + 4], ARGV[i + 5], cjson.decode(ARGV[i + 6])
  local created = now
  local raw = redis.call('HGET', KEYS[2], id)
  if raw then
    local old = cjson.decode(raw)
    if old['d'] == '' then
      -- Same content (record, operator, name): not a change, keeps its lastUpdate.
      if old['h'] == hash then return end
      created = old['c']
    end
    unindex(id, old)
  end
  local meta = {e = evse, o = ARGV[7], n = ARGV[8], c = created, u = now, d = '', h = hash, x = index}
  redis.call('HSET', KEYS[1], id, body)
  redis.call('HSET', KEYS[2], id, cjson.encode(meta))
  for _, key in ipairs(index) do redis.call('ZADD', key, 0, id) end
  if lat ~= '' then redis.call('GEOADD', KEYS[6], lon, lat, id) end
  redis.call('ZADD', KEYS[3], 0, id)
  redis.call('ZADD', KEYS[4], score, id)
  redis.call('ZREM', KEYS[5], id)
  table.insert(changed, evse)
end

if action ~= 'prune' then
  redis.call('HSET', KEYS[7], ARGV[9], ARGV[6])
  if action == 'fullLoad' then
    local keep = {}
    for i = FIRST, #ARGV, FIELDS do keep[ARGV[i]] = true end
    for _, id in ipairs(redis.call('ZINTER', 2, KEYS[9], KEYS[3])) do
      if not keep[id] then table.insert(deleted, tombstone(id)) end
    end
  end
  for i = FIRST, #ARGV, FIELDS do
    if action == 'delete' then
      if is_live(ARGV[i]) then
        tombstone(ARGV[i])
        table.insert(deleted, ARGV[i + 1])
      end
    else
      upsert(i)
    end
  end
end

local expired = redis.call('ZRANGE', KEYS[5], '-inf', '(' .. ARGV[4], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(expired) do
  local raw = redis.call('HGET', KEYS[2], id)
  if raw then unindex(id, cjson.decode(raw)) end
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZREM', KEYS[5], id)
end
if #changed + #deleted + #expired > 0 then redis.call('INCR', KEYS[8]) end
return {conflicts, changed, deleted, #expired}
"""

# KEYS: 1 generation, 2 live, 3 changes, 4 geo.
# ARGV: 1 cache key prefix, 2 query hash, 3 TTL, 4 page start, 5 page stop, 6 query spec (JSON:
# {since: µs or absent, geo: [lon, lat, km] or absent, groups: [[index key, ...], ...]}). Numbers travel
# as strings: Redis turns Lua numbers into arguments with 14 significant digits, too few for µs.
# Returns {total, ids of the page}. Reads only index keys, never the record hashes.
_QUERY = """
local spec = cjson.decode(ARGV[6])
local result = KEYS[2]
if spec['since'] or spec['geo'] or #spec['groups'] > 0 then
  result = ARGV[1] .. (redis.call('GET', KEYS[1]) or '0') .. ':' .. ARGV[2]
  if redis.call('EXISTS', result) == 0 then
    local parts, temporary = {}, {}
    if spec['since'] then
      local window = result .. ':since'
      redis.call('ZRANGESTORE', window, KEYS[3], spec['since'], '+inf', 'BYSCORE')
      table.insert(parts, window)
      table.insert(temporary, window)
    else
      table.insert(parts, KEYS[2])
    end
    if spec['geo'] then
      local area = result .. ':geo'
      local g = spec['geo']
      redis.call('GEOSEARCHSTORE', area, KEYS[4], 'FROMLONLAT', g[1], g[2], 'BYRADIUS', g[3], 'km')
      table.insert(parts, area)
      table.insert(temporary, area)
    end
    for n, group in ipairs(spec['groups']) do
      if #group == 1 then
        table.insert(parts, group[1])
      else
        local union = result .. ':any' .. n
        redis.call('ZUNIONSTORE', union, #group, unpack(group))
        table.insert(parts, union)
        table.insert(temporary, union)
      end
    end
    local args = {'ZINTERSTORE', result, #parts}
    for _, key in ipairs(parts) do table.insert(args, key) end
    table.insert(args, 'WEIGHTS')
    -- Weights 0: every score becomes 0, so the result is ordered by ID like the live set.
    for _ = 1, #parts do table.insert(args, 0) end
    redis.call(unpack(args))
    if #temporary > 0 then redis.call('DEL', unpack(temporary)) end
    redis.call('EXPIRE', result, tonumber(ARGV[3]))
  end
end
return {redis.call('ZCARD', result), redis.call('ZRANGE', result, ARGV[4], ARGV[5])}
"""


@dataclass(frozen=True)
class StoredEvseData:
    evse_id: str
    """The EvseID as last pushed."""
    operator_id: str
    operator_name: str
    record: dict[str, Any]
    """The EvseDataRecord in OICP JSON (as from ``EvseDataRecord.to_oicp()``, without deltaType/lastUpdate)."""
    last_update: datetime
    created: datetime
    deleted_at: datetime | None = None
    """Set for a tombstone (only :meth:`EvseDataStore.tombstones` returns those)."""


@dataclass
class EvseDataQuery:
    """The filters of a PullEvseData (DIGEST §9.2): any-of within a list, AND across fields; an empty
    list filters nothing (like an absent one)."""

    country_codes: list[str] = field(default_factory=list)
    operator_ids: list[str] = field(default_factory=list)
    authentication_modes: list[str] = field(default_factory=list)
    accessibility: list[str] = field(default_factory=list)
    calibration_law_data_availability: list[str] = field(default_factory=list)
    renewable_energy: bool | None = None
    is_hubject_compatible: bool | None = None
    is_open_24_hours: bool | None = None
    search_center: tuple[float, float, float] | None = None
    """(latitude, longitude, radius in km)."""
    last_call: datetime | None = None
    """Delta pull: only records inserted, updated or deleted at or after this time, with deltaType."""

    @classmethod
    def from_request(cls, request: PullEvseDataRequest) -> EvseDataQuery:
        """The query of a PullEvseData body; GeoFormatError (a ValueError) for a SearchCenter that is no
        position on Earth."""
        search_center = None
        if request.search_center is not None:
            latitude, longitude = lat_lon_of(request.search_center.geo_coordinates)
            search_center = (latitude, longitude, float(request.search_center.radius))
        return cls(
            country_codes=list(request.country_codes or []),
            operator_ids=list(request.operator_ids or []),
            authentication_modes=[m.value for m in request.authentication_modes or []],
            accessibility=[a.value for a in request.accessibility or []],
            calibration_law_data_availability=[c.value for c in request.calibration_law_data_availability or []],
            renewable_energy=request.renewable_energy,
            is_hubject_compatible=request.is_hubject_compatible,
            is_open_24_hours=request.is_open_24_hours,
            search_center=search_center,
            last_call=request.last_call,
        )


class EvseDataStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: KeySpace,
        scope: str,
        tombstone_retention_seconds: float = DEFAULT_TOMBSTONE_RETENTION_SECONDS,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._scope = scope
        self._retention = timedelta(seconds=tombstone_retention_seconds)
        self._apply_script = redis.register_script(_APPLY)
        self._query_script = redis.register_script(_QUERY)

    # ----------------------------------------------------------------------------------------------
    # keys
    # ----------------------------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return self._keys.key(self._scope, "evse-data", *parts)

    def _index(self, name: str, value: str) -> str:
        return self._key("idx", name, value)

    def _index_keys(self, operator_norm: str, record: EvseDataRecord) -> list[str]:
        """The filter indexes a record is a member of.

        Booleans are indexed from the record's own mandatory fields: IsOpen24Hours and
        IsHubjectCompatible are the CPO's declarations (not derived from OpeningTimes or anything else),
        so an EMP filtering on them gets records that say what it asked for.
        """
        keys = [
            self._index("operator", operator_norm),
            self._index("country", record.address.country.upper()),
            self._index("accessibility", record.accessibility.value),
            self._index("calibration", record.calibration_law_data_availability.value),
            self._index("renewable", _flag(record.renewable_energy)),
            self._index("hubject", _flag(record.is_hubject_compatible)),
            self._index("open24", _flag(record.is_open_24_hours)),
        ]
        keys += [self._index("auth", mode.value) for mode in dict.fromkeys(record.authentication_modes)]
        return keys

    def _groups(self, q: EvseDataQuery) -> list[list[str]]:
        lists = [
            ("country", [c.upper() for c in q.country_codes]),
            ("operator", [normalize_id(o) for o in q.operator_ids]),
            ("auth", q.authentication_modes),
            ("accessibility", q.accessibility),
            ("calibration", q.calibration_law_data_availability),
        ]
        flags = [
            ("renewable", q.renewable_energy),
            ("hubject", q.is_hubject_compatible),
            ("open24", q.is_open_24_hours),
        ]
        groups = [sorted({self._index(name, v) for v in values}) for name, values in lists if values]
        groups += [[self._index(name, _flag(value))] for name, value in flags if value is not None]
        return sorted(groups)

    # ----------------------------------------------------------------------------------------------
    # writes
    # ----------------------------------------------------------------------------------------------

    async def apply(
        self,
        action: ActionType | str,
        operator_id: str,
        operator_name: str,
        records: list[EvseDataRecord],
        at: datetime,
    ) -> ApplyResult:
        """Apply one push of ``operator_id`` atomically (DIGEST §9.1).

        ``fullLoad``: the records become the operator's complete set (the others are deleted; an empty
        list deletes all). ``insert``: if any EvseID is already there nothing is applied (conflicts).
        ``update``: if any is not there nothing is applied (conflicts). ``delete``: unknown ones are
        ignored. A record whose content is unchanged is not reported and keeps its lastUpdate. If an
        EvseID occurs twice in one push, the last occurrence counts.
        """
        action = ActionType(action)
        operator_norm = normalize_id(operator_id)
        by_id: dict[str, EvseDataRecord] = {normalize_id(r.evse_id): r for r in records}
        args: list[Any] = [
            action.value,
            _timestamp(at),
            _score(at),
            _score(at - self._retention),
            PRUNE_BATCH,
            orjson.dumps([operator_id, operator_name]),
            operator_id,
            operator_name,
            operator_norm,
        ]
        for evse_norm, record in by_id.items():
            if action is ActionType.DELETE:
                args += [evse_norm, record.evse_id, "", "", "", "", "[]"]
                continue
            body = _body(record)
            content_hash = hashlib.sha1(b"\0".join([body, operator_id.encode(), operator_name.encode()])).hexdigest()
            longitude, latitude = _geo_position(record)
            index = orjson.dumps(self._index_keys(operator_norm, record))
            args += [evse_norm, record.evse_id, body, content_hash, longitude, latitude, index]
        conflicts, changed, deleted, _ = await self._apply_script(keys=self._apply_keys(operator_norm), args=args)
        return ApplyResult(conflicts=_decoded(conflicts), changed=_decoded(changed), deleted=_decoded(deleted))

    async def prune(self, at: datetime) -> int:
        """Drop tombstones deleted before ``at`` minus the retention; the number dropped. (Every write
        prunes a batch anyway; this is for a node that stopped receiving writes.)"""
        args = ["prune", _timestamp(at), _score(at), _score(at - self._retention), PRUNE_BATCH, "", "", "", ""]
        total = 0
        while True:
            *_, pruned = await self._apply_script(keys=self._apply_keys(""), args=args)
            total += int(pruned)
            if int(pruned) < PRUNE_BATCH:
                return total

    def _apply_keys(self, operator_norm: str) -> list[str]:
        return [
            self._key("body"),
            self._key("meta"),
            self._key("live"),
            self._key("changes"),
            self._key("tombstones"),
            self._key("geo"),
            self._key("operators"),
            self._key("generation"),
            self._index("operator", operator_norm),
        ]

    # ----------------------------------------------------------------------------------------------
    # reads
    # ----------------------------------------------------------------------------------------------

    async def get_many(self, evse_ids: list[str]) -> dict[str, StoredEvseData | None]:
        """The live record of each EvseID (None for unknown or deleted ones), keyed as asked."""
        stored = await self._read([normalize_id(e) for e in evse_ids])
        return {
            evse_id: s if s is not None and s.deleted_at is None else None
            for evse_id, s in zip(evse_ids, stored, strict=True)
        }

    async def tombstones(self, evse_ids: list[str]) -> dict[str, StoredEvseData | None]:
        """The last content of each deleted EvseID (None for live or unknown ones), keyed as asked."""
        stored = await self._read([normalize_id(e) for e in evse_ids])
        return {
            evse_id: s if s is not None and s.deleted_at is not None else None
            for evse_id, s in zip(evse_ids, stored, strict=True)
        }

    async def evse_ids_of_operator(self, operator_id: str) -> list[str]:
        """The live EvseIDs (as pushed) of an operator, sorted."""
        ids = await self._redis.zinter([self._index("operator", normalize_id(operator_id)), self._key("live")])
        if not ids:
            return []
        metas = await self._redis.hmget(self._key("meta"), ids)
        return sorted(orjson.loads(m)["e"] for m in metas if m is not None)

    async def operators(self) -> dict[str, tuple[str, str]]:
        """Operator norm -> (OperatorID, OperatorName) as last pushed."""
        directory = {}
        for operator_norm, value in (await self._redis.hgetall(self._key("operators"))).items():
            operator_id, operator_name = orjson.loads(value)
            directory[operator_norm.decode()] = (operator_id, operator_name)
        return directory

    async def count(self) -> int:
        """Number of live records."""
        return int(await self._redis.zcard(self._key("live")))

    async def query(self, q: EvseDataQuery, page: int, size: int) -> tuple[list[dict[str, Any]], int]:
        """Page ``page`` (0-based) of ``size`` matches in EvseID order, as PullEvseDataRecord OICP JSON
        (coordinates as stored), and the total number of matches.

        Without LastCall only live records match; with LastCall the records changed at or after it,
        deleted ones included, each with its deltaType (``insert`` if created at or after LastCall).
        """
        if page < 0 or size < 1:
            raise ValueError("page must be >= 0 and size >= 1")
        spec: dict[str, Any] = {"groups": self._groups(q)}
        if q.last_call is not None:
            spec["since"] = str(_score(q.last_call))
        if q.search_center is not None:
            latitude, longitude, radius_km = q.search_center
            if not -GEO_MAX_LATITUDE <= latitude <= GEO_MAX_LATITUDE or not -180 <= longitude <= 180:
                raise GeoFormatError(f"a search centre must lie within ±{GEO_MAX_LATITUDE}° latitude")
            spec["geo"] = [repr(longitude), repr(latitude), repr(max(radius_km, 0.0))]
        encoded = orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)
        start = min(page * size, MAX_RANK)
        total, ids = await self._query_script(
            keys=[self._key("generation"), self._key("live"), self._key("changes"), self._key("geo")],
            args=[
                self._key("q", ""),
                hashlib.sha1(encoded).hexdigest(),
                QUERY_CACHE_TTL_SECONDS,
                start,
                min(start + size - 1, MAX_RANK),
                encoded,
            ],
        )
        records = []
        # A record pruned between the two calls is skipped: the page is then one shorter.
        for stored in await self._read(ids):
            if stored is not None:
                records.append(_pull_record(stored, q.last_call))
        return records, int(total)

    async def in_area(
        self, latitude: float, longitude: float, radius_km: float, page: int, size: int
    ) -> tuple[list[dict[str, Any]], int]:
        """The live records within ``radius_km`` of a point (a query with only a search centre)."""
        return await self.query(EvseDataQuery(search_center=(latitude, longitude, radius_km)), page, size)

    async def _read(self, ids: list[bytes] | list[str]) -> list[StoredEvseData | None]:
        """Body and meta of exactly these IDs (one MULTI, so body and meta belong together)."""
        if not ids:
            return []
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hmget(self._key("body"), ids)
            pipe.hmget(self._key("meta"), ids)
            bodies, metas = await pipe.execute()
        return [_stored(body, meta) for body, meta in zip(bodies, metas, strict=True)]


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _body(record: EvseDataRecord) -> bytes:
    """The record as stored: OICP JSON without the fields this store sets on pulls."""
    data = record.to_oicp()
    data.pop("deltaType", None)
    data.pop("lastUpdate", None)
    return orjson.dumps(data)


def _geo_position(record: EvseDataRecord) -> tuple[str, str]:
    """(longitude, latitude) for the GEO set; ("", "") when the coordinates are unusable or too near a
    pole for Redis - such a record is stored and served but never found by a SearchCenter."""
    try:
        latitude, longitude = lat_lon_of(record.geo_coordinates)
    except GeoFormatError:
        return "", ""
    if abs(latitude) > GEO_MAX_LATITUDE:
        return "", ""
    return repr(longitude), repr(latitude)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _score(moment: datetime) -> int:
    """Microseconds since the epoch: exact in a zset score (below 2**53 until the year 2255)."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _decoded(values: list[bytes]) -> list[str]:
    return [v.decode() for v in values]


def _stored(body: bytes | None, meta: bytes | None) -> StoredEvseData | None:
    if body is None or meta is None:
        return None
    m = orjson.loads(meta)
    return StoredEvseData(
        evse_id=m["e"],
        operator_id=m["o"],
        operator_name=m["n"],
        record=orjson.loads(body),
        last_update=datetime.fromisoformat(m["u"]),
        created=datetime.fromisoformat(m["c"]),
        deleted_at=datetime.fromisoformat(m["d"]) if m["d"] else None,
    )


def _pull_record(stored: StoredEvseData, last_call: datetime | None) -> dict[str, Any]:
    """PullEvseDataRecord OICP JSON: the record + OperatorID, OperatorName, lastUpdate (+ deltaType)."""
    record = {
        **stored.record,
        "OperatorID": stored.operator_id,
        "OperatorName": stored.operator_name,
        "lastUpdate": format_oicp_datetime(stored.last_update),
    }
    if last_call is not None:
        if stored.deleted_at is not None:
            delta = DeltaType.DELETE
        elif stored.created >= last_call:
            delta = DeltaType.INSERT
        else:
            delta = DeltaType.UPDATE
        record["deltaType"] = delta.value
    return record
