"""The exchange journal between a real CPO node and a real EMP node (every service a process): a push,
a refusal and a failed outbound call journaled on both nodes with their fields; search filters; a
tampered entry in Redis reported at its seq; a peer's signed export verified by the CLI, and refused
with one byte changed; a journal outage that fails no OICP answer and shows in the metric."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.journal import signing
from tests.support.nodes import REDIS_URL, REPO, NodeProcesses, NodeSpec, cleanup, free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

CPO_ID, EMP_ID = "DE*JNL", "DE-JNL"
DEAD_CPO, DEAD_EMP = "DE*DED", "DE-DED"
CPO_CALLS_EMP = "jnl-cpo-calls-emp"
EMP_CALLS_CPO = "jnl-emp-calls-cpo"
JOURNAL = {"seal_interval_seconds": 0.1}


class Nodes:
    def __init__(self, cpo: NodeSpec, emp: NodeSpec, directory: Path) -> None:
        self.cpo, self.emp, self.directory = cpo, emp, directory


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def nodes(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Nodes]:
    directory = tmp_path_factory.mktemp("journal")
    signing.generate(directory / "cpo.key")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: every call fails to connect
    cpo = NodeSpec(
        "jcpo", operator_ids=[CPO_ID], extra={"journal": {**JOURNAL, "signing_key_file": str(directory / "cpo.key")}}
    )
    emp = NodeSpec("jemp", provider_ids=[EMP_ID], extra={"journal": JOURNAL})
    cpo.peers = [
        {
            "id": EMP_ID,
            "role": "emp",
            "base_url": emp.oicp_url,
            "inbound_token": EMP_CALLS_CPO,
            "outbound_token": CPO_CALLS_EMP,
            "push": ["PushEvseStatus"],
        },
        {"id": DEAD_EMP, "role": "emp", "base_url": dead, "outbound_token": "x", "push": ["PushEvseStatus"]},
    ]
    emp.peers = [
        # a wrong token: the CPO node refuses the EMP node's calls (017)
        {
            "id": CPO_ID,
            "role": "cpo",
            "base_url": cpo.oicp_url,
            "inbound_token": CPO_CALLS_EMP,
            "outbound_token": "wrong",
        },
        {"id": DEAD_CPO, "role": "cpo", "base_url": dead, "outbound_token": "x", "timeout_seconds": 2},
    ]
    processes = NodeProcesses([cpo, emp], directory)
    try:
        await processes.start()
        yield Nodes(cpo, emp, directory)
    finally:
        processes.stop()
        await cleanup([cpo, emp])


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def auth(spec: NodeSpec) -> dict[str, str]:
    return {"Authorization": f"Bearer {spec.internal_token}"}


async def search(http: aiohttp.ClientSession, spec: NodeSpec, **query: str) -> list[dict[str, Any]]:
    async with http.get(f"{spec.internal_url}/journal", params=query, headers=auth(spec)) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["entries"]


async def command(http: aiohttp.ClientSession, spec: NodeSpec, name: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(f"{spec.internal_url}/commands/{name}", json=body, headers=auth(spec)) as response:
        assert response.status in (200, 202, 502, 503, 504), await response.text()
        return await response.json()


def cli(spec: NodeSpec, *args: str) -> subprocess.CompletedProcess[str]:
    base = ["--url", spec.internal_url, "--token", spec.internal_token]
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *base, *args], cwd=REPO, capture_output=True, text=True, timeout=30
    )


def offline_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=30
    )


async def dropped(http: aiohttp.ClientSession, spec: NodeSpec) -> float:
    async with http.get(spec.metrics_url("gateway"), headers=spec.monitoring_headers) as response:
        text = await response.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('oicp_journal_dropped_total{reason="redis"}')
    )


async def test_exchanges_are_journaled_searched_verified_and_exported(
    nodes: Nodes, http: aiohttp.ClientSession
) -> None:
    cpo, emp = nodes.cpo, nodes.emp
    started = time.time()
    evse_id = f"{CPO_ID}*E{uuid.uuid4().hex[:8].upper()}"
    await command(http, cpo, "cpo.evse.status.set", {"records": [{"EvseID": evse_id, "EvseStatus": "Available"}]})
    refused = await command(http, emp, "emp.cdr.fetch", {"peer_id": CPO_ID})  # the CPO refuses: 017
    failed = await command(http, emp, "emp.cdr.fetch", {"peer_id": DEAD_CPO})  # nothing answers
    assert refused and failed

    # the push: outbound on the CPO node, inbound on the EMP node, with their fields
    pushed = await wait_until(lambda: search(http, cpo, evse=evse_id, peer=EMP_ID), what="the CPO's push journaled")
    received = await wait_until(lambda: search(http, emp, evse=evse_id, bodies="true"), what="the EMP's push journaled")
    out, into = pushed[0], received[0]
    assert (out["direction"], out["operation"], out["http_status"], out["status_code"]) == (
        "outbound",
        "PushEvseStatus",
        200,
        "000",
    )
    assert (into["direction"], into["peer"], into["operation"], into["status_code"]) == (
        "inbound",
        CPO_ID,
        "PushEvseStatus",
        "000",
    )
    assert out["request_digest"] == into["request_digest"] and out["response_digest"] == into["response_digest"]
    assert into["path"].endswith("/status-records") and evse_id in into["evse_ids"]
    assert into["request"]["OperatorEvseStatus"]["EvseStatusRecord"][0]["EvseID"] == evse_id
    assert out["seq"] >= 1 and len(out["hash"]) == 64 and out["ts"] >= started - 1

    # the refusal: inbound on the CPO node (unknown caller, 017), outbound on the EMP node
    refusals = await wait_until(lambda: search(http, cpo, status="017"), what="the CPO's refusal journaled")
    assert refusals[0]["direction"] == "inbound" and refusals[0]["peer"] == "anonymous"
    assert refusals[0]["operation"] == "GetChargeDetailRecords" and refusals[0]["request_digest"] is None
    answered = await wait_until(
        lambda: search(http, emp, peer=CPO_ID, operation="GetChargeDetailRecords"), what="the EMP's call journaled"
    )
    assert answered[0]["status_code"] == "017" and answered[0]["direction"] == "outbound"

    # failed outbound calls: the CPO's push to a dead peer, the EMP's fetch from one
    for spec, peer in ((cpo, DEAD_EMP), (emp, DEAD_CPO)):
        failures = await wait_until(lambda s=spec, p=peer: search(http, s, peer=p), what=f"{spec.name}'s failure")
        assert failures[0]["http_status"] is None and failures[0]["error"].startswith("connect")
        assert failures[0]["request_digest"] is not None and failures[0]["response_digest"] is None

    # search filters
    assert all(e["operation"] == "PushEvseStatus" for e in await search(http, cpo, operation="PushEvseStatus"))
    assert await search(http, cpo, evse=evse_id, to=str(started - 60)) == []
    assert len(await search(http, cpo, peer=DEAD_EMP, limit="1")) == 1
    assert await search(http, emp, session="no-such-session") == []
    cli_found = cli(cpo, "journal", "search", "--evse", evse_id, "--peer", EMP_ID)
    assert cli_found.returncode == 0 and evse_id in cli_found.stdout

    # the chain verifies on both nodes
    for spec in (cpo, emp):
        verified = cli(spec, "journal", "verify")
        assert verified.returncode == 0, verified.stderr

    # a peer's range, exported and signed; a partner verifies it offline with the public key
    bundle, public = nodes.directory / "emp.jsonl", nodes.directory / "cpo.pub"
    assert cli(cpo, "journal", "public-key", "--out", str(public)).returncode == 0
    exported = cli(cpo, "journal", "export", "--peer", EMP_ID, "--from", str(started - 5), "--out", str(bundle))
    assert exported.returncode == 0, exported.stderr
    lines = bundle.read_bytes().splitlines()
    assert any(evse_id.encode() in line for line in lines[1:]) and b'"peer":"DE-JNL"' in lines[1]
    good = offline_cli("journal", "verify-bundle", str(bundle), f"{bundle}.sig", "--public-key", str(public))
    assert good.returncode == 0, good.stderr
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x01
    bundle.write_bytes(bytes(data))
    bad = offline_cli("journal", "verify-bundle", str(bundle), f"{bundle}.sig", "--public-key", str(public))
    assert bad.returncode == 1 and "NOT verified" in bad.stderr

    # one entry changed in Redis: verification names its seq
    redis = aioredis.from_url(REDIS_URL)
    try:
        sealed = f"{cpo.config()['redis']['key_prefix']}journal:sealed"
        # rebuilt with entry 2 changed (a stream cannot be rewritten in place), then swapped in
        forged = f"{sealed}:forged"
        for stream_id, fields in await redis.xrange(sealed):
            if stream_id == b"2-0":
                fields = {b"e": fields[b"e"].replace(b'"node":"jcpo"', b'"node":"jcpx"'), b"h": fields[b"h"]}
            await redis.xadd(forged, fields, id=stream_id)
        await redis.rename(forged, sealed)
    finally:
        await redis.aclose()
    async with http.get(f"{cpo.internal_url}/journal/verify", headers=auth(cpo)) as response:
        outcome = await response.json()
    assert not outcome["ok"] and outcome["broken"]["seq"] == 2 and outcome["broken"]["reason"] == "hash"
    broken = cli(cpo, "journal", "verify")
    assert broken.returncode == 1 and "seq 2" in broken.stderr


async def test_a_journal_outage_fails_no_oicp_answer(nodes: Nodes, http: aiohttp.ClientSession) -> None:
    cpo, emp = nodes.cpo, nodes.emp
    raw = f"{emp.config()['redis']['key_prefix']}journal:raw"
    redis = aioredis.from_url(REDIS_URL)
    before = await dropped(http, emp)
    try:
        await redis.delete(raw)
        await redis.set(raw, "not a stream")  # every journal write of the EMP node fails now
        evse_id = f"{CPO_ID}*E{uuid.uuid4().hex[:8].upper()}"
        await command(http, cpo, "cpo.evse.status.set", {"records": [{"EvseID": evse_id, "EvseStatus": "Occupied"}]})

        async def stored() -> bool:
            async with http.get(f"{emp.internal_url}/evses/{evse_id}/status", headers=auth(emp)) as response:
                return response.status == 200 and (await response.json())["EvseStatus"] == "Occupied"

        await wait_until(stored, what="the push answered and stored despite the journal outage")
        answered = await wait_until(lambda: search(http, cpo, evse=evse_id, peer=EMP_ID), what="the CPO's entry")
        assert answered[0]["status_code"] == "000"  # the EMP node's answer was a success
        await wait_until(lambda: _grew(http, emp, before), what="oicp_journal_dropped_total to count the outage")
    finally:
        await redis.delete(raw)
        await redis.aclose()


async def _grew(http: aiohttp.ClientSession, spec: NodeSpec, before: float) -> bool:
    return await dropped(http, spec) > before
