"""A Redis server of a test's own (the installed ``redis-server``, on a free port, its files in a
temporary directory), configured as compose.yaml runs it: append-only file, fsync every second
(Redis writes each command to the file before it answers, so a killed Redis loses nothing it
acknowledged; only a crash of the machine can lose the last second). The test can kill it (SIGKILL)
and start it again on the same port and files, which the machine's shared Redis (no persistence, used
by every run) must never be put through."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import redis.asyncio as aioredis

from tests.support.nodes import free_port, wait_until


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.directory),
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        await wait_until(self.ping, timeout=30, what=f"redis-server on port {self.port}")

    async def ping(self) -> bool:
        client = aioredis.from_url(self.url, socket_connect_timeout=1)
        try:
            return bool(await client.ping())
        except (OSError, aioredis.RedisError):
            return False
        finally:
            await client.aclose()

    def kill(self) -> None:
        """SIGKILL: whatever was acknowledged is in the append-only file, nothing else."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.kill()
