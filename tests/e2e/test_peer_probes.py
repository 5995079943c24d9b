"""Peer probes between a real CPO node and a real EMP node over mutual TLS (issue #10, point 3).

Proven: the CPO node probes its EMP peer (AuthorizeStop of an unknown session: a valid NotAuthorized)
and the EMP node its CPO peer (PullEvseStatusById of an unknown EVSE: a valid EvseNotFound), each
passing DNS, TCP, the TLS handshake with the configured certificates (and the server certificate's days
left) and the OICP round trip; a peer that is down fails at TCP with the reason; the results are in
``GET /probes``, in the gateway's ``/metrics`` and behind the command line; and the sessions worker's
periodic job (``probes.interval_seconds`` lowered) keeps them fresh.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.support.certs import Authority
from tests.support.metrics import scrape
from tests.support.nodes import REPO, NodeProcesses, NodeSpec, cleanup, free_port, wait_until
from tests.support.tls_nodes import TlsNodeSpec

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

CPO_ID = "DE*PRC"
EMP_ID = "DE-PRE"
DOWN_ID = "DE-PDW"
INTERVAL = 1.5  # probes.interval_seconds of both nodes


@dataclass
class ProbePair:
    cpo: NodeSpec
    emp: NodeSpec
    http: aiohttp.ClientSession

    async def internal(self, node: NodeSpec, method: str, path: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {node.internal_token}"}
        async with self.http.request(method, node.internal_url + path, headers=headers) as response:
            return response.status, await response.json()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def nodes(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ProbePair]:
    directory = tmp_path_factory.mktemp("probes")
    ca = Authority.create(directory / "ca")
    cpo_server, emp_server = ca.issue("cpo-server", "cpo", server=True), ca.issue("emp-server", "emp", server=True)
    cpo_client, emp_client = ca.issue("cpo-client", CPO_ID), ca.issue("emp-client", EMP_ID)
    probes = {"probes": {"enabled": True, "interval_seconds": INTERVAL}}

    def tls(server: Any) -> dict[str, Any]:
        return {"cert_file": server.cert, "key_file": server.key, "client_ca_file": ca.cert}

    cpo = TlsNodeSpec("probe-cpo", operator_ids=[CPO_ID], tls=tls(cpo_server), extra=probes)
    emp = TlsNodeSpec("probe-emp", provider_ids=[EMP_ID], tls=tls(emp_server), extra=probes)
    cpo.peers = [
        {
            "id": EMP_ID,
            "role": "emp",
            "base_url": emp.oicp_url,
            "auth": "certificate",
            "certificate_identity": EMP_ID,
            "tls": {"client_cert_file": str(cpo_client.cert), "client_key_file": str(cpo_client.key)}
            | {"ca_file": str(ca.cert)},
        },
        {
            "id": DOWN_ID,
            "role": "emp",
            "base_url": f"http://127.0.0.1:{free_port()}",  # nothing listens there
            "inbound_token": "down-calls-cpo",
            "timeout_seconds": 2,
        },
    ]
    emp.peers = [
        {
            "id": CPO_ID,
            "role": "cpo",
            "base_url": cpo.oicp_url,
            "auth": "certificate",
            "certificate_identity": CPO_ID,
            "tls": {"client_cert_file": str(emp_client.cert), "client_key_file": str(emp_client.key)}
            | {"ca_file": str(ca.cert)},
        },
    ]
    processes = NodeProcesses([cpo, emp], directory)
    try:
        await processes.start()
        async with aiohttp.ClientSession() as http:
            yield ProbePair(cpo, emp, http)
    finally:
        processes.stop()
        await cleanup([cpo, emp])


def steps(result: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["status"] for s in result["steps"]}


async def test_each_node_probes_the_other_through_every_step(nodes: ProbePair) -> None:
    status, result = await nodes.internal(nodes.cpo, "POST", f"/peers/emp/{EMP_ID}/probe")
    assert status == 200, result
    assert result["ok"] is True, result
    assert steps(result) == {"dns": "ok", "tcp": "ok", "tls": "ok", "oicp": "ok"}
    assert (result["operation"], result["answer_valid"], result["status_code"]) == ("AuthorizeStop", True, "400")
    assert "NotAuthorized" in result["steps"][3]["detail"]
    assert 1.9 < result["certificate_days_left"] <= 2.0  # tests/support/certs.py: 2 days
    assert 1.9 < result["client_certificate_days_left"] <= 2.0  # ours for the peer (tls.client_cert_file)

    status, result = await nodes.internal(nodes.emp, "POST", f"/peers/cpo/{CPO_ID}/probe")
    assert status == 200, result
    assert result["ok"] is True, result
    assert steps(result) == {"dns": "ok", "tcp": "ok", "tls": "ok", "oicp": "ok"}
    assert (result["operation"], result["answer_valid"], result["status_code"]) == ("PullEvseStatusById", True, "000")
    assert "EvseNotFound" in result["steps"][3]["detail"]
    assert result["certificate_not_after"] > time.time()


async def test_a_peer_that_is_down_fails_at_tcp(nodes: ProbePair) -> None:
    status, result = await nodes.internal(nodes.cpo, "POST", f"/peers/emp/{DOWN_ID}/probe")
    assert status == 200, result
    assert result["ok"] is False and result["failed_step"] == "tcp"
    assert result["reason"].startswith("tcp: connection failed") and "127.0.0.1" in result["reason"]
    assert steps(result) == {"dns": "ok", "tcp": "failed", "tls": "skipped", "oicp": "skipped"}
    status, _ = await nodes.internal(nodes.cpo, "POST", "/peers/emp/DE-NOP/probe")
    assert status == 404


async def test_results_are_in_the_api_and_the_metrics(nodes: ProbePair) -> None:
    await nodes.internal(nodes.cpo, "POST", f"/peers/emp/{DOWN_ID}/probe")
    await nodes.internal(nodes.cpo, "POST", f"/peers/emp/{EMP_ID}/probe")
    status, results = await nodes.internal(nodes.cpo, "GET", "/probes")
    assert status == 200
    by_peer = {r["peer_id"]: r for r in results}
    assert set(by_peer) == {EMP_ID, DOWN_ID}
    assert by_peer[DOWN_ID]["failed_step"] == "tcp"
    status, shown = await nodes.internal(nodes.cpo, "GET", f"/peers/emp/{DOWN_ID}")
    assert status == 200 and shown["probe"]["failed_step"] == "tcp"

    async def gauges() -> Any:
        metrics = await scrape(nodes.http, nodes.cpo.metrics_url("gateway"), nodes.cpo.monitoring_token)
        ok = metrics.value("oicp_peer_probe_success", peer=EMP_ID, role="emp", failed_step="")
        down = metrics.value("oicp_peer_probe_success", peer=DOWN_ID, role="emp", failed_step="tcp")
        return metrics if (ok, down) == (1.0, 0.0) else None

    metrics = await wait_until(gauges, timeout=10, what="probe gauges of both peers")
    for certificate in ("server", "client"):
        expiry = metrics.value(
            "oicp_peer_certificate_expiry_timestamp_seconds", peer=EMP_ID, role="emp", certificate=certificate
        )
        assert expiry is not None and expiry > time.time() + 86_400
    assert metrics.find("oicp_peer_certificate_expiry_timestamp_seconds", peer=DOWN_ID) == []
    for step in ("total", "dns", "tcp", "tls", "oicp"):
        assert metrics.value("oicp_peer_probe_duration_seconds", peer=EMP_ID, role="emp", step=step) is not None
    assert metrics.value("oicp_peer_probe_timestamp_seconds", peer=EMP_ID, role="emp") is not None


async def test_the_periodic_job_keeps_the_results_fresh(nodes: ProbePair) -> None:
    since = time.time()

    async def fresh() -> Any:
        _, results = await nodes.internal(nodes.emp, "GET", "/probes")
        return [r for r in results if r["peer_id"] == CPO_ID and r["started_at"] > since]

    first = (await wait_until(fresh, timeout=4 * INTERVAL + 5, what="a periodic probe of the CPO peer"))[0]
    assert first["ok"] is True, first
    since = first["started_at"]
    second = (await wait_until(fresh, timeout=4 * INTERVAL + 5, what="the next periodic probe"))[0]
    assert second["started_at"] - first["started_at"] >= INTERVAL * 0.9


async def test_the_command_line_probes_and_lists(nodes: ProbePair) -> None:
    endpoint = ["--url", nodes.cpo.internal_url, "--token", nodes.cpo.internal_token]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shared.cli", *endpoint, *args], cwd=REPO, capture_output=True, text=True
        )

    probed, listed = await asyncio.gather(
        asyncio.to_thread(cli, "peers", "probe", "emp", EMP_ID), asyncio.to_thread(cli, "probes")
    )
    assert probed.returncode == 0, probed.stderr
    assert json.loads(probed.stdout)["ok"] is True
    assert listed.returncode == 0, listed.stderr
    assert {r["peer_id"] for r in json.loads(listed.stdout)} == {EMP_ID, DOWN_ID}
    down = cli("peers", "probe", "emp", DOWN_ID)
    assert down.returncode == 1 and "tcp" in down.stderr
