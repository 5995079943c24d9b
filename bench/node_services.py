"""Run only some services of nodes, each a process (``python -m services.<service>``), for benchmarks
that need many nodes of which only a part works: ten EMP nodes answering AuthorizeStart need their
gateway and their authorization worker, not evse_push, sessions and cdr (50 processes on 2 cores
would mostly be idle workers competing for memory and the broker's attention).

It does what ``python -m shared.node`` does for a whole node, without the restarts: every process gets
the node's configuration through ``OICP_P2P_CONFIG``, its output goes to one log file, SIGTERM stops it
gracefully (SIGKILL after ``STOP_TIMEOUT_S``). Ready means: every node's ``/readyz`` answers 200 and
every command queue the started workers consume has a consumer. The processes are children of the
benchmark; after a ``kill -9`` of the benchmark they are left running (stop them with SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aio_pika
import aiohttp

from shared.bus.topology import COMMAND_CONSUMERS
from shared.settings import CONFIG_ENV
from tests.support.nodes import AMQP_URL, POLL_INTERVAL, REPO, NodeSpec

STOP_TIMEOUT_S = 20


class NodeServices:
    """``services`` (e.g. ``("gateway", "authorization")``) of every node in ``specs``."""

    def __init__(self, specs: list[NodeSpec], services: tuple[str, ...], directory: Path) -> None:
        self.specs = specs
        self.services = services
        self.log_path = directory / "node-services.log"
        self.configs = [spec.write(directory) for spec in specs]
        self.processes: dict[int, tuple[str, str]] = {}  # pid -> (node, service)
        self._popen: list[subprocess.Popen[bytes]] = []

    def _spawn(self) -> None:
        log = self.log_path.open("ab")
        for spec, config in zip(self.specs, self.configs, strict=True):
            for service in self.services:
                process = subprocess.Popen(
                    [sys.executable, "-m", f"services.{service}"],
                    cwd=REPO,
                    env=dict(os.environ, **{CONFIG_ENV: str(config)}),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                self._popen.append(process)
                self.processes[process.pid] = (spec.name, service)

    async def start(self, timeout_s: float = 120) -> None:
        self._spawn()
        deadline = time.monotonic() + timeout_s
        if "gateway" in self.services:
            async with aiohttp.ClientSession() as http:
                for spec in self.specs:
                    while True:
                        self._check_alive()
                        with contextlib.suppress(aiohttp.ClientError):
                            url = f"{spec.internal_url}/readyz"
                            async with http.get(url, headers=spec.monitoring_headers) as response:
                                if response.status == 200:
                                    break
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"{spec.name} not ready in {timeout_s}s:\n{self.log_tail()}")
                        await asyncio.sleep(POLL_INTERVAL)
        await self._wait_for_consumers(deadline)

    async def _wait_for_consumers(self, deadline: float) -> None:
        commands = [c for c, service in COMMAND_CONSUMERS.items() if service in self.services]
        connection = await aio_pika.connect(AMQP_URL)
        try:
            channel = await connection.channel()
            for spec in self.specs:
                for command in commands:
                    name = spec.topology.command_queue(command).name
                    while True:
                        self._check_alive()
                        with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                            queue = await channel.declare_queue(name, passive=True)
                            if queue.declaration_result.consumer_count > 0:
                                break
                        if channel.is_closed:  # a passive declare of a missing queue closes the channel
                            channel = await connection.channel()
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"no consumer on {name}:\n{self.log_tail()}")
                        await asyncio.sleep(POLL_INTERVAL)
        finally:
            await connection.close()

    def _check_alive(self) -> None:
        for process in self._popen:
            if process.poll() is not None:
                node, service = self.processes[process.pid]
                raise RuntimeError(f"{node}/{service} exited with {process.returncode}:\n{self.log_tail()}")

    def pids(self, service: str | None = None) -> dict[int, str]:
        """pid -> ``node/service`` of the started processes (of one service if given)."""
        return {pid: f"{node}/{name}" for pid, (node, name) in self.processes.items() if service in (None, name)}

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        for process in self._popen:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self._popen:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
