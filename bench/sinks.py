"""EMP sinks: N plain OICP peers, each its own aiohttp server on loopback, in a process of their own.

The sinks run apart from the benchmark's driver so that neither the node's driver nor the in-process
baseline sender competes with them for one event loop; receipt times are ``time.monotonic()``, which
on Linux is the system-wide CLOCK_MONOTONIC and so comparable with the driver's send times.

``python -m bench.sinks --count N [--delays 0,0,5,…]`` prints one JSON line ``{"control": port,
"ports": [...]}`` once every sink listens, and exits on SIGTERM or when its stdin closes (so it never outlives the
benchmark, even one that was killed). The control server (``SinkControl`` is its client):

* ``POST /reset``    forget the records received so far; ``{"state": true}`` also the sinks' state
* ``POST /expect``   ``{EvseID: status}``: the state every sink must end with
* ``GET /progress``  requests, records, last receipt, sinks/records not yet at the expected state
                     (in total and per sink, so a caller can wait for some of the sinks only)
* ``GET /dump``      per sink: request count, batch sizes, and every record as [EvseID, status, t]

A sink with a delay (``--delays``, seconds per sink, missing ones 0) records a push when it arrives
and answers it that much later: a slow peer (the isolation scenario). How far each sink is from the
expected state is kept up to date record by record, so ``/progress`` costs nothing however many
sinks and EVSEs there are (10,000 EVSEs × 100 sinks were a million comparisons per poll).
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

    def __init__(self, count: int, delays: list[float] | None = None) -> None:
        self.count = count
        self.delays = [(delays or [])[i] if i < len(delays or []) else 0.0 for i in range(count)]
        self.records: list[list[tuple[str, str, float]]] = [[] for _ in range(count)]
        self.batches: list[list[int]] = [[] for _ in range(count)]
        self.latest: list[dict[str, str]] = [{} for _ in range(count)]
        self.other = 0  # requests that were not a PushEvseStatus
        self.expected: dict[str, str] = {}
        # per sink: the expected EVSEs whose latest status differs from the expected one
        self.behind: list[set[str]] = [set() for _ in range(count)]
        self.last_receipt = 0.0
        self.last_receipts = [0.0] * count
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
        log, latest, behind, expected = self.records[index], self.latest[index], self.behind[index], self.expected
        for record in records:
            evse, status = record["EvseID"], record["EvseStatus"]
            log.append((evse, status, now))
            latest[evse] = status
            if expected:
                want = expected.get(evse)
                if want is not None:
                    if want == status:
                        behind.discard(evse)
                    else:
                        behind.add(evse)
        self.batches[index].append(len(records))
        self.last_receipt = self.last_receipts[index] = now
        if self.delays[index]:
            await asyncio.sleep(self.delays[index])
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
        self.expect({})
        self.last_receipt = 0.0
        self.last_receipts = [0.0] * self.count

    def expect(self, expected: dict[str, str]) -> None:
        self.expected = expected
        self.behind = [
            {evse for evse, status in expected.items() if latest.get(evse) != status} for latest in self.latest
        ]

    def progress(self) -> dict[str, Any]:
        behind = [len(b) for b in self.behind]
        return {
            "requests": sum(len(b) for b in self.batches),
            "records": sum(len(r) for r in self.records),
            "other": self.other,
            "last_receipt": self.last_receipt,
            "behind_sinks": sum(1 for b in behind if b),
            "behind_records": sum(behind),
            "behind_by_sink": behind,
            "last_receipt_by_sink": self.last_receipts,
        }

    def control_app(self) -> web.Application:
        async def reset(request: web.Request) -> web.Response:
            self.reset(state=bool(orjson.loads(await request.read() or b"{}").get("state")))
            return web.json_response({"reset": True})

        async def expect(request: web.Request) -> web.Response:
            self.expect(orjson.loads(await request.read()))
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


async def serve(count: int, delays: list[float] | None = None) -> None:
    fleet = SinkFleet(count, delays)
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

    def __init__(self, count: int, delays: list[float] | None = None) -> None:
        self.count = count
        self.delays = delays or []
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
            *(["--delays", ",".join(f"{d:g}" for d in self.delays)] if self.delays else []),
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

    async def wait_converged(
        self, deadline: float, quiet_s: float = 1.0, only: list[int] | None = None
    ) -> dict[str, Any]:
        """Until every sink (or every sink of ``only``) holds the expected state and nothing arrived
        for ``quiet_s`` (a late, stale delivery would otherwise go unnoticed), or the monotonic
        ``deadline``.

        Returns the last progress with ``converged_at`` (first moment all sinks agreed) or None;
        with ``only``, ``behind_records``/``behind_sinks``/``last_receipt`` count those sinks only.
        """
        converged_at: float | None = None
        while True:
            progress = await self.progress()
            if only is not None:
                behind = [progress["behind_by_sink"][i] for i in only]
                progress |= {
                    "behind_records": sum(behind),
                    "behind_sinks": sum(1 for b in behind if b),
                    "last_receipt": max([0.0, *(progress["last_receipt_by_sink"][i] for i in only)]),
                }
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
    parser.add_argument("--delays", default="", help="seconds each sink waits before answering, comma-separated")
    args = parser.parse_args()
    delays = [float(d) for d in args.delays.split(",") if d.strip()]
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.count, delays))


if __name__ == "__main__":
    main()
