"""EMP peers for fan-out tests: plain aiohttp servers that keep what they are pushed with strict OICP
ActionType semantics (DIGEST §9.1: insert of a held record or update of an unknown one is refused
with 009, nothing applied), measure their receive latency, and record overlapping requests of one
operation (OICP forbids them). They can be taken down (connection refused) and made slow."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import orjson
from aiohttp import web

from tests.support.nodes import free_port

OK = {"Result": True, "StatusCode": {"Code": "000", "Description": "Success"}}


def refusal(code: str, info: str) -> dict[str, Any]:
    return {"Result": False, "StatusCode": {"Code": code, "Description": "refused", "AdditionalInfo": info}}


def operation_of(path: str) -> str:
    if "/status/" in path or path.endswith("/status-records"):
        return "PushEvseStatus"
    if "pricing-products" in path:
        return "PushPricingProductData"
    if "evse-pricing" in path:
        return "PushEVSEPricing"
    return "PushEvseData"


class OicpSink:
    """One EMP peer. ``held[operation]`` maps a record key to what the peer holds."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.delay = 0.0
        self.held: dict[str, dict[str, Any]] = defaultdict(dict)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.max_in_flight: dict[str, int] = defaultdict(int)
        self.requests: list[tuple[float, str, dict[str, Any]]] = []
        self.received_at: dict[tuple[str, str], float] = {}  # (EvseID, status) → first receipt
        self.refusals = 0
        self.throttle: list[float] = []  # Retry-After seconds of the next answers: HTTP 429
        self.throttled_at: list[float] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def statuses(self) -> dict[str, str]:
        return {k: v["EvseStatus"] for k, v in self.held["PushEvseStatus"].items()}

    async def _handle(self, request: web.Request) -> web.Response:
        operation = operation_of(request.path)
        self.in_flight[operation] += 1
        self.max_in_flight[operation] = max(self.max_in_flight[operation], self.in_flight[operation])
        try:
            body = orjson.loads(await request.read())
            if self.throttle:
                self.throttled_at.append(time.time())
                return web.Response(status=429, headers={"Retry-After": f"{self.throttle.pop(0):g}"})
            if self.delay:
                await asyncio.sleep(self.delay)
            now = time.time()
            self.requests.append((now, operation, body))
            answer = self._apply(operation, body, now)
            if not answer["Result"]:
                self.refusals += 1
            return web.json_response(answer)
        finally:
            self.in_flight[operation] -= 1

    def _records(self, operation: str, body: dict[str, Any]) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
        if operation == "PushEvseStatus":
            scope = body["OperatorEvseStatus"]
            return scope["OperatorID"], [(r["EvseID"], r) for r in scope["EvseStatusRecord"]]
        if operation == "PushEvseData":
            scope = body["OperatorEvseData"]
            return scope["OperatorID"], [(r["EvseID"], r) for r in scope["EvseDataRecord"]]
        if operation == "PushEVSEPricing":
            return "", [(f"{r['EvseID']}|{r['ProviderID']}", r) for r in body["EVSEPricing"]]
        data = body["PricingProductData"]
        return "", [(f"{data['OperatorID']}|{data['ProviderID']}", data)]

    def _apply(self, operation: str, body: dict[str, Any], now: float) -> dict[str, Any]:
        action = body["ActionType"]
        _, records = self._records(operation, body)
        held = self.held[operation]
        if action == "insert" and (clash := [k for k, _ in records if k in held]):
            return refusal("009", f"already held: {clash[:5]}")
        if action == "update" and (missing := [k for k, _ in records if k not in held]):
            return refusal("009", f"not held: {missing[:5]}")
        if action == "fullLoad":
            # This sink serves one CPO operator per operation, so a fullLoad replaces everything.
            held.clear()
        for key, record in records:
            if action == "delete":
                held.pop(key, None)
            else:
                held[key] = record
                if operation == "PushEvseStatus":
                    self.received_at.setdefault((key, record["EvseStatus"]), now)
        return OK

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Down: the port refuses connections until start() again."""
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
