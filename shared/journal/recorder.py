"""The producers' side of the journal: an OICP answer never waits for it and never fails because of it.

``JOURNAL.record(exchange)`` only puts the exchange on a bounded in-process queue (no await, no I/O);
a background task of the same process drains the queue, builds the entries (digests, zlib-compressed
bodies, searchable keys) and appends them to the node's raw journal stream in Redis, pipelined. A full
queue or a failed write drops the entries and counts them in ``oicp_journal_dropped_total`` (alert
OicpJournalEntriesDropped): a journal outage is a metric, never an OICP outage. The sealer
(:mod:`shared.journal.store`) chains what arrives.

One recorder per process (module-level ``JOURNAL``), started by the process's composition root; until
then (unit tests, tools) ``record`` does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import orjson
import redis.asyncio as aioredis

from shared.journal.entry import OUTBOUND, Exchange, build_entry
from shared.metrics import JOURNAL_DROPPED, JOURNAL_ENTRIES
from shared.settings import JournalSettings
from shared.stores.redis import KeySpace

logger = logging.getLogger(__name__)

BATCH = 256  # entries per pipelined write
RETRY_PAUSE_SECONDS = 0.5  # after a failed write: Redis is not hammered while it is down
WARN_EVERY_SECONDS = 30.0


DROP_REASONS = ("queue_full", "redis")
for _reason in DROP_REASONS:  # at 0 from the start: an increase() sees the first drop
    JOURNAL_DROPPED.labels(_reason)


def raw_stream_key(keys: KeySpace) -> str:
    return keys.key("journal", "raw")


class JournalRecorder:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[Exchange] | None = None
        self._task: asyncio.Task[None] | None = None
        self._redis: aioredis.Redis | None = None
        self._stream = ""
        self._node = ""
        self._settings = JournalSettings()
        self._warned_at = 0.0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, node: str, settings: JournalSettings, redis: aioredis.Redis, keys: KeySpace) -> None:
        if not settings.enabled or self.running:
            return
        self._node, self._settings, self._redis = node, settings, redis
        self._stream = raw_stream_key(keys)
        self._queue = asyncio.Queue(settings.queue_size)
        self._task = asyncio.create_task(self._drain(), name="journal-writer")

    async def stop(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109
        """Write what is queued (within ``timeout``), then stop taking entries."""
        queue, task = self._queue, self._task
        if queue is None or task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(queue.join(), timeout)
        self._queue = None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        self._task = None

    def record(self, exchange: Exchange) -> None:
        """Hand an exchange over; never blocks, never raises."""
        queue = self._queue
        if queue is None:
            return
        try:
            queue.put_nowait(exchange)
        except asyncio.QueueFull:
            JOURNAL_DROPPED.labels("queue_full").inc()

    async def _drain(self) -> None:
        assert self._queue is not None and self._redis is not None
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while len(batch) < BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                JOURNAL_DROPPED.labels("redis").inc(len(batch))
                now = time.monotonic()
                if now - self._warned_at > WARN_EVERY_SECONDS:
                    self._warned_at = now
                    logger.warning("journal entries dropped, the journal write failed: %s", exc)
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
            finally:
                for _ in batch:
                    queue.task_done()

    async def _write(self, batch: list[Exchange]) -> None:
        assert self._redis is not None
        settings = self._settings
        async with self._redis.pipeline(transaction=False) as pipe:
            for exchange in batch:
                entry = build_entry(self._node, exchange, settings.store_bodies)
                pipe.xadd(
                    self._stream, {"e": orjson.dumps(entry)}, maxlen=settings.unsealed_max_entries, approximate=True
                )
            results = await pipe.execute(raise_on_error=False)
        failed = [r for r in results if isinstance(r, Exception)]
        for exchange, result in zip(batch, results, strict=True):
            if not isinstance(result, Exception):
                JOURNAL_ENTRIES.labels(exchange.direction).inc()
        if failed:
            JOURNAL_DROPPED.labels("redis").inc(len(failed))
            now = time.monotonic()
            if now - self._warned_at > WARN_EVERY_SECONDS:
                self._warned_at = now
                logger.warning("%d journal entries dropped, the journal write failed: %s", len(failed), failed[0])


#: The process's recorder (started by the gateway and by every worker).
JOURNAL = JournalRecorder()


class OutboundCall:
    """What PeerClient.call knows of one outbound exchange, journaled when the call ends: only calls
    that were sent (a call held back by the rate limiter or whose TLS files do not load never left)."""

    __slots__ = ("_started", "_ts", "error", "http_status", "operation", "path", "peer", "request", "response")

    def __init__(self, peer: str, operation: str, path: str) -> None:
        self.peer, self.operation, self.path = peer, operation, path
        self._ts, self._started = time.time(), time.perf_counter()
        self.request: bytes | None = None
        self.response: bytes | None = None
        self.http_status: int | None = None
        self.error: str | None = None

    def sent(self, body: bytes) -> bytes:
        self.request = body
        return body

    def answered(self, http_status: int, body: bytes) -> None:
        self.http_status, self.response = http_status, body

    def record(self) -> None:
        if self.request is None:
            return
        JOURNAL.record(
            Exchange(
                ts=self._ts,
                direction=OUTBOUND,
                peer=self.peer,
                operation=self.operation,
                path=self.path,
                request=self.request,
                response=self.response,
                http_status=self.http_status,
                status_code=None,  # read from the answer by the writer, off the caller's path
                error=self.error,
                duration_ms=round((time.perf_counter() - self._started) * 1000, 3),
            )
        )
