"""The baseline of ``full_load`` and ``cdr_flow``: a bare OICP endpoint in a process of its own.

One aiohttp server (uvloop, like the node) that does the job the simplest way: parse the JSON body,
keep everything in dicts, answer ``000``. No schema validation, no broker, no Redis, no persistence.

* ``POST …/operators/{operatorID}/data-records`` (PushEvseData): ActionType semantics per operator
  (``fullLoad`` replaces the operator's set, ``insert`` refuses existing EvseIDs with 009, ``update``
  missing ones, ``delete``), records kept as parsed, in a dict by EvseID.
* ``POST …/providers/{providerID}/data-records?page=&size=`` (PullEvseData, no filters): the records of
  every operator in EvseID order, sliced per page (the sorted list is kept until the next write), with
  the page fields of a Spring page like the node's answer.
* ``POST …/operators/{operatorID}/charge-detail-record`` (ChargeDetailRecord): one CDR per SessionID
  (the same again: ``000``, not stored twice; a different one: ``400``), receipt time kept.
* ``GET /control/cdrs`` every stored SessionID with its receipt time (``time.monotonic()``, the
  machine-wide CLOCK_MONOTONIC) and the number of duplicates; ``POST /control/reset`` forgets all.

``python -m bench.bare_oicp_server`` prints ``{"port": N}`` once it listens and exits on SIGTERM or
when its stdin closes (so it never outlives the benchmark). ``BareServer`` is the benchmark's handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import socket
import sys
import time
from typing import Any

import orjson
from aiohttp import web


def _ack(code: str = "000", info: str | None = None) -> web.Response:
    status: dict[str, Any] = {"Code": code}
    if info:
        status["AdditionalInfo"] = info
    return web.Response(
        body=orjson.dumps({"Result": code == "000", "StatusCode": status}), content_type="application/json"
    )


class Store:
    def __init__(self) -> None:
        self.evses: dict[str, dict[str, dict[str, Any]]] = {}  # operator → EvseID → record
        self._sorted: list[dict[str, Any]] | None = None
        self.cdrs: dict[str, tuple[bytes, float]] = {}  # SessionID → (body, receipt)
        self.cdr_duplicates = 0
        self.cdr_conflicts = 0

    async def push_evse_data(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        action = body["ActionType"]
        data = body["OperatorEvseData"]
        operator = data["OperatorID"]
        records = {r["EvseID"]: r for r in data["EvseDataRecord"]}
        current = self.evses.setdefault(operator, {})
        if action == "fullLoad":
            self.evses[operator] = records
        elif action == "insert":
            conflicts = [e for e in records if e in current]
            if conflicts:
                return _ack("009", ", ".join(conflicts[:20]))
            current.update(records)
        elif action == "update":
            conflicts = [e for e in records if e not in current]
            if conflicts:
                return _ack("009", ", ".join(conflicts[:20]))
            current.update(records)
        elif action == "delete":
            for evse in records:
                current.pop(evse, None)
        self._sorted = None
        return _ack()

    async def pull_evse_data(self, request: web.Request) -> web.Response:
        orjson.loads(await request.read())  # parsed like the node does (no filter is applied)
        page = int(request.query.get("page", 0))
        size = int(request.query.get("size", 20))
        if self._sorted is None:
            merged = [r for records in self.evses.values() for r in records.values()]
            self._sorted = sorted(merged, key=lambda r: r["EvseID"])
        total = len(self._sorted)
        content = self._sorted[page * size : (page + 1) * size]
        pages = math.ceil(total / size)
        answer = {
            "content": content,
            "number": page,
            "size": size,
            "totalElements": total,
            "totalPages": pages,
            "first": page == 0,
            "last": page >= pages - 1,
            "numberOfElements": len(content),
            "StatusCode": {"Code": "000"},
        }
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def cdr(self, request: web.Request) -> web.Response:
        raw = await request.read()
        now = time.monotonic()
        body = orjson.loads(raw)
        session_id = body["SessionID"]
        known = self.cdrs.get(session_id)
        if known is not None:
            if known[0] == raw:
                self.cdr_duplicates += 1
                return _ack()
            self.cdr_conflicts += 1
            return _ack("400", "another CDR for this SessionID")
        self.cdrs[session_id] = (raw, now)
        return _ack()

    async def control_cdrs(self, request: web.Request) -> web.Response:
        answer = {
            "received": [[sid, at] for sid, (_, at) in self.cdrs.items()],
            "duplicates": self.cdr_duplicates,
            "conflicts": self.cdr_conflicts,
        }
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def control_reset(self, request: web.Request) -> web.Response:
        self.__init__()  # type: ignore[misc]
        return web.Response(body=b"{}", content_type="application/json")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024**3)
        app.router.add_post("/api/oicp/evsepush/v23/operators/{operator}/data-records", self.push_evse_data)
        app.router.add_post("/api/oicp/evsepull/v23/providers/{provider}/data-records", self.pull_evse_data)
        app.router.add_post("/api/oicp/cdrmgmt/v22/operators/{operator}/charge-detail-record", self.cdr)
        app.router.add_get("/control/cdrs", self.control_cdrs)
        app.router.add_post("/control/reset", self.control_reset)
        return app


async def serve() -> None:
    runner = web.AppRunner(Store().app(), access_log=None, handle_signals=False)
    await runner.setup()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    await web.SockSite(runner, sock).start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def watch_stdin() -> None:
        await reader.read()
        stop.set()

    watcher = asyncio.create_task(watch_stdin())
    print(orjson.dumps({"port": sock.getsockname()[1]}).decode(), flush=True)
    await stop.wait()
    watcher.cancel()
    await runner.cleanup()


class BareServer:
    """The benchmark's handle on the bare server process."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, wait_s: float = 30) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.bare_oicp_server",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), wait_s)
        if not line:
            raise RuntimeError(f"bare server exited with {await self.process.wait()}")
        self.url = f"http://127.0.0.1:{orjson.loads(line)['port']}"

    async def stop(self) -> None:
        if self.process and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def main() -> None:
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve())


if __name__ == "__main__":
    main()
