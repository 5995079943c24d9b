"""EMP sinks: N plain OICP peers, each its own aiohttp server on loopback, in a process of their own.

The sinks run apart from the benchmark's driver so that neither the node's driver nor the in-process
baseline sender competes with them for one event loop; receipt times are ``time.monotonic()``, which
on Linux is the system-wide CLOCK_MONOTONIC and so comparable with the driver's send times.

``python -m bench.sinks --count N`` prints one JSON line ``{"control": port, "ports": [...]}`` once
every sink listens, and exits on SIGTERM or when its stdin closes (so it never outlives the
benchmark, even one that was killed). The control server (``SinkControl`` is its client):

* ``POST /reset``    forget the records received so far; ``{"state": true}`` also the sinks' state
* ``POST /expect``   ``{EvseID: status}``: the state every sink must end with
* ``GET /progress``  requests, records, last receipt, sinks/records not yet at the expected state
* ``GET /dump``      per sink: request count, batch sizes, and every record as [EvseID, status, t]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web

ACK = orjson.dumps({"Result": True, "StatusCode": {"Code": "000", "Description": "Success"}})
SINK_INDEX = web.AppKey("sink_index", int)


def _listening_socket() -> socket.socket:
    # Bound here and handed to aiohttp, so the port is known without a free-port race.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


class SinkFleet:
    """The sinks and what they received."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.records: list[list[tuple[str, str, float]]] = [[] for _ in range(count)]
        self.batches: list[list[int]] = [[] for _ in range(count)]
        self.latest: list[dict[str, str]] = [{} for _ in range(count)]
        self.other = 0  # requests that were not a PushEvseStatus
        self.expected: dict[str, str] = {}
        self.last_receipt = 0.0
        self.ports: list[int] = []
        self._runners: list[web.AppRunner] = []

    async def _push(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.monotonic()
        index = request.app[SINK_INDEX]
        try:
            records = orjson.loads(body)["OperatorEvseStatus"]["EvseStatusRecord"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.other += 1
            return web.Response(body=ACK, content_type="application/json")
        log, latest = self.records[index], self.latest[index]
        for record in records:
            evse, status = record["EvseID"], record["EvseStatus"]
            log.append((evse, status, now))
            latest[evse] = status
        self.batches[index].append(len(records))
        self.last_receipt = now
        return web.Response(body=ACK, content_type="application/json")

    async def start(self) -> None:
        for index in range(self.count):
            app = web.Application(client_max_size=64 * 2**20)
            app[SINK_INDEX] = index
            app.router.add_post("/{tail:.*}", self._push)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            sock = _listening_socket()
            await web.SockSite(runner, sock).start()
            self._runners.append(runner)
            self.ports.append(sock.getsockname()[1])

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()

    # ---- control ------------------------------------------------------------------------------

    def reset(self, state: bool) -> None:
        # The state (latest status per EVSE) normally survives: a measured phase starts from the
        # primed state, and an EVSE that does not change during it must still count as up to date.
        for index in range(self.count):
            self.records[index] = []
            self.batches[index] = []
            if state:
                self.latest[index] = {}
        self.other = 0
        self.expected = {}
        self.last_receipt = 0.0

    def progress(self) -> dict[str, Any]:
        behind_sinks = behind_records = 0
        for latest in self.latest:
            behind = sum(1 for evse, status in self.expected.items() if latest.get(evse) != status)
            behind_records += behind
            behind_sinks += behind > 0
        return {
            "requests": sum(len(b) for b in self.batches),
            "records": sum(len(r) for r in self.records),
            "other": self.other,
            "last_receipt": self.last_receipt,
            "behind_sinks": behind_sinks,
            "behind_records": behind_records,
        }

    def control_app(self) -> web.Application:
        async def reset(request: web.Request) -> web.Response:
            self.reset(state=bool(orjson.loads(await request.read() or b"{}").get("state")))
            return web.json_response({"reset": True})

        async def expect(request: web.Request) -> web.Response:
            self.expected = orjson.loads(await request.read())
            return web.json_response({"expected": len(self.expected)})

        async def progress(request: web.Request) -> web.Response:
            return web.Response(body=orjson.dumps(self.progress()), content_type="application/json")

        async def dump(request: web.Request) -> web.Response:
            body = orjson.dumps(
                {"sinks": [{"batches": b, "records": r} for b, r in zip(self.batches, self.records, strict=True)]}
            )
            return web.Response(body=body, content_type="application/json")

        app = web.Application(client_max_size=256 * 2**20)
        app.router.add_post("/reset", reset)
        app.router.add_post("/expect", expect)
        app.router.add_get("/progress", progress)
        app.router.add_get("/dump", dump)
        return app


async def serve(count: int) -> None:
    fleet = SinkFleet(count)
    await fleet.start()
    control = web.AppRunner(fleet.control_app(), access_log=None, handle_signals=False)
    await control.setup()
    sock = _listening_socket()
    await web.SockSite(control, sock).start()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Stdin closes when the benchmark process goes away, however it ends.
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def watch_stdin() -> None:
        await reader.read()
        stop.set()

    watcher = asyncio.create_task(watch_stdin())
    print(orjson.dumps({"control": sock.getsockname()[1], "ports": fleet.ports}).decode(), flush=True)
    await stop.wait()
    watcher.cancel()
    await control.cleanup()
    await fleet.stop()


class SinkControl:
    """The benchmark's handle on a sink process: start, control, stop."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.process: asyncio.subprocess.Process | None = None
        self.ports: list[int] = []
        self.control_url = ""
        self._http: aiohttp.ClientSession | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    async def start(self, wait_s: float = 30) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.sinks",
            "--count",
            str(self.count),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), wait_s)
        if not line:
            raise RuntimeError(f"sink process exited with {await self.process.wait()}")
        ready = orjson.loads(line)
        self.ports, self.control_url = ready["ports"], f"http://127.0.0.1:{ready['control']}"
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        assert self._http is not None
        data = orjson.dumps(body) if body is not None else None
        async with self._http.request(method, self.control_url + path, data=data) as response:
            response.raise_for_status()
            return orjson.loads(await response.read())

    async def reset(self, state: bool = False) -> None:
        await self._call("POST", "/reset", {"state": state})

    async def expect(self, state: dict[str, str]) -> None:
        await self._call("POST", "/expect", state)

    async def progress(self) -> dict[str, Any]:
        return await self._call("GET", "/progress")

    async def dump(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/dump"))["sinks"]

    async def wait_converged(self, deadline: float, quiet_s: float = 1.0) -> dict[str, Any]:
        """Until every sink holds the expected state and nothing arrived for ``quiet_s`` (a late,
        stale delivery would otherwise go unnoticed), or the monotonic ``deadline``.

        Returns the last progress with ``converged_at`` (first moment all sinks agreed) or None.
        """
        converged_at: float | None = None
        while True:
            progress = await self.progress()
            now = time.monotonic()
            if progress["behind_records"] == 0:
                converged_at = converged_at or now
                if now - max(progress["last_receipt"], converged_at) >= quiet_s:
                    return {**progress, "converged_at": converged_at}
            else:
                converged_at = None
            if now > deadline:
                return {**progress, "converged_at": None}
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._http:
            await self._http.close()
        if self.process and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="N OICP sink peers for the benchmarks")
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.count))


if __name__ == "__main__":
    main()
