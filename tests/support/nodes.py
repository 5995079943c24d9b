"""Real nodes for the tests: every service as a process, on 127.0.0.1, against the real RabbitMQ and
Redis, with a name prefix of their own so runs never collide; and a plain HTTP sink peer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
import redis.asyncio as aioredis
import yaml
from aiohttp import web

from shared.bus.topology import Topology
from shared.settings import WORKER_SERVICES

REPO = Path(__file__).resolve().parents[2]
AMQP_URL = os.environ.get("OICP_P2P_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("OICP_P2P_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = f"t{uuid.uuid4().hex[:8]}"
POLL_INTERVAL = 0.2  # seconds between two looks while waiting for a deadline


_handed_out: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before in this test run: the kernel may offer the same
    ephemeral port twice while nothing listens on it yet, and two nodes' settings would then collide
    (seen once: a worker's metrics port equal to another node's internal port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@dataclass
class NodeSpec:
    """One node's configuration, written to a YAML file the node's processes read."""

    name: str
    operator_ids: list[str] = field(default_factory=list)
    provider_ids: list[str] = field(default_factory=list)
    peers: list[dict[str, Any]] = field(default_factory=list)
    oicp_port: int = field(default_factory=free_port)
    internal_port: int = field(default_factory=free_port)
    #: each worker's /metrics and /healthz port (metrics.ports.<service>)
    metrics_ports: dict[str, int] = field(default_factory=lambda: {s: free_port() for s in WORKER_SERVICES})
    amqp_url: str = AMQP_URL
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return f"{RUN_ID}.{self.name}."

    @property
    def internal_token(self) -> str:
        return f"{self.name}-internal-token"

    @property
    def monitoring_token(self) -> str:
        return f"{self.name}-monitoring-token"

    @property
    def monitoring_headers(self) -> dict[str, str]:
        """What Prometheus and the probes send: the read-only token of /readyz and /metrics."""
        return {"Authorization": f"Bearer {self.monitoring_token}"}

    @property
    def oicp_url(self) -> str:
        return f"http://127.0.0.1:{self.oicp_port}"

    @property
    def internal_url(self) -> str:
        return f"http://127.0.0.1:{self.internal_port}"

    def metrics_url(self, service: str) -> str:
        """Where Prometheus scrapes ``service``: the internal API for the gateway, else the worker's port."""
        if service == "gateway":
            return f"{self.internal_url}/metrics"
        return f"http://127.0.0.1:{self.metrics_ports[service]}/metrics"

    @property
    def topology(self) -> Topology:
        return Topology(self.prefix)

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "operator_ids": self.operator_ids,
            "provider_ids": self.provider_ids,
            "oicp": {"host": "127.0.0.1", "port": self.oicp_port},
            "internal": {
                "host": "127.0.0.1",
                "port": self.internal_port,
                "token": self.internal_token,
                "monitoring_token": self.monitoring_token,
            },
            "metrics": {"host": "127.0.0.1", "ports": self.metrics_ports},
            "rabbitmq": {"url": self.amqp_url, "prefix": self.prefix},
            "redis": {"url": REDIS_URL, "key_prefix": f"{RUN_ID}:{self.name}:"},
            "delivery": {"poll_interval_seconds": 0.5, "backoff_initial_seconds": 0.2, "backoff_max_seconds": 2},
            "peers": self.peers,
            # Tests call far more often than Hubject's limits allow (6 PullEvseStatus a minute...): only
            # the rate-limit tests turn them on (tests/e2e/test_rate_limits.py, through ``extra``).
            "rate_limits": {"enabled": False},
            # The periodic peer probes would call every peer (sinks included) behind the tests' backs:
            # only the probe tests turn them on (tests/e2e/test_peer_probes.py, through ``extra``).
            "probes": {"enabled": False},
            **self.extra,
        }

    def write(self, directory: Path) -> Path:
        path = directory / f"{self.name}.yaml"
        path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        return path


class NodeProcesses:
    """``python -m shared.node`` over some node configs, like ``make run``."""

    def __init__(self, specs: list[NodeSpec], directory: Path) -> None:
        self.specs = specs
        self.log_path = directory / f"nodes-{'-'.join(s.name for s in specs)}.log"
        self.configs = [s.write(directory) for s in specs]
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 90) -> None:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shared.node", *map(str, self.configs)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            for spec in self.specs:
                while True:
                    if self.process.poll() is not None:
                        raise RuntimeError(f"nodes exited with {self.process.returncode}:\n{self.log_tail()}")
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"{spec.internal_url}/readyz", headers=spec.monitoring_headers) as response:
                            if response.status == 200:
                                break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{spec.name} not ready in {timeout}s:\n{self.log_tail()}")
                    await asyncio.sleep(POLL_INTERVAL)
        # The workers start in parallel with the gateway: wait until every work queue has a consumer.
        await wait_for_consumers(self.specs, deadline)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


async def wait_for_consumers(specs: list[NodeSpec], deadline: float) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        for spec in specs:
            for name in spec.topology.queue_names():
                if name.endswith("dead-letters"):
                    continue
                while True:
                    queue = await channel.declare_queue(name, passive=True)
                    if queue.declaration_result.consumer_count > 0:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no consumer on {name}")
                    await asyncio.sleep(POLL_INTERVAL)
    finally:
        await connection.close()


async def cleanup(specs: list[NodeSpec]) -> None:
    """Delete what the nodes left in RabbitMQ and Redis (everything carries the run's prefix)."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for spec in specs:
            for name in spec.topology.queue_names():
                with contextlib.suppress(Exception):
                    await channel.queue_delete(name)
            for name in spec.topology.exchange_names():
                with contextlib.suppress(Exception):
                    await channel.exchange_delete(name)
    client = aioredis.from_url(REDIS_URL)
    async with client:
        keys = [k async for k in client.scan_iter(match=f"{RUN_ID}:*", count=1000)]
        if keys:
            await client.delete(*keys)


async def wait_until(predicate: Any, timeout: float = 20, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: Any
    raw_path: str = ""  # as sent, percent-encoding kept


class HttpSink:
    """A plain HTTP peer that records what it receives and acknowledges every OICP push."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[RecordedRequest] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.requests.append(RecordedRequest(request.path, dict(request.headers), body, request.raw_path))
        return web.json_response({"Result": True, "StatusCode": {"Code": "000", "Description": "Success"}})

    def at(self, prefix: str) -> list[Any]:
        """The bodies received at raw paths starting with ``prefix``."""
        return [r.body for r in self.requests if r.raw_path.startswith(prefix)]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
