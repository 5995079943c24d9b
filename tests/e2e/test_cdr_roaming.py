"""CDRs between two real nodes whose processes the test stops and starts: a CDR submitted while the
EMP node is down arrives exactly once after it is back, every field intact; a CDR the EMP node missed
is fetched with GetChargeDetailRecords (on demand and on its schedule) into the same inbox without
a duplicate; the CPO face's GetChargeDetailRecords shows only the caller's CDRs, with CDRForwarded,
every filter and every page over 5,000 of them."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.oicp.operations import OPERATIONS_BY_NAME
from shared.stores.cdr_outbox import CdrEntry, CdrOutbox
from shared.stores.redis import KeySpace
from tests.oicp_schema import validate_response
from tests.support.cdr_bodies import full_cdr
from tests.support.cdrs import service_pids
from tests.support.events import EventTap
from tests.support.nodes import REDIS_URL, RUN_ID, NodeProcesses, NodeSpec, cleanup, free_port, wait_until
from tests.support.proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

CPO_ID, EMP_ID = "DE*GEF", "DE-GDF"
EMP_CALLS_CPO, CPO_CALLS_EMP = "r-emp-calls-cpo", "r-cpo-calls-emp"
# A second EMP peer that is never reachable: it owns the bulk of CDRs the paging test reads (its lane
# retries the first of them slowly and never gets one through, so the bulk stays put).
BULK_EMP, BULK_CALLS_CPO = "DE-BLK", "r-blk-calls-cpo"
BULK = 5_000
FETCH_INTERVAL_SECONDS = 1.0
# fast retries, and never parked while the test keeps the EMP node down
FAST_RETRIES = {"cdr": {"backoff_initial_seconds": 0.2, "backoff_max_seconds": 1.0, "max_attempts": 1000}}
GET_CDRS = OPERATIONS_BY_NAME["GetChargeDetailRecords"].path.format(providerID=EMP_ID)


@dataclass
class Roaming:
    cpo: NodeSpec
    emp: NodeSpec
    cpo_nodes: NodeProcesses
    emp_nodes: NodeProcesses
    to_emp: TcpProxy  # the CPO node reaches the EMP node through it


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def roaming(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Roaming]:
    cpo = NodeSpec("rcpo", operator_ids=[CPO_ID], extra=FAST_RETRIES)
    emp = NodeSpec("remp", provider_ids=[EMP_ID], extra=FAST_RETRIES)
    to_emp = TcpProxy(emp.oicp_port)
    await to_emp.start()
    cpo.peers = [
        {
            "id": EMP_ID,
            "role": "emp",
            "base_url": f"http://127.0.0.1:{to_emp.port}",
            "inbound_token": EMP_CALLS_CPO,
            "outbound_token": CPO_CALLS_EMP,
            "timeout_seconds": 2,
        },
        {
            "id": BULK_EMP,
            "role": "emp",
            "base_url": f"http://127.0.0.1:{free_port()}",
            "inbound_token": BULK_CALLS_CPO,
            "outbound_token": "r-cpo-calls-blk",
            "timeout_seconds": 1,
        },
    ]
    emp.peers = [
        {
            "id": CPO_ID,
            "role": "cpo",
            "base_url": cpo.oicp_url,
            "inbound_token": CPO_CALLS_EMP,
            "outbound_token": EMP_CALLS_CPO,
            "cdr_fetch_interval_seconds": FETCH_INTERVAL_SECONDS,
        }
    ]
    directory = tmp_path_factory.mktemp("roaming")
    nodes = Roaming(cpo, emp, NodeProcesses([cpo], directory), NodeProcesses([emp], directory), to_emp)
    try:
        await nodes.cpo_nodes.start()
        await nodes.emp_nodes.start()
        yield nodes
    finally:
        nodes.cpo_nodes.stop()
        nodes.emp_nodes.stop()
        await to_emp.cut()
        await cleanup([cpo, emp])


async def internal_get(node: NodeSpec, path: str) -> Any:
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {node.internal_token}"}
        async with http.get(node.internal_url + path, headers=headers) as response:
            return await response.json() if response.status == 200 else None


async def submit(node: NodeSpec, cdr: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {node.internal_token}"}
        async with http.post(f"{node.internal_url}/commands/cpo.cdr.submit", json=cdr, headers=headers) as response:
            answer = await response.json()
            assert response.status == 200 and answer["ok"], answer
            return answer  # type: ignore[no-any-return]


async def emp_copy(roaming: Roaming, session_id: str) -> dict[str, Any] | None:
    view = await internal_get(roaming.emp, f"/cdrs/{session_id}")
    return view["in"] if view and view["in"] else None


async def cpo_state(roaming: Roaming, session_id: str) -> dict[str, Any] | None:
    view = await internal_get(roaming.cpo, f"/cdrs/{session_id}")
    return view["out"] if view else None


async def test_a_cdr_submitted_while_the_emp_node_is_down_arrives_once_it_is_back(roaming: Roaming) -> None:
    roaming.emp_nodes.stop()
    cdr = full_cdr(evse_id="DE*GEF*E1ROAM*1")
    sid = cdr["SessionID"]
    try:
        await submit(roaming.cpo, cdr)  # acknowledged: stored, whatever the EMP's state

        async def failed_at_least_twice() -> bool:
            state = await cpo_state(roaming, sid)
            return state is not None and int(state.get("attempts") or 0) >= 2

        await wait_until(failed_at_least_twice, what="the CPO retrying the down EMP")
        assert (await cpo_state(roaming, sid) or {}).get("state") == "pending"
    finally:
        await roaming.emp_nodes.start()

    async with EventTap(roaming.emp.topology.events.name, "cdr.received") as events:
        received = await wait_until(lambda: emp_copy(roaming, sid), timeout=30, what="the CDR at the EMP node")
        assert received["cdr"] == cdr, "every field intact, time zones as submitted"

        async def delivered() -> bool:
            return ((await cpo_state(roaming, sid)) or {}).get("state") == "delivered"

        await wait_until(delivered, what="the CPO's outbox marking it delivered")
        # exactly once: a later CDR's event marks the point by which a second one would have come
        marker = full_cdr(evse_id="DE*GEF*E1ROAM*2")
        await submit(roaming.cpo, marker)
        await wait_until(
            lambda: [e for e in events.events if e["data"]["session_id"] == marker["SessionID"]], what="the marker"
        )
        assert [e["data"]["session_id"] for e in events.events].count(sid) <= 1
    listed = await internal_get(roaming.emp, "/cdrs?direction=in&size=2000")
    assert [c["session_id"] for c in listed["cdrs"]].count(sid) == 1


async def test_get_charge_detail_records_and_the_scheduled_fetch(roaming: Roaming) -> None:
    """While the EMP node is down the CPO's lane keeps the CDR pending (not forwarded); the EMP's
    GetChargeDetailRecords sees it with CDRForwarded=false, and its scheduled fetch stores it once."""
    roaming.emp_nodes.stop()
    cdr = full_cdr(evse_id="DE*GEF*E1ROAM*3")
    sid = cdr["SessionID"]
    try:
        await submit(roaming.cpo, cdr)
        now = datetime.now(UTC)
        body = {
            "ProviderID": EMP_ID,
            "From": (now - timedelta(hours=1)).isoformat(),
            "To": (now + timedelta(hours=1)).isoformat(),
            "CDRForwarded": False,
        }
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {EMP_CALLS_CPO}"}
            async with http.post(roaming.cpo.oicp_url + GET_CDRS, json=body, headers=headers) as response:
                page = await response.json()
        validate_response(GET_CDRS, page)
        assert page["StatusCode"]["Code"] == "000"
        assert sid in {c["SessionID"] for c in page["content"]}
        assert next(c for c in page["content"] if c["SessionID"] == sid) == cdr
    finally:
        await roaming.emp_nodes.start()
    # once back, the EMP node has it (pushed by the lane or fetched by its schedule), exactly once
    received = await wait_until(lambda: emp_copy(roaming, sid), timeout=30, what="the CDR at the EMP node")
    assert received["cdr"] == cdr

    async def fetched() -> Any:
        states = await internal_get(roaming.emp, "/cdrs/fetches")
        state = next((s for s in states or [] if s["peer_id"] == CPO_ID), None)
        return state if state and state["last_success"] else None

    state = await wait_until(fetched, timeout=30, what="a scheduled GetChargeDetailRecords")
    assert state["interval_seconds"] == FETCH_INTERVAL_SECONDS and state["last_error"] is None
    listed = await internal_get(roaming.emp, "/cdrs?direction=in&size=2000")
    assert [c["session_id"] for c in listed["cdrs"]].count(sid) == 1


async def test_a_missed_cdr_is_fetched_on_demand(roaming: Roaming) -> None:
    """A CDR the EMP node's inbox lost (deleted here, as if its Redis had been restored from an old
    backup) is fetched again with emp.cdr.fetch, and a fetch of what is known stores nothing twice."""
    cdr = full_cdr(evse_id="DE*GEF*E1ROAM*4")
    sid = cdr["SessionID"]
    await submit(roaming.cpo, cdr)
    await wait_until(lambda: emp_copy(roaming, sid), timeout=30, what="the CDR at the EMP node")

    client = aioredis.from_url(REDIS_URL)
    async with client:
        keys = KeySpace(f"{RUN_ID}:{roaming.emp.name}:")
        await client.hdel(keys.key("cdr", "in", "records"), sid)
        await client.zrem(keys.key("cdr", "in", "by-time"), sid)

    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {roaming.emp.internal_token}"}
        url = f"{roaming.emp.internal_url}/commands/emp.cdr.fetch"
        async with http.post(url, json={"peer_id": CPO_ID}, headers=headers) as response:
            first = await response.json()
        assert response.status == 200 and first["ok"], first
        # (the node's schedule may have fetched it a moment earlier: then this fetch found it known)
        assert int(first["info"].split(" CDRs in ")[0]) >= 1, first
        received = await emp_copy(roaming, sid)
        assert received is not None and received["cdr"] == cdr and received["source"] == "fetch"
        async with http.post(url, json={"peer_id": CPO_ID}, headers=headers) as response:
            second = await response.json()
        assert second["ok"] and second["changed"] == 0, second


async def get_cdrs(roaming: Roaming, token: str, body: dict[str, Any], page: int, size: int) -> dict[str, Any]:
    provider = body["ProviderID"]
    path = OPERATIONS_BY_NAME["GetChargeDetailRecords"].path.format(providerID=provider)
    async with aiohttp.ClientSession() as http:
        url = f"{roaming.cpo.oicp_url}{path}?page={page}&size={size}"
        async with http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
            answer = await response.json()
    validate_response(path, answer)
    assert answer["StatusCode"]["Code"] == "000", answer
    return answer  # type: ignore[no-any-return]


async def test_get_charge_detail_records_pages_and_filters_5000_cdrs(roaming: Roaming) -> None:
    """5,000 CDRs of one EMP peer, two operators' worth of OperatorIDs, every fourth forwarded, with the
    other EMP's CDRs in the same time range: each filter and every page over HTTP, nothing foreign."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(seconds=7)
    client = aioredis.from_url(REDIS_URL)
    async with client:
        outbox = CdrOutbox(client, KeySpace(f"{RUN_ID}:{roaming.cpo.name}:"))
        rows = []
        entries = []
        for n in range(BULK):
            at = t0 + n * step
            cdr = full_cdr(evse_id=f"DE*GEF*E{n:05d}*1")
            entries.append(
                CdrEntry(cdr=cdr, peer_id=BULK_EMP, operator_id=CPO_ID, provider_id=BULK_EMP, submitted_at=at)
            )
            rows.append((cdr["SessionID"], at, n % 4 == 0))
        foreign = [
            CdrEntry(cdr=full_cdr(evse_id="DE*GEF*EFOREIGN*1"), peer_id=EMP_ID, operator_id=CPO_ID, submitted_at=t0)
        ]
        await outbox.submit_many([*entries, *foreign])
        for sid, _, forwarded in rows:
            if forwarded:
                await outbox.mark_delivered(sid)

    body = {"ProviderID": BULK_EMP, "From": t0.isoformat(), "To": (t0 + BULK * step).isoformat()}
    seen: list[str] = []
    for page in range(3):
        answer = await get_cdrs(roaming, BULK_CALLS_CPO, body, page, 2000)
        assert answer["totalElements"] == BULK and answer["totalPages"] == 3 and answer["number"] == page
        assert answer["first"] is (page == 0) and answer["last"] is (page == 2)
        assert answer["numberOfElements"] == len(answer["content"]) == (2000 if page < 2 else 1000)
        seen += [c["SessionID"] for c in answer["content"]]
    assert seen == [sid for sid, _, _ in rows], "every CDR once, in the order received"
    assert foreign[0].session_id not in seen

    # a time window (both ends inclusive) with CDRForwarded=false, default page size 20
    window = {**body, "From": (t0 + 100 * step).isoformat(), "To": (t0 + 199 * step).isoformat(), "CDRForwarded": False}
    answer = await get_cdrs(roaming, BULK_CALLS_CPO, window, 0, 20)
    expected = [sid for sid, at, fwd in rows[100:200] if not fwd]
    assert answer["totalElements"] == len(expected) == 75 and answer["size"] == 20
    assert [c["SessionID"] for c in answer["content"]] == expected[:20]

    # SessionIDs, one of them another EMP's: only the caller's come back
    ids = {**body, "SessionID": [rows[7][0], rows[4001][0], foreign[0].session_id]}
    answer = await get_cdrs(roaming, BULK_CALLS_CPO, ids, 0, 20)
    assert [c["SessionID"] for c in answer["content"]] == [rows[7][0], rows[4001][0]]

    # an OperatorID that is not the CDRs' finds nothing; the other EMP sees none of the bulk
    answer = await get_cdrs(roaming, BULK_CALLS_CPO, {**body, "OperatorID": "DE*XYZ"}, 0, 20)
    assert answer["totalElements"] == 0 and answer["content"] == []
    theirs = await get_cdrs(roaming, EMP_CALLS_CPO, {**body, "ProviderID": EMP_ID}, 0, 2000)
    assert {c["SessionID"] for c in theirs["content"]}.isdisjoint(seen)


async def test_a_cdr_worker_killed_mid_delivery_loses_nothing_and_duplicates_nothing(roaming: Roaming) -> None:
    """The CPO node's cdr worker dies (SIGKILL) while its CDR request is on the wire, unanswered. The
    restarted worker sends it again; the EMP node may see it twice and keeps it once; billing sees it
    once; the CPO's outbox ends with it delivered."""
    cdr = full_cdr(evse_id="DE*GEF*E1ROAM*5")
    sid = cdr["SessionID"]
    async with EventTap(roaming.emp.topology.events.name, "cdr.received") as events:
        roaming.to_emp.pause()
        try:
            before = roaming.to_emp.bytes_in
            await submit(roaming.cpo, cdr)
            await wait_until(lambda: roaming.to_emp.bytes_in > before, what="the CDR request on the wire")
            [worker] = service_pids(roaming.cpo_nodes, "cdr")
            os.kill(worker, signal.SIGKILL)
            await wait_until(
                lambda: (pids := service_pids(roaming.cpo_nodes, "cdr")) and pids != [worker],
                timeout=30,
                what="the launcher restarting the cdr worker",
            )
        finally:
            roaming.to_emp.resume()

        async def delivered() -> bool:
            return ((await cpo_state(roaming, sid)) or {}).get("state") == "delivered"

        await wait_until(delivered, timeout=60, what="the restarted worker's delivery acknowledged")
        received = await emp_copy(roaming, sid)
        assert received is not None and received["cdr"] == cdr
        marker = full_cdr(evse_id="DE*GEF*E1ROAM*6")
        await submit(roaming.cpo, marker)
        await wait_until(
            lambda: [e for e in events.events if e["data"]["session_id"] == marker["SessionID"]], what="the marker"
        )
        assert [e["data"]["session_id"] for e in events.events].count(sid) == 1
    listed = await internal_get(roaming.emp, "/cdrs?direction=in&size=2000")
    assert [c["session_id"] for c in listed["cdrs"]].count(sid) == 1
