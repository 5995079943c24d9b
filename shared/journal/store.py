"""The journal in Redis: the raw stream, the sealer, the sealed chain, its indexes, search, verification,
retention and export.

Keys (under the node's prefix):

* ``journal:raw`` — stream the processes append to (unordered producers, one stream);
* ``journal:sealed`` — stream of sealed entries, stream ID ``<seq>-0``, fields ``e`` (canonical bytes)
  and ``h`` (hash);
* ``journal:meta`` — hash: ``seq`` and ``head`` (last sealed), ``raw_last`` (last raw ID sealed, for information),
  ``anchor_seq``/``anchor_hash`` (first entry kept after retention and the hash it follows);
* ``journal:idx:<kind>:<value>`` — sorted sets of seqs scored by time, for session, evse, cdr, peer,
  operation, status, and ``journal:idx:time`` for all; ``journal:indexes`` lists them (retention);
* ``journal:sealer`` — the lease of the one sealer.

Sealing needs one writer: whoever holds the lease seals; every batch is one MULTI/EXEC under WATCH of
``journal:meta``, so even a sealer that lost its lease without knowing can never fork the chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from shared.journal.entry import GENESIS_HASH, ChainVerifier, index_keys, seal
from shared.journal.recorder import raw_stream_key
from shared.settings import JournalSettings
from shared.stores.redis import KeySpace, Leases

logger = logging.getLogger(__name__)

SEAL_BATCH = 500
LEASE_MS = 10_000
TRIM_EVERY_SECONDS = 60.0
VERIFY_CHUNK = 1000
MAX_SEARCH = 1000


@dataclass(frozen=True)
class Query:
    session: str | None = None
    evse: str | None = None
    cdr: str | None = None
    peer: str | None = None
    operation: str | None = None
    status: str | None = None
    start: float | None = None  # unix seconds, inclusive
    end: float | None = None  # unix seconds, inclusive
    limit: int = 100

    def filters(self) -> list[tuple[str, str]]:
        pairs = [
            ("session", self.session),
            ("evse", self.evse),
            ("cdr", self.cdr),
            ("peer", self.peer),
            ("operation", self.operation),
            ("status", self.status),
        ]
        return [(k, v) for k, v in pairs if v is not None]


def _seq_of(stream_id: bytes | str) -> int:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(text.split("-")[0])


class JournalStore:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace) -> None:
        self._redis = redis
        self._keys = keys
        self.raw = raw_stream_key(keys)
        self.sealed = keys.key("journal", "sealed")
        self.meta = keys.key("journal", "meta")
        self.lease = keys.key("journal", "sealer")
        self.index_set = keys.key("journal", "indexes")
        self.time_index = keys.key("journal", "idx", "time")
        self._leases = Leases(redis)

    def index(self, kind: str, value: str) -> str:
        return self._keys.key("journal", "idx", kind, value)

    # ---- sealing ------------------------------------------------------------------------------------

    async def acquire_lease(self, holder: str, ms: int = LEASE_MS) -> bool:
        return await self._leases.acquire(self.lease, holder, ms)

    async def release_lease(self, holder: str) -> None:
        await self._leases.release(self.lease, holder)

    async def seal_batch(self, limit: int = SEAL_BATCH) -> int:
        """Seal the next raw entries in stream order; the number sealed (0: nothing waits)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(self.meta)
                meta = {k.decode(): v.decode() for k, v in (await pipe.hgetall(self.meta)).items()}
                # sealed raw entries are deleted in the same transaction: whatever is left waits to be sealed
                # (also after the raw stream was deleted and started again with lower IDs)
                raw = await pipe.xrange(self.raw, min="-", max="+", count=limit)
                if not raw:
                    await pipe.unwatch()
                    return 0
                seq, head = int(meta.get("seq", 0)), meta.get("head", GENESIS_HASH)
                pipe.multi()
                for raw_id, fields in raw:
                    try:
                        entry = orjson.loads(fields[b"e"])
                    except (KeyError, orjson.JSONDecodeError):
                        logger.warning("journal: raw entry %s unreadable, skipped", raw_id)
                        continue
                    seq += 1
                    sealed, data, head = seal(entry, seq, head)
                    pipe.xadd(self.sealed, {"e": data, "h": head}, id=f"{seq}-0")
                    ts = float(sealed["ts"])
                    pipe.zadd(self.time_index, {str(seq): ts})
                    for kind, value in index_keys(sealed):
                        key = self.index(kind, value)
                        pipe.zadd(key, {str(seq): ts})
                        pipe.sadd(self.index_set, key)
                last_id = raw[-1][0].decode()
                pipe.hset(self.meta, mapping={"seq": seq, "head": head, "raw_last": last_id})
                pipe.xdel(self.raw, *[raw_id for raw_id, _ in raw])
                await pipe.execute()
                return len(raw)
            except WatchError:
                return 0  # another sealer moved on meanwhile; the caller looks again

    async def unsealed(self) -> tuple[int, float]:
        """Entries waiting for the sealer and the age of the oldest (seconds, 0 when none)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self.raw)
            pipe.xrange(self.raw, count=1)
            length, first = await pipe.execute()
        if not first:
            return int(length), 0.0
        millis = int(first[0][0].decode().split("-")[0])
        return int(length), max(0.0, time.time() - millis / 1000)

    # ---- retention ----------------------------------------------------------------------------------

    async def trim(self, retention_days: float, now: float | None = None) -> int:
        """Delete sealed entries, index entries and unsealed raw entries older than the retention; the
        chain then starts at the first kept entry (anchored by the hash it follows). Returns the seqs cut."""
        cutoff = (now if now is not None else time.time()) - retention_days * 86_400
        old = await self._redis.zrangebyscore(self.time_index, "-inf", f"({cutoff}")
        cut_to = max((int(s) for s in old), default=0)
        removed = 0
        if cut_to:
            anchor = await self._redis.xrange(self.sealed, min=f"{cut_to}-0", max=f"{cut_to}-0")
            async with self._redis.pipeline(transaction=True) as pipe:
                if anchor:
                    pipe.hset(self.meta, mapping={"anchor_seq": cut_to + 1, "anchor_hash": anchor[0][1][b"h"].decode()})
                pipe.xtrim(self.sealed, minid=f"{cut_to + 1}-0")
                await pipe.execute()
            removed = len(old)
        index_keys_ = [k.decode() for k in await self._redis.smembers(self.index_set)]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(self.time_index, "-inf", f"({cutoff}")
            for key in index_keys_:
                pipe.zremrangebyscore(key, "-inf", f"({cutoff}")
            await pipe.execute()
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in index_keys_:
                pipe.zcard(key)
            cards = await pipe.execute()
        empty = [k for k, n in zip(index_keys_, cards, strict=True) if n == 0]
        if empty:
            await self._redis.srem(self.index_set, *empty)
        await self._redis.xtrim(self.raw, minid=str(int(cutoff * 1000)))
        return removed

    # ---- reading ------------------------------------------------------------------------------------

    async def head(self) -> dict[str, Any]:
        meta = {k.decode(): v.decode() for k, v in (await self._redis.hgetall(self.meta)).items()}
        return {
            "seq": int(meta.get("seq", 0)),
            "head": meta.get("head", GENESIS_HASH),
            "anchor_seq": int(meta.get("anchor_seq", 1)),
            "anchor_hash": meta.get("anchor_hash", GENESIS_HASH),
        }

    async def entries(self, seqs: list[int]) -> list[dict[str, Any]]:
        """The sealed entries of these seqs, in this order (trimmed ones left out)."""
        if not seqs:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for seq in seqs:
                pipe.xrange(self.sealed, min=f"{seq}-0", max=f"{seq}-0")
            found = await pipe.execute()
        out = []
        for rows in found:
            for _, fields in rows:
                out.append(self._decode(fields))
        return out

    @staticmethod
    def _decode(fields: dict[bytes, bytes]) -> dict[str, Any]:
        entry: dict[str, Any] = orjson.loads(fields[b"e"])
        entry["hash"] = fields[b"h"].decode()
        return entry

    async def search(self, query: Query) -> list[dict[str, Any]]:
        """Entries matching every filter, newest first, at most ``query.limit``. The most selective given
        index (session, EVSE, CDR before peer, operation, status) bounds the scan; the others filter."""
        limit = max(1, min(query.limit, MAX_SEARCH))
        filters = query.filters()
        key = self.index(*filters[0]) if filters else self.time_index
        rest = filters[1:]
        low = query.start if query.start is not None else "-inf"
        high = query.end if query.end is not None else "+inf"
        results: list[dict[str, Any]] = []
        offset, page = 0, max(limit * 4, 200)
        while len(results) < limit:
            members = await self._redis.zrevrangebyscore(key, high, low, start=offset, num=page)
            if not members:
                break
            offset += len(members)
            for entry in await self.entries([int(m) for m in members]):
                if all(_matches(entry, kind, value) for kind, value in rest):
                    results.append(entry)
                    if len(results) >= limit:
                        break
        return results

    async def export(self, peer: str, start: float | None, end: float | None) -> Iterator[dict[str, Any]]:
        """Every entry exchanged with ``peer`` in the range, oldest first (for a signed bundle)."""
        low = start if start is not None else "-inf"
        high = end if end is not None else "+inf"
        members = await self._redis.zrangebyscore(self.index("peer", peer), low, high)
        seqs = sorted(int(m) for m in members)
        found: list[dict[str, Any]] = []
        for i in range(0, len(seqs), VERIFY_CHUNK):
            found += await self.entries(seqs[i : i + VERIFY_CHUNK])
        return iter(found)

    async def verify(self, from_seq: int | None = None) -> dict[str, Any]:
        """Walk the sealed chain from its anchor (or from ``from_seq``, trusting the hash of the entry
        before it: a quicker look at recent entries) to its head; the first broken link, if any."""
        head = await self.head()
        first_seq, anchor = head["anchor_seq"], head["anchor_hash"]
        if from_seq is not None and first_seq < from_seq <= head["seq"]:
            before = await self._redis.xrange(self.sealed, min=f"{from_seq - 1}-0", max=f"{from_seq - 1}-0")
            if before:
                first_seq, anchor = from_seq, before[0][1][b"h"].decode()
        verifier = ChainVerifier(first_seq, anchor)
        cursor = f"{first_seq}-0"
        first = True
        while True:
            rows = await self._redis.xrange(self.sealed, min=cursor if first else f"({cursor}", count=VERIFY_CHUNK)
            first = False
            if not rows:
                break
            for stream_id, fields in rows:
                if not verifier.feed(_seq_of(stream_id), fields.get(b"e", b""), fields.get(b"h", b"").decode()):
                    break
            if verifier.broken is not None:
                break
            cursor = rows[-1][0].decode()
        verifier.finish(head["seq"], head["head"])
        return {
            "ok": verifier.broken is None,
            "checked": verifier.checked,
            "first_seq": first_seq,
            "last_seq": head["seq"],
            "head": head["head"],
            "broken": verifier.broken.as_dict() if verifier.broken else None,
        }


def _matches(entry: dict[str, Any], kind: str, value: str) -> bool:
    return (kind, value) in index_keys(entry)


class JournalSealer:
    """Background job of the workers: whoever holds the lease seals, and applies the retention."""

    def __init__(self, store: JournalStore, settings: JournalSettings, holder: str | None = None) -> None:
        self.store = store
        self.settings = settings
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self._task: asyncio.Task[None] | None = None
        self._trimmed_at = 0.0

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="journal-sealer")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self._task = None
        with contextlib.suppress(Exception):
            await self.store.release_lease(self.holder)

    async def run_once(self) -> int:
        """One round: take or renew the lease, seal what waits, trim now and then. Entries sealed."""
        if not await self.store.acquire_lease(self.holder):
            return 0
        sealed = 0
        while (n := await self.store.seal_batch()) > 0:
            sealed += n
            await self.store.acquire_lease(self.holder)
        if time.monotonic() - self._trimmed_at > TRIM_EVERY_SECONDS:
            self._trimmed_at = time.monotonic()
            await self.store.trim(self.settings.retention_days)
        return sealed

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                logger.warning("journal sealer: %s", exc)
            except Exception:
                logger.exception("journal sealer failed")
            await asyncio.sleep(self.settings.seal_interval_seconds)
