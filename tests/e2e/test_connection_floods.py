"""Thousands of idle connections and clients that trickle their body: the node stays up and keeps
answering its partners (issue #9). Idle connections are closed once the header deadline passes, and a
trickled body gets a 408 with an OICP body once the read deadline passes. The deadlines are set short
here (production: 30 s / 10 s by default) so the test does not wait minutes for them."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import orjson
import pytest

from tests.conftest import CPO_CALLS_EMP, CPO_ID, EMP_ID
from tests.support.nodes import NodeProcesses, NodeSpec, cleanup
from tests.support.outage import PUSH_PATH, push_body

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

IDLE_CONNECTIONS = 2000
TRICKLERS = 20
HEADER_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 4.0


async def open_idle(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that sends half a request line and then nothing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /api/oicp/evsepush")
    await writer.drain()
    return reader, writer


async def trickle(port: int) -> bytes:
    """A complete request head, then the body a byte at a time, far slower than the read deadline."""
    body = orjson.dumps(push_body("DE*GEF*E900"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {PUSH_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {CPO_CALLS_EMP}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode())
    try:
        for byte in body:
            writer.write(bytes([byte]))
            await writer.drain()
            # the server answers when its read deadline passes: stop sending then, read the answer
            with contextlib.suppress(TimeoutError):
                first = await asyncio.wait_for(reader.read(65536), timeout=0.5)
                return await whole_answer(reader, first)
        return b"the whole body was sent without an answer"
    except (ConnectionError, OSError):
        return b""
    finally:
        writer.close()


async def whole_answer(reader: asyncio.StreamReader, received: bytes) -> bytes:
    """An HTTP answer whose first bytes are ``received``: head and body, up to its Content-Length."""
    data = received
    while b"\r\n\r\n" not in data:
        data += await asyncio.wait_for(reader.read(65536), timeout=10)
    head, _, content = data.partition(b"\r\n\r\n")
    lengths = [
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    ]
    while len(content) < (lengths[0] if lengths else 0):
        chunk = await asyncio.wait_for(reader.read(65536), timeout=10)
        if not chunk:
            break
        content += chunk
    return head + b"\r\n\r\n" + content


async def test_idle_connections_and_trickled_bodies_do_not_stop_the_node(tmp_path: object) -> None:
    emp = NodeSpec("emp-flood", provider_ids=[EMP_ID])
    emp.peers = [{"id": CPO_ID, "role": "cpo", "base_url": "http://127.0.0.1:9", "inbound_token": CPO_CALLS_EMP}]
    config = emp.config()
    emp.extra = {
        "oicp": {**config["oicp"], "header_timeout_seconds": HEADER_TIMEOUT_S, "read_timeout_seconds": READ_TIMEOUT_S}
    }
    nodes = NodeProcesses([emp], tmp_path)  # type: ignore[arg-type]
    headers = {"Authorization": f"Bearer {CPO_CALLS_EMP}"}
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        await nodes.start()
        for _ in range(IDLE_CONNECTIONS):
            idle.append(await open_idle(emp.oicp_port))
        tricklers = [asyncio.create_task(trickle(emp.oicp_port)) for _ in range(TRICKLERS)]

        async with aiohttp.ClientSession() as http:
            # a partner is answered while the idle connections and the tricklers hold their sockets
            async with http.post(emp.oicp_url + PUSH_PATH, json=push_body("DE*GEF*E100"), headers=headers) as r:
                assert r.status == 200 and (await r.json())["StatusCode"]["Code"] == "000"

            answers = await asyncio.wait_for(asyncio.gather(*tricklers), timeout=60)
            for answer in answers:
                assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
                assert b'"Result":false' in answer and b"not received within" in answer

            # the idle ones were closed by the node at its header deadline: each read ends (EOF, or
            # whatever the server says as it closes); a read still waiting after 30 s fails the test
            async def closed(reader: asyncio.StreamReader) -> bool:
                with contextlib.suppress(ConnectionError, OSError):
                    await asyncio.wait_for(reader.read(1024), timeout=30)
                return True

            sample = [reader for reader, _ in idle[:: IDLE_CONNECTIONS // 50]]
            assert all(await asyncio.gather(*(closed(reader) for reader in sample)))

            async with http.post(emp.oicp_url + PUSH_PATH, json=push_body("DE*GEF*E101"), headers=headers) as r:
                assert r.status == 200 and (await r.json())["StatusCode"]["Code"] == "000"
            async with http.get(f"{emp.internal_url}/readyz", headers=emp.monitoring_headers) as r:
                assert r.status == 200
    finally:
        for _, writer in idle:
            writer.close()
        nodes.stop()
        await cleanup([emp])
