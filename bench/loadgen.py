"""An HTTP load generator process for the gateway ingest scenario: ``python -m bench.loadgen``.

The scenario starts one or more of these (``--ingest-drivers``), each a process of its own so the
driver never shares an event loop with the benchmark or with the system under test. A driver reads
its job (JSON) on stdin and writes its result (JSON) on stdout.

The client is deliberately minimal, so that it is not the bottleneck: keep-alive HTTP/1.1
connections on ``asyncio`` protocols (uvloop), the requests written as prepared bytes and the
answers parsed by ``httptools`` (llhttp, as uvicorn uses), no connection pool logic beyond a free
list. Whether it was the limit shows in the result: its CPU seconds per second of the phase
(``load_generator_cores``, at most 1 per driver process).

Two modes:

* ``closed``: ``concurrency`` connections, each sends its next request as soon as the previous one is
  answered, for ``warmup`` + ``duration`` seconds; only answers in the ``duration`` window count.
* ``open``: requests are due at ``rate`` per second whatever the answers (open loop); one is sent on
  a free connection (a new one is opened when none is free, up to ``max_connections``); its latency
  runs from the time it was **due**, so a late send (driver or connection shortage) counts against
  the system rather than hiding (no coordinated omission). ``lateness`` says how late sends were.

Every answer is checked: HTTP 200 and an OICP acknowledgement ``Result: true``, ``StatusCode 000``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import httptools
import orjson

from bench.procstats import own_cpu_seconds
from bench.workload import STATUS_CYCLE, percentiles
from tests.support.bodies import evse_record

MAX_ERRORS = 10  # distinct error texts kept per driver


# ---- the workload's bodies (the scenario primes with the same helpers) -------------------------


def status_evse(operator: str, n: int) -> str:
    return f"{operator}*E0{n:06d}"


def data_evse(operator: str, n: int) -> str:
    return f"{operator}*E1{n:06d}"


def evse_data_record(evse_id: str, name: str) -> dict[str, Any]:
    """A complete EvseDataRecord; ``name`` makes each version of a record differ from the last."""
    return evse_record(evse_id, name)


def status_body(operator: str, action: str, records: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "ActionType": action,
        "OperatorEvseStatus": {
            "OperatorID": operator,
            "EvseStatusRecord": [{"EvseID": e, "EvseStatus": s} for e, s in records],
        },
    }


def data_body(operator: str, action: str, evse_ids: list[str], name: str) -> dict[str, Any]:
    return {
        "ActionType": action,
        "OperatorEvseData": {
            "OperatorID": operator,
            "OperatorName": "Bench CPO",
            "EvseDataRecord": [evse_data_record(e, name) for e in evse_ids],
        },
    }


def body_maker(job: dict[str, Any]) -> Callable[[int], bytes]:
    """Request ``k``'s body. Status: ``update`` of EVSE ``k mod E`` to the next status of the cycle
    (every EVSE primed with the cycle's first). Data: ``update`` of block ``k mod B`` (``records``
    consecutive EVSEs, every block primed) with a station name of its own, so every request changes
    every record it carries."""
    operator, kind = job["operator"], job["kind"]
    if kind == "status":
        evses = job["evses"]

        def status(k: int) -> bytes:
            round_, n = divmod(k, evses)
            record = (status_evse(operator, n), STATUS_CYCLE[(round_ + 1) % len(STATUS_CYCLE)])
            return orjson.dumps(status_body(operator, "update", [record]))

        return status
    blocks, size = job["blocks"], job["records"]
    ids = [[data_evse(operator, b * size + i) for i in range(size)] for b in range(blocks)]

    def data(k: int) -> bytes:
        return orjson.dumps(data_body(operator, "update", ids[k % blocks], f"Station {k}"))

    return data


# ---- the HTTP client ---------------------------------------------------------------------------


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time, the answer parsed by llhttp."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("connection closed by the server"))

    def _fail(self, exc: BaseException) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.waiter = None
        if self.transport is not None:
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), b"".join(self.body)))
        self.waiter = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None and self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Driver:
    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.host, self.port, self.path = job["host"], job["port"], job["path"]
        self.head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {job['token']}\r\nContent-Type: application/json\r\n"
        ).encode()
        self.make_body = body_maker(job)
        self.index = job["first_index"]
        self.stride = job["stride"]
        self.ok = 0
        self.failures = 0
        self.errors: dict[str, int] = {}
        self.latencies: list[float] = []  # seconds, of the answers that count
        self.issued = 0
        self.free: list[Connection] = []
        self.opened = 0

    def next_request(self) -> bytes:
        body = self.make_body(self.index)
        self.index += self.stride
        self.issued += 1
        return self.head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(Connection, self.host, self.port)
        self.opened += 1
        return conn

    def count(self, problem: str | None) -> None:
        if problem is None:
            self.ok += 1
            return
        self.failures += 1
        if problem in self.errors or len(self.errors) < MAX_ERRORS:
            self.errors[problem] = self.errors.get(problem, 0) + 1

    async def exchange(self, conn: Connection, data: bytes) -> str | None:
        """Send one request and check its answer: None if it is a success, else what went wrong."""
        try:
            status, answer = await conn.request(data)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"[:200]
        if status != 200:
            return f"HTTP {status}: {answer[:120]!r}"
        try:
            parsed = orjson.loads(answer)
            code = parsed["StatusCode"]["Code"]
            result = parsed["Result"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return f"not an acknowledgement: {answer[:120]!r}"
        if result is not True or code != "000":
            return f"StatusCode {code}: {str(parsed['StatusCode'].get('AdditionalInfo'))[:100]}"
        return None

    async def closed_loop(self, start: float) -> dict[str, Any]:
        warmup, duration, concurrency = self.job["warmup"], self.job["duration"], self.job["concurrency"]
        counted_from, end = start + warmup, start + warmup + duration
        conns = [await self.connect() for _ in range(concurrency)]
        await asyncio.sleep(max(0.0, start - time.monotonic()))

        async def worker(conn: Connection) -> None:
            while (now := time.monotonic()) < end:
                if conn.closed:
                    conn = await self.connect()
                problem = await self.exchange(conn, self.next_request())
                done = time.monotonic()
                if counted_from <= done <= end:  # the warm-up and the answers after the end do not count
                    self.count(problem)
                    if problem is None:
                        self.latencies.append(done - now)

        await asyncio.gather(*(worker(c) for c in conns))
        for conn in conns:
            conn.close()
        return {"window_s": duration}

    async def open_loop(self, start: float) -> dict[str, Any]:
        rate, duration = self.job["rate"], self.job["duration"]
        max_connections = self.job["max_connections"]
        total = int(rate * duration)
        self.free = [await self.connect() for _ in range(min(self.job["concurrency"], max_connections))]
        in_flight: set[asyncio.Task[None]] = set()
        lateness: list[float] = []
        available = asyncio.Event()

        async def one(due: float, data: bytes) -> None:
            conn = None
            try:
                if self.free:
                    conn = self.free.pop()
                else:
                    conn = await self.connect()
                problem = await self.exchange(conn, data)
                self.count(problem)
                if problem is None:
                    self.latencies.append(time.monotonic() - due)
            except Exception as exc:  # the connection could not be opened
                self.count(f"{type(exc).__name__}: {exc}"[:200])
            finally:
                if conn is not None:
                    if conn.closed:
                        self.opened -= 1
                    else:
                        self.free.append(conn)
                available.set()

        await asyncio.sleep(max(0.0, start - time.monotonic()))
        for i in range(total):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            while not self.free and self.opened >= max_connections:
                available.clear()
                await available.wait()
            lateness.append(max(0.0, time.monotonic() - due))
            task = asyncio.create_task(one(due, self.next_request()))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        sent_until = time.monotonic()
        if in_flight:
            await asyncio.gather(*in_flight)
        for conn in self.free:
            conn.close()
        return {
            "window_s": duration,
            "send_s": round(sent_until - start, 3),
            "lateness_ms": percentiles(lateness, quantiles=(50, 90, 99)),
            "connections": self.opened,
        }


async def main_async(job: dict[str, Any]) -> dict[str, Any]:
    driver = Driver(job)
    start = job["start_at"]
    late_start = time.monotonic() - start  # > 0: this process came up after the common start
    cpu_before = own_cpu_seconds()  # the driver's own CPU from here on (not its start-up)
    if job["mode"] == "closed":
        extra = await driver.closed_loop(start)
    else:
        extra = await driver.open_loop(start)
    return {
        "ok": driver.ok,
        "failures": driver.failures,
        "errors": driver.errors,
        "issued": driver.issued,
        "latencies": [round(v, 6) for v in driver.latencies],
        "cpu_s": round(own_cpu_seconds() - cpu_before, 2),
        "late_start_s": round(late_start, 3),
        **extra,
    }


def main() -> None:
    import uvloop

    job = orjson.loads(sys.stdin.buffer.read())
    result = uvloop.run(main_async(job))
    sys.stdout.buffer.write(orjson.dumps(result))


if __name__ == "__main__":
    main()
