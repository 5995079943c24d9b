"""The CPO node's CDR outbox end to end: a real CPO node (every service a process) submits CDRs through
its internal API and delivers them to fake EMP peers over HTTP.

What is proven: a CDR submitted while its EMP is down arrives exactly once, byte for byte (time zones,
calibration-law data), when the EMP is back; a ``cdr`` worker killed with SIGKILL while the EMP is
slow to answer leaves nothing lost - the restarted worker sends the CDR again and it is delivered; a
peer that always fails gets the CDR exactly ``max_attempts`` times, then it is parked (store and
event) until ``cpo.cdr.replay``, after which it is delivered; a definitive 400 refusal parks at once;
the owning EMP is found by the ledger's session, else the EvcoID's provider, else the default route,
else ``300`` without storing; one CDR per SessionID (identical repeat idempotent, different one 409)."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.stores.cdr_outbox import CdrOutbox, CdrState, OutboxCdr
from shared.stores.redis import KeySpace
from shared.stores.sessions import Session, SessionLedger, SessionState
from tests.support.cdrs import FakeCdrEmp, cdr_body, service_pids
from tests.support.events import EventTap
from tests.support.nodes import REDIS_URL, RUN_ID, NodeProcesses, NodeSpec, cleanup, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

OPERATOR = "DE*CDR"
MAX_ATTEMPTS = 4
BACKOFF = {"backoff_initial_seconds": 0.3, "backoff_max_seconds": 1.0}
SLOW_ANSWER_SECONDS = 2.0
SLOW_PEER_TIMEOUT_SECONDS = 4.0
LEASE_SECONDS = 1
DELIVERY_TIMEOUT = 40  # seconds a delivery may take in these tests (kill, restart and lease expiry included)

# One fake EMP per scenario, so no test sees another's CDRs; each is reached through its EvcoIDs.
DOWN, SLOW, FLAKY, REFUSER, OWNER, DIRECT, HUB = "DE-DWN", "DE-SLO", "DE-FLK", "DE-REF", "DE-OWN", "DE-DIR", "DE-HUB"


def evco(provider: str) -> str:
    return f"{provider}-C{uuid.uuid4().hex[:8].upper()}-X"


def evse() -> str:
    return f"{OPERATOR}*E{uuid.uuid4().hex[:10].upper()}"


@dataclass
class CdrNode:
    node: NodeSpec
    processes: NodeProcesses
    emps: dict[str, FakeCdrEmp]
    http: aiohttp.ClientSession
    outbox: CdrOutbox
    ledger: SessionLedger
    tap: EventTap

    async def submit(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return await self.post("/commands/cpo.cdr.submit", body)

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(f"{self.node.internal_url}{path}") as response:
            return response.status, await (response.json() if path != "/metrics" else response.text())

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with self.http.post(f"{self.node.internal_url}{path}", json=body) as response:
            return response.status, await response.json()

    async def record(self, session_id: str) -> OutboxCdr:
        record = await self.outbox.get(session_id)
        assert record is not None, f"CDR {session_id} not stored"
        return record

    def in_state(self, session_id: str, state: CdrState) -> Any:
        async def check() -> OutboxCdr | None:
            record = await self.outbox.get(session_id)
            return record if record is not None and record.state is state else None

        return check

    def events(self, session_id: str, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.tap.events if e["type"] == kind and e["data"]["session_id"] == session_id]


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def cdr_node(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[CdrNode]:
    emps = {name: FakeCdrEmp(name) for name in (DOWN, SLOW, FLAKY, REFUSER, OWNER, DIRECT, HUB)}
    for name, emp in emps.items():
        if name not in (DOWN, HUB):  # DOWN starts down; HUB is registered (and started) by a test
            await emp.start()
    node = NodeSpec("cdrcpo", operator_ids=[OPERATOR])
    node.peers = [
        {
            "id": name,
            "role": "emp",
            "base_url": emp.url,
            "outbound_token": f"cdrcpo-calls-{name}",
            **({"timeout_seconds": SLOW_PEER_TIMEOUT_SECONDS} if name == SLOW else {}),
        }
        for name, emp in emps.items()
        if name != HUB
    ]
    node.extra = {
        "delivery": {
            "poll_interval_seconds": 0.5,
            "backoff_initial_seconds": 0.2,
            "backoff_max_seconds": 2,
            "lease_seconds": LEASE_SECONDS,
        },
        "cdr": {"max_attempts": MAX_ATTEMPTS, **BACKOFF},
    }
    processes = NodeProcesses([node], tmp_path_factory.mktemp("cdr"))
    redis = aioredis.from_url(REDIS_URL)
    keys = KeySpace(f"{RUN_ID}:{node.name}:")
    http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {node.internal_token}"})
    try:
        await processes.start()
        async with EventTap(node.topology.events.name, "cdr.#") as tap:
            yield CdrNode(node, processes, emps, http, CdrOutbox(redis, keys), SessionLedger(redis, keys), tap)
    finally:
        await http.close()
        processes.stop()
        for emp in emps.values():
            await emp.stop()
        await redis.aclose()
        await cleanup([node])


def assert_intact(received: bytes, submitted: dict[str, Any]) -> None:
    """Every field as submitted, in the same order, times in the station's time zone."""
    got = orjson.loads(received)
    assert got == submitted
    assert list(got) == list(submitted)
    for name in ("ChargingStart", "ChargingEnd", "SessionStart", "SessionEnd"):
        assert got[name] == submitted[name] and got[name][-6:] in ("+02:00", "-05:00"), "the station's offset"
    assert got["SignedMeteringValues"] == submitted["SignedMeteringValues"] and len(got["SignedMeteringValues"]) == 10
    assert got["CalibrationLawVerificationInfo"] == submitted["CalibrationLawVerificationInfo"]


async def test_a_cdr_submitted_while_the_emp_is_down_arrives_once_it_is_back(cdr_node: CdrNode) -> None:
    emp = cdr_node.emps[DOWN]
    sid = str(uuid.uuid4())
    body = cdr_body(sid, evse(), evco_id=evco(DOWN))
    status, reply = await cdr_node.submit(body)
    assert status == 200 and reply["ok"] and reply["session_id"] == sid and reply["changed"] == 1, reply
    # the node tried and failed (connection refused): the CDR waits, it is not parked
    failed = await wait_until(
        lambda: _attempted(cdr_node, sid), timeout=DELIVERY_TIMEOUT, what="a failed delivery attempt"
    )
    assert failed.state is CdrState.PENDING and failed.last_error and "connect" in failed.last_error
    await emp.start()
    await wait_until(cdr_node.in_state(sid, CdrState.DELIVERED), timeout=DELIVERY_TIMEOUT, what="delivered")
    (received,) = emp.of(sid)  # exactly once: acknowledged, so never sent again
    assert received.answered == "000" and received.operator == OPERATOR
    assert_intact(received.raw, body)
    record = await cdr_node.record(sid)
    assert record.forwarded and record.attempts >= 1
    assert await cdr_node.outbox.count_pending(DOWN) == 0
    await wait_until(lambda: cdr_node.events(sid, "cdr.delivered"), what="cdr.delivered")
    assert cdr_node.events(sid, "cdr.submitted")[0]["data"]["cdr"] == body


async def _attempted(cdr_node: CdrNode, sid: str) -> OutboxCdr | None:
    record = await cdr_node.outbox.get(sid)
    return record if record is not None and record.attempts >= 1 else None


async def test_a_cdr_worker_killed_mid_delivery_loses_nothing(cdr_node: CdrNode) -> None:
    emp = cdr_node.emps[SLOW]
    emp.delay = SLOW_ANSWER_SECONDS
    emp.answers = ["http 503"]  # the answer to the request in flight would not reach the dead worker
    sid = str(uuid.uuid4())
    body = cdr_body(sid, evse(), evco_id=evco(SLOW))
    (worker,) = service_pids(cdr_node.processes, "cdr")
    status, reply = await cdr_node.submit(body)
    assert status == 200 and reply["ok"], reply
    await wait_until(lambda: emp.in_flight == 1, timeout=DELIVERY_TIMEOUT, what="the CDR in flight")
    os.kill(worker, signal.SIGKILL)  # mid-delivery: the EMP has not answered yet
    emp.delay = 0.0
    await wait_until(
        lambda: [p for p in service_pids(cdr_node.processes, "cdr") if p != worker],
        timeout=DELIVERY_TIMEOUT,
        what="the cdr worker restarted",
    )
    await wait_until(cdr_node.in_state(sid, CdrState.DELIVERED), timeout=DELIVERY_TIMEOUT, what="delivered")
    requests = emp.of(sid)
    assert len(requests) >= 2, "the restarted worker sent the CDR again"
    assert [r.answered for r in requests][-1] == "000" and len(emp.acknowledged(sid)) == 1
    for request in requests:
        assert_intact(request.raw, body)
    assert emp.stored[sid] == body
    assert emp.max_in_flight == 1, "one sender per peer"


async def test_a_failing_peer_gets_max_attempts_then_the_cdr_is_parked_until_replayed(cdr_node: CdrNode) -> None:
    emp = cdr_node.emps[FLAKY]
    emp.default = "http 503"
    sid = str(uuid.uuid4())
    body = cdr_body(sid, evse(), evco_id=evco(FLAKY), offset="-05:00")
    status, reply = await cdr_node.submit(body)
    assert status == 200 and reply["ok"], reply
    parked = await wait_until(cdr_node.in_state(sid, CdrState.PARKED), timeout=DELIVERY_TIMEOUT, what="parked")
    assert parked.attempts == MAX_ATTEMPTS and "503" in (parked.parked_reason or "")
    assert [r.answered for r in emp.of(sid)] == ["http 503"] * MAX_ATTEMPTS
    (event,) = await wait_until(lambda: cdr_node.events(sid, "cdr.parked"), what="cdr.parked")
    assert event["data"]["attempts"] == MAX_ATTEMPTS and "503" in event["data"]["error"]
    page = await cdr_node.outbox.parked(0, 1000)
    assert sid in [c.session_id for c in page]
    # what an operations team sees: the internal API and the gauge
    status, listed = await cdr_node.get("/cdrs/parked?size=2000")
    assert status == 200 and listed["total"] >= 1
    [shown] = [c for c in listed["cdrs"] if c["session_id"] == sid]
    assert shown["state"] == "parked" and shown["attempts"] == MAX_ATTEMPTS and "503" in shown["parked_reason"]
    status, metrics = await cdr_node.get("/metrics")
    parked_gauge = next(line for line in metrics.splitlines() if line.startswith(f'oicp_cdrs_parked{{peer="{FLAKY}"}}'))
    assert float(parked_gauge.split()[-1]) >= 1

    emp.default = "ok"
    status, reply = await cdr_node.post("/commands/cpo.cdr.replay", {"session_ids": [sid]})
    assert status == 200 and reply["ok"] and reply["changed"] == 1, reply
    await wait_until(cdr_node.in_state(sid, CdrState.DELIVERED), timeout=DELIVERY_TIMEOUT, what="delivered")
    assert len(emp.acknowledged(sid)) == 1 and len(emp.of(sid)) == MAX_ATTEMPTS + 1
    assert_intact(emp.acknowledged(sid)[0].raw, body)
    status, reply = await cdr_node.post("/commands/cpo.cdr.replay", {"peer_id": FLAKY})
    assert status == 200 and reply["changed"] == 0, "nothing parked any more"


async def test_a_definitive_refusal_parks_at_once(cdr_node: CdrNode) -> None:
    emp = cdr_node.emps[REFUSER]
    emp.default = "400"
    sid = str(uuid.uuid4())
    status, reply = await cdr_node.submit(cdr_body(sid, evse(), evco_id=evco(REFUSER)))
    assert status == 200 and reply["ok"], reply
    parked = await wait_until(cdr_node.in_state(sid, CdrState.PARKED), timeout=DELIVERY_TIMEOUT, what="parked")
    assert parked.attempts == 1 and [r.answered for r in emp.of(sid)] == ["400"]
    assert "400" in (parked.parked_reason or "") and f"{REFUSER} refuses" in (parked.parked_reason or "")
    await wait_until(lambda: cdr_node.events(sid, "cdr.parked"), what="cdr.parked")
    # the EMP fixed its side: a replay of all of the peer's parked CDRs delivers it
    emp.default = "ok"
    status, reply = await cdr_node.post("/commands/cpo.cdr.replay", {"peer_id": REFUSER})
    assert status == 200 and reply["changed"] == 1, reply
    await wait_until(cdr_node.in_state(sid, CdrState.DELIVERED), timeout=DELIVERY_TIMEOUT, what="delivered")


async def test_routing_by_session_then_provider_then_default_route_else_300(cdr_node: CdrNode) -> None:
    owner, direct, hub = cdr_node.emps[OWNER], cdr_node.emps[DIRECT], cdr_node.emps[HUB]

    # 1. the ledger's session wins over the EvcoID's provider
    in_ledger = str(uuid.uuid4())
    station = evse()
    await cdr_node.ledger.create(
        Session(
            session_id=in_ledger,
            role="cpo",
            state=SessionState.ENDED,
            evse_id=station,
            peer_id=OWNER,
            provider_id=OWNER,
        )
    )
    status, reply = await cdr_node.submit(cdr_body(in_ledger, station, evco_id=evco(DIRECT)))
    assert status == 200 and reply["ok"] and OWNER in reply["info"], reply
    await wait_until(lambda: owner.acknowledged(in_ledger), timeout=DELIVERY_TIMEOUT, what="delivered to the owner")
    session = await wait_until(
        lambda: _session_in(cdr_node, in_ledger, SessionState.CDR_SENT), what="the session cdr_sent"
    )
    assert session.state is SessionState.CDR_SENT
    assert not direct.of(in_ledger)
    assert not cdr_node.events(in_ledger, "cdr.session.unknown")

    # 2. no session: the EvcoID's provider; the CDR is flagged (unknown session) and still delivered
    by_provider = str(uuid.uuid4())
    status, reply = await cdr_node.submit(cdr_body(by_provider, evse(), evco_id=evco(DIRECT)))
    assert status == 200 and reply["ok"], reply
    await wait_until(lambda: direct.acknowledged(by_provider), timeout=DELIVERY_TIMEOUT, what="delivered by provider")
    await wait_until(lambda: cdr_node.events(by_provider, "cdr.session.unknown"), what="cdr.session.unknown")
    unknown = await cdr_node.outbox.unknown_sessions(0, 1000)
    assert by_provider in [c.session_id for c in unknown] and in_ledger not in [c.session_id for c in unknown]

    # 3. an RFID card without EvcoID, no session, no default route: 300, nothing stored
    rfid = str(uuid.uuid4())
    rfid_body = cdr_body(rfid, evse(), uid="A1B2C3D4")
    status, reply = await cdr_node.submit(rfid_body)
    assert status == 422 and not reply["ok"] and reply["code"] == "300", reply
    assert await cdr_node.outbox.get(rfid) is None
    # an EvcoID of a provider that is no peer: 300 as well
    status, reply = await cdr_node.submit(cdr_body(str(uuid.uuid4()), evse(), evco_id=evco("DE-NOP")))
    assert status == 422 and reply["code"] == "300", reply

    # 4. with a default-route EMP peer (a hub, registered through the internal API) it goes there
    await hub.start()
    status, added = await cdr_node.post(
        "/peers", {"id": HUB, "role": "emp", "base_url": hub.url, "default_route": True, "outbound_token": "to-hub"}
    )
    assert status == 201, added

    async def routed() -> dict[str, Any] | None:
        status, reply = await cdr_node.submit(rfid_body)
        return reply if status == 200 else None  # 300 until the worker's peer list has the hub

    reply = await wait_until(routed, timeout=DELIVERY_TIMEOUT, what="the hub routes")
    assert reply["ok"] and HUB in reply["info"], reply
    await wait_until(lambda: hub.acknowledged(rfid), timeout=DELIVERY_TIMEOUT, what="delivered to the hub")
    assert_intact(hub.acknowledged(rfid)[0].raw, rfid_body)


async def _session_in(cdr_node: CdrNode, sid: str, state: SessionState) -> Session | None:
    session = await cdr_node.ledger.get(sid)
    return session if session is not None and session.state is state else None


async def test_one_cdr_per_session_and_only_for_own_evses(cdr_node: CdrNode) -> None:
    direct = cdr_node.emps[DIRECT]
    sid = str(uuid.uuid4())
    body = cdr_body(sid, evse(), evco_id=evco(DIRECT))
    status, first = await cdr_node.submit(body)
    assert status == 200 and first["changed"] == 1, first
    await wait_until(cdr_node.in_state(sid, CdrState.DELIVERED), timeout=DELIVERY_TIMEOUT, what="delivered")
    status, again = await cdr_node.submit(body)
    assert status == 200 and again["ok"] and again["changed"] == 0, again
    assert await cdr_node.outbox.count_pending(DIRECT) == 0, "the repeat is not queued again"
    assert (await cdr_node.record(sid)).state is CdrState.DELIVERED
    assert len(cdr_node.events(sid, "cdr.submitted")) == 1

    changed = cdr_body(
        sid, body["EvseID"], evco_id=body["Identification"]["RemoteIdentification"]["EvcoID"], energy="1.5"
    )
    status, conflict = await cdr_node.submit(changed)
    assert status == 409 and not conflict["ok"] and conflict["code"] == "009", conflict
    assert (await cdr_node.record(sid)).cdr == body, "the first CDR is kept"
    assert len(direct.of(sid)) == 1

    foreign = str(uuid.uuid4())
    status, reply = await cdr_node.submit(cdr_body(foreign, "DE*XYZ*E1234", evco_id=evco(DIRECT)))
    assert status == 422 and reply["code"] == "018", reply
    assert await cdr_node.outbox.get(foreign) is None
