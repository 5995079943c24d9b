"""A fake EMP peer for the CPO role's authorization tests: a plain aiohttp server on the EMP face's
AuthorizeStart/Stop paths that answers with a configurable verdict after a configurable delay, and
records every request. ``stop()`` takes it down (connection refused)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.support.nodes import free_port


@dataclass
class FakeEmp:
    provider_id: str
    authorize: bool = True
    refusal_code: str = "102"
    delay: float = 0.0
    port: int = field(default_factory=free_port)
    starts: list[dict[str, Any]] = field(default_factory=list)
    stops: list[dict[str, Any]] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _verdict(self, body: dict[str, Any]) -> dict[str, Any]:
        partner = {k: body[k] for k in ("CPOPartnerSessionID", "EMPPartnerSessionID") if k in body}
        if self.authorize:
            return {
                "AuthorizationStatus": "Authorized",
                "StatusCode": {"Code": "000", "Description": "Success"},
                "SessionID": body.get("SessionID"),
                "ProviderID": self.provider_id,
                **partner,
            }
        return {
            "AuthorizationStatus": "NotAuthorized",
            "StatusCode": {"Code": self.refusal_code, "AdditionalInfo": f"{self.provider_id} refuses"},
            **partner,
        }

    async def _start(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.starts.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response(self._verdict(body))

    async def _stop(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.stops.append(body)
        return web.json_response(
            {
                "AuthorizationStatus": "Authorized",
                "StatusCode": {"Code": "000"},
                "SessionID": body["SessionID"],
                "ProviderID": self.provider_id,
            }
        )

    def starts_of(self, session_id: str) -> list[dict[str, Any]]:
        return [b for b in self.starts if b.get("SessionID") == session_id]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/oicp/charging/v21/operators/{operator}/authorize/start", self._start)
        app.router.add_post("/api/oicp/charging/v21/operators/{operator}/authorize/stop", self._stop)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
