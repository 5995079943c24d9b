"""EMP peers that misbehave, for the delivery fault tests: an :class:`OicpSink` (strict OICP
ActionType semantics) whose answers can be switched, at run time, to one of the faults a CPO node meets
in the field. While faulty the peer applies nothing it is sent (it only records the request), so what
it holds is exactly what it acknowledged.

* ``HANG``: reads the request and never answers (until it is healed; the caller timed out long before);
* ``HTTP_500``: HTTP 500 with a plain-text body;
* ``GARBAGE``: HTTP 200 with a body that is no eRoamingAcknowledgement (HTML, other JSON, bytes that
  are not UTF-8, an empty body...), a different one each time;
* ``RESET``: reads the request, then resets the connection (SO_LINGER 0 and close: a TCP RST).

A peer that is down is an :class:`OicpSink` not started (or stopped): its port refuses connections.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import time
from enum import StrEnum
from typing import Any

import orjson
from aiohttp import web

from tests.support.sinks import OicpSink, operation_of


class Fault(StrEnum):
    NONE = "none"
    HANG = "hang"
    HTTP_500 = "http_500"
    GARBAGE = "garbage"
    RESET = "reset"


#: HTTP 200 bodies that are no eRoamingAcknowledgement, with their Content-Type.
GARBAGE_BODIES: list[tuple[bytes, str]] = [
    (b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    (b'{"foo": 1}', "application/json"),
    (b'{"Result": true}', "application/json"),  # no StatusCode: not an acknowledgement
    (b"[]", "application/json"),
    (b"", "application/json"),
    (b"\xff\xfe\x00 not utf-8 \x80", "application/octet-stream"),
    (b'{"Result": true, "StatusCode": {"Code": "999"}}', "application/json"),  # no such code
    (b'{"Result": "yes", "StatusCode": {"Code": "000"}}', "application/json"),  # not a JSON boolean
]


class FaultyPeer(OicpSink):
    """One EMP peer; ``fault`` says how it answers (``Fault.NONE``: as a correct OICP peer)."""

    def __init__(self, name: str, fault: Fault = Fault.NONE) -> None:
        super().__init__(name)
        self._released = asyncio.Event()  # set whenever the peer does not hang: hanging requests end
        self.fault = fault
        #: (time, operation, body, fault) of every request answered with a fault (none was applied)
        self.faulty_requests: list[tuple[float, str, dict[str, Any], Fault]] = []
        self._garbage = itertools.cycle(GARBAGE_BODIES)

    @property
    def fault(self) -> Fault:
        return self._fault

    @fault.setter
    def fault(self, fault: Fault) -> None:
        self._fault = fault
        if fault is Fault.HANG:
            self._released.clear()
        else:
            self._released.set()

    def heal(self) -> None:
        """Answer as a correct OICP peer from now on (a hanging request is let go with an error)."""
        self.fault = Fault.NONE

    async def _handle(self, request: web.Request) -> web.Response:
        fault = self.fault
        if fault is Fault.NONE:
            return await super()._handle(request)
        body = orjson.loads(await request.read())
        self.faulty_requests.append((time.time(), operation_of(request.path), body, fault))
        if fault is Fault.HANG:
            # Holds the connection open without a byte of answer; the caller's timeout ends it.
            await self._released.wait()
            return web.Response(status=503, text="hung request let go")
        if fault is Fault.HTTP_500:
            return web.Response(status=500, text="Internal Server Error: the database is on fire")
        if fault is Fault.GARBAGE:
            raw, content_type = next(self._garbage)
            return web.Response(status=200, body=raw, content_type=content_type)
        # RESET: linger 0, so closing the socket sends an RST instead of a FIN.
        transport = request.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        return web.Response(status=500)  # never sent: aiohttp finds the transport closed
