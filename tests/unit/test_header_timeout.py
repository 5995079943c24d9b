"""A client that trickles its request headers (slowloris) is cut off after the header deadline,
while a normal request on the same server is answered: uvicorn in process, a real socket."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from services.gateway.protocol import GuardedHttpProtocol, guarded
from tests.support.nodes import free_port, wait_until

HEADER_TIMEOUT = 0.3  # seconds, short for the test (the default is 10)
GIVE_UP = 10.0  # the test's own limit on waiting for the server to act


async def hello(request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


@pytest.mark.asyncio
async def test_slow_headers_are_cut_off_and_normal_requests_answered() -> None:
    port = free_port()
    config = uvicorn.Config(
        Starlette(routes=[Route("/", hello)]),
        host="127.0.0.1",
        port=port,
        http=guarded(GuardedHttpProtocol, HEADER_TIMEOUT),
        log_config=None,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started, timeout=GIVE_UP, interval=0.01, what="uvicorn listening")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # ... and the rest never comes
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), GIVE_UP) == b"", "the server closed the connection"
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), GIVE_UP)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")
        writer.close()
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, GIVE_UP)
