"""The OICP port's HTTP protocol: uvicorn's httptools protocol with a deadline for the request
headers. uvicorn times out idle keep-alive connections but not a client that trickles its request
line and headers (slowloris): such a connection is closed once ``header_timeout`` has passed since it
was opened or since its request began. Bodies have their own deadline (``oicp.read_timeout_seconds``,
in the app)."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class GuardedHttpProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        self.transport.close()


def guarded(protocol: type[GuardedHttpProtocol], header_timeout: float) -> type[GuardedHttpProtocol]:
    """``protocol`` with this node's header deadline (uvicorn takes a class, not an instance)."""
    return type(protocol.__name__, (protocol,), {"header_timeout": header_timeout})
