"""What the session tests share: a second, fast CPO/EMP pair, a broken CPO peer, the nodes' ledgers and
the internal calls.

The ``quick_pair`` is configured for the cases the shared ``pair`` cannot show quickly: the EMP gives
up on the CPO after ``EMP_GIVES_UP_SECONDS`` and the CPO on its backend after
``BACKEND_TIMEOUT_SECONDS`` (the timeout case), reservations and missing CDRs are looked for every
``CHECK_INTERVAL_SECONDS``, and a session without CDR is reported after ``CDR_MISSING_AFTER_SECONDS``.
The EMP also knows a CPO peer (``DOWN_OPERATOR``) that answers every call with HTTP 503.

The fixtures live in ``tests.support.session_fixtures``, which test modules load as a plugin
(``pytest_plugins``): so the session-scoped fixtures exist once for the whole run, whichever of the
modules use them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from shared.stores.redis import KeySpace
from shared.stores.sessions import Session, SessionLedger
from tests.support.bodies import evse_record
from tests.support.nodes import RUN_ID, NodeProcesses, NodeSpec, free_port

CPO_ID = "DE*GEF"
EMP_ID = "DE-GDF"
DOWN_OPERATOR = "DE*DWN"
EMP_CALLS_CPO = "quick-emp-calls-cpo"
CPO_CALLS_EMP = "quick-cpo-calls-emp"
BACKEND_TIMEOUT_SECONDS = 2.0
EMP_GIVES_UP_SECONDS = 1.0
CHECK_INTERVAL_SECONDS = 0.3
CDR_MISSING_AFTER_SECONDS = 1.0
REMOTE = {"RemoteIdentification": {"EvcoID": "DE-GDF-C12345678-X"}}
T0 = "2026-11-25T10:00:00+01:00"
SESSION_EVSE_COUNTRY = "CYP"  # the session tests' own EVSEs, in a country no other test uses


class FailingCpo:
    """A CPO peer that is there but broken: every OICP call gets HTTP 503; the calls are counted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.paths: list[str] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        return web.Response(status=503, text="down for maintenance")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()


@dataclass
class QuickPair:
    cpo: NodeSpec
    emp: NodeSpec
    down: FailingCpo
    processes: NodeProcesses


def quick_settings() -> dict[str, Any]:
    return {
        "sessions": {
            "backend_timeout_seconds": BACKEND_TIMEOUT_SECONDS,
            "check_interval_seconds": CHECK_INTERVAL_SECONDS,
            "cdr_missing_after_seconds": CDR_MISSING_AFTER_SECONDS,
        },
        "cdr": {"backoff_initial_seconds": 0.2, "backoff_max_seconds": 1.0},
    }


@dataclass
class Ledgers:
    """Read access to the nodes' ledgers in Redis, as the internal API reads them."""

    redis: aioredis.Redis
    _by_node: dict[str, SessionLedger] = field(default_factory=dict)

    def of(self, node: NodeSpec) -> SessionLedger:
        if node.name not in self._by_node:
            self._by_node[node.name] = SessionLedger(self.redis, KeySpace(f"{RUN_ID}:{node.name}:"))
        return self._by_node[node.name]

    async def get(self, node: NodeSpec, session_id: str) -> Session | None:
        return await self.of(node).get(session_id)

    def in_state(self, node: NodeSpec, session_id: str, state: str) -> Callable[[], Any]:
        """A wait_until predicate: the session in that state (falsy until then)."""

        async def check() -> Session | None:
            session = await self.get(node, session_id)
            return session if session is not None and session.state.value == state else None

        return check


async def command(http: aiohttp.ClientSession, node: NodeSpec, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """An internal system's command through the internal API; the worker's reply (HTTP 200)."""
    headers = {"Authorization": f"Bearer {node.internal_token}"}
    async with http.post(f"{node.internal_url}/commands/{name}", json=body, headers=headers) as response:
        answer = await response.json()
        assert response.status == 200, answer
        return answer


async def oicp(http: aiohttp.ClientSession, node: NodeSpec, path: str, token: str, body: dict[str, Any]) -> Any:
    """A peer's OICP call to a node's OICP face."""
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(f"{node.oicp_url}{path}", json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def own_evse(http: aiohttp.ClientSession, cpo: NodeSpec, operator_id: str = CPO_ID) -> str:
    """A fresh EVSE in the CPO node's own EVSE data. Other tests may have given the node EVSE data
    already, after which an unknown EvseID is 603: every session test uses EVSEs the node knows."""
    evse_id = f"{operator_id}*E{uuid.uuid4().hex[:10].upper()}"
    record = evse_record(evse_id)
    # Somewhere no other test looks (tests that count EVSEs filter by country or by area).
    record["Address"]["Country"] = SESSION_EVSE_COUNTRY
    record["GeoCoordinates"] = {"DecimalDegree": {"Latitude": "35.126400", "Longitude": "33.429900"}}
    body = {
        "ActionType": "insert",
        "OperatorEvseData": {
            "OperatorID": operator_id,
            "OperatorName": "GEF",
            "EvseDataRecord": [record],
        },
    }
    reply = await command(http, cpo, "cpo.evse.data.set", body)
    assert reply["ok"], reply
    return evse_id


def start_body(evse_id: str, session_id: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"EvseID": evse_id, "Identification": REMOTE, **extra}
    if session_id:
        body["SessionID"] = session_id
    return body


def notification(kind: str, session_id: str, evse_id: str, operator_id: str = CPO_ID) -> dict[str, Any]:
    """A valid ChargingNotification body of the given Type."""
    body: dict[str, Any] = {"Type": kind, "SessionID": session_id, "EvseID": evse_id, "OperatorID": operator_id}
    if kind in ("Start", "Progress"):
        body["ChargingStart"] = T0
    if kind == "Progress":
        body.update(EventOccurred="2026-11-25T10:10:00+01:00", ChargingDuration=600_000, ConsumedEnergyProgress=3.5)
    if kind == "End":
        body.update(ChargingEnd="2026-11-25T11:00:00+01:00", ConsumedEnergy=10.5)
    if kind == "Error":
        body["ErrorType"] = "ConnectorError"
    return body


def events_about(events: list[dict[str, Any]], session_id: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if e["data"].get("session", {}).get("session_id") == session_id and (kind is None or e["type"] == kind)
    ]


def new_session_id() -> str:
    return str(uuid.uuid4())
