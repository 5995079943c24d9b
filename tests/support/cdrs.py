"""CDR tests' helpers: a complete eRoamingChargeDetailRecord body (calibration-law data, times in a
station's own time zone), and a fake EMP peer that records the CDRs pushed to it and answers as a
test tells it to (acknowledge, refuse with an OICP code, HTTP 503, answer slowly, or be down)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from shared.oicp import ChargeDetailRecord
from tests.support.nodes import NodeProcesses, free_port

CDR_PATH = "/api/oicp/cdrmgmt/v22/operators/{operator}/charge-detail-record"


def signed_value(n: int) -> str:
    """An OCMF-like signed meter reading (the node passes it on as an opaque string)."""
    return f"OCMF|{{'RD':[{{'RI':'1-b:1.8.0','RV':{n}}}]}}|{{'SD':'3045{n:04X}'}}"


def cdr_body(
    session_id: str,
    evse_id: str,
    *,
    evco_id: str | None = None,
    uid: str | None = None,
    offset: str = "+02:00",
    energy: str = "21.374",
) -> dict[str, Any]:
    """A CDR as the charge point backend submits it (``to_oicp`` of the model, so the wire form):
    times carry the station's UTC offset, 10 signed metering values and the verification info."""
    if uid is not None:
        identification: dict[str, Any] = {"RFIDIdentification": {"UID": uid, "RFID": "mifareDes"}}
        if evco_id is not None:
            identification["RFIDIdentification"]["EvcoID"] = evco_id
    else:
        identification = {"RemoteIdentification": {"EvcoID": evco_id or "DE-GDF-C12345678-X"}}
    statuses = ["Start", *["Progress"] * 8, "End"]
    body = {
        "SessionID": session_id,
        "CPOPartnerSessionID": "cpo-backend-4711",
        "PartnerProductID": "AC3",
        "EvseID": evse_id,
        "Identification": identification,
        "ChargingStart": f"2026-03-29T01:59:30.250{offset}",
        "ChargingEnd": f"2026-03-29T04:10:00{offset}",
        "SessionStart": f"2026-03-29T01:58:00{offset}",
        "SessionEnd": f"2026-03-29T04:11:00{offset}",
        "MeterValueStart": 1000.5,
        "MeterValueEnd": 1021.874,
        "MeterValueInBetween": {"meterValues": [1005.1, 1010.25, 1015.375]},
        "ConsumedEnergy": float(energy),
        "SignedMeteringValues": [
            {"SignedMeteringValue": signed_value(n), "MeteringStatus": status} for n, status in enumerate(statuses)
        ],
        "CalibrationLawVerificationInfo": {
            "CalibrationLawCertificateID": "DE-123-456:1:2026-01-01",
            "PublicKey": "3059301306072A8648CE3D020106082A8648CE3D03010703420004",
            "MeteringSignatureUrl": "https://cpo.example/signatures/4711.xml",
            "MeteringSignatureEncodingFormat": "OCMF: 1.0",
            "SignedMeteringValuesVerificationInstruction": "Use the S.A.F.E. transparency software",
        },
        "HubOperatorID": "DE*GEF",
    }
    # The wire form of the model: what the node stores and sends must be exactly this.
    return ChargeDetailRecord.model_validate(body).to_oicp()


def ack(code: str = "000", info: str | None = None, session_id: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"Code": code}
    if info:
        status["AdditionalInfo"] = info
    body: dict[str, Any] = {"Result": code == "000", "StatusCode": status}
    if session_id:
        body["SessionID"] = session_id
    return body


@dataclass
class Received:
    operator: str
    body: dict[str, Any]
    raw: bytes
    answered: str  # "000", an OICP refusal code, or "http 503"


@dataclass
class FakeCdrEmp:
    """An EMP peer's ChargeDetailRecord endpoint. ``answers`` are used one per request, then
    ``default``: "ok", an OICP code such as "400" (Result=false) or "http 503". ``delay`` makes it
    slow. ``stored`` keeps one CDR per SessionID (the EMP deduplicates), ``received`` every request."""

    name: str
    default: str = "ok"
    answers: list[str] = field(default_factory=list)
    delay: float = 0.0
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def up(self) -> bool:
        return self._runner is not None

    def of(self, session_id: str) -> list[Received]:
        return [r for r in self.received if r.body.get("SessionID") == session_id]

    def acknowledged(self, session_id: str) -> list[Received]:
        return [r for r in self.of(session_id) if r.answered == "000"]

    async def _handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            raw = await request.read()
            answer = self.answers.pop(0) if self.answers else self.default  # decided on arrival
            if self.delay:
                await asyncio.sleep(self.delay)
            body = orjson.loads(raw)
            sid = body.get("SessionID")
            if answer.startswith("http "):
                self.received.append(Received(request.match_info["operator"], body, raw, answer))
                return web.Response(status=int(answer.split()[1]), text="unavailable")
            code = "000" if answer == "ok" else answer
            self.received.append(Received(request.match_info["operator"], body, raw, code))
            if code == "000":
                self.stored.setdefault(sid, body)
            return web.json_response(ack(code, None if code == "000" else f"{self.name} refuses", sid))
        finally:
            self.in_flight -= 1

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(CDR_PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Down: the port refuses connections until start() again."""
        if self._runner:
            await self._runner.cleanup()
            self._runner = None


def service_pids(processes: NodeProcesses, service: str) -> list[int]:
    """PIDs of one service's processes that ``shared.node`` runs (its direct children)."""
    assert processes.process is not None
    wanted = f"services.{service}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == processes.process.pid and wanted in argv:
            pids.append(int(entry.name))
    return pids
