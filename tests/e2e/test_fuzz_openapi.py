"""Hostile input from the API descriptions (issue #9): schemathesis generates requests — valid and
invalid, from Hubject's two OpenAPI files (``../shared/oicp/``) and from the gateway's own documents
(``docs/openapi/``) — and sends them to live nodes over HTTP. Whatever arrives:

* no answer is a 5xx, and the node stays up (its readiness probe answers afterwards);
* every answer on the OICP port is an OICP body: the operation's answer or an eRoamingAcknowledgement
  (a refusal), as JSON;
* every answer of the internal API is JSON (``/metrics``: Prometheus text).

Hubject's CPO file describes what a CPO calls at the hub, which the EMP node serves (called with its
CPO peer's token), and the EMP file what an EMP calls, which the CPO node serves. The nodes are this
module's own, so what the generated requests store does not reach other tests. ``OICP_P2P_FUZZ_EXAMPLES``
sets the examples per operation (default 15; ``make soak`` runs 300).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from pydantic import ValidationError

from shared.oicp import Acknowledgement
from shared.oicp.operations import OPERATIONS, Operation
from tests.support.nodes import REPO, NodeProcesses, NodeSpec, cleanup

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

OICP_FILES = REPO / ".." / "shared" / "oicp"
OWN_DOCUMENTS = REPO / "docs" / "openapi"
EXAMPLES = int(os.environ.get("OICP_P2P_FUZZ_EXAMPLES", "15"))
CPO_ID, EMP_ID = "DE*FZC", "DE-FZE"
EMP_TOKEN, CPO_TOKEN = "fuzz-emp-calls-cpo", "fuzz-cpo-calls-emp"  # each peer's inbound token


class Nodes:
    def __init__(self, cpo: NodeSpec, emp: NodeSpec) -> None:
        self.cpo, self.emp = cpo, emp


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def nodes(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Nodes]:
    cpo = NodeSpec("fuzzcpo", operator_ids=[CPO_ID])
    emp = NodeSpec("fuzzemp", provider_ids=[EMP_ID])
    cpo.peers = [
        {"id": EMP_ID, "role": "emp", "base_url": emp.oicp_url, "inbound_token": EMP_TOKEN, "push": []},
    ]
    emp.peers = [
        {"id": CPO_ID, "role": "cpo", "base_url": cpo.oicp_url, "inbound_token": CPO_TOKEN},
    ]
    processes = NodeProcesses([cpo, emp], tmp_path_factory.mktemp("fuzz"))
    try:
        await processes.start()
        yield Nodes(cpo, emp)
    finally:
        processes.stop()
        await cleanup([cpo, emp])


def oicp_operation(method: str, path: str) -> Operation | None:
    """Our catalogue entry of a Hubject path (None: a path no P2P node serves)."""
    for operation in OPERATIONS:
        if method.upper() == "POST" and path in (operation.openapi_path, operation.path):
            return operation
    return None


def content_type(response: schemathesis.Response) -> str:
    value = response.headers.get("content-type") or [""]  # schemathesis: a list per header
    return value[0] if isinstance(value, list) else value


def check_oicp_answer(response: schemathesis.Response, method: str, path: str) -> None:
    where = f"{method} {path} → {response.status_code}"
    assert response.status_code < 500, f"{where}: {response.text[:500]}"
    assert content_type(response).startswith("application/json"), where
    body = json.loads(response.content)
    operation = oicp_operation(method, path)
    models = [operation.response, Acknowledgement] if operation else [Acknowledgement]
    for model in models:
        try:
            model.model_validate(body)
            return
        except ValidationError:
            continue
    raise AssertionError(f"{where}: not an OICP answer: {response.text[:500]}")


def check_json_answer(response: schemathesis.Response, method: str, path: str) -> None:
    where = f"{method} {path} → {response.status_code}"
    assert response.status_code < 500, f"{where}: {response.text[:500]}"
    kind = content_type(response)
    if kind.startswith("application/json"):
        json.loads(response.content)  # says JSON, is JSON
    else:  # /metrics is the Prometheus text format; nothing else answers in another type
        assert path == "/metrics" and kind.startswith("text/plain"), f"{where}: {kind}"


def fuzz(
    schema_path: Path, base_url: str, headers: dict[str, str], check: Any, skip: tuple[str, ...] = ()
) -> list[str]:
    """Run every operation of a schema for EXAMPLES examples; the operations exercised."""
    schema = schemathesis.openapi.from_path(schema_path)
    exercised = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith(skip):
            continue
        exercised.append(f"{operation.method.upper()} {operation.path}")

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,  # the same requests every run: a failure can be rerun
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def send(case: schemathesis.Case) -> None:
            response = case.call(base_url=base_url, headers=headers, timeout=30)
            check(response, case.method, case.path)

        send()
    return exercised


async def assert_ready(node: NodeSpec) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{node.internal_url}/readyz", headers=node.monitoring_headers) as response,
    ):
        assert response.status == 200, f"{node.name} is not ready after the fuzzing"


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("document", "served_by"),
    [("oicp-2.3-cpo-hub.yaml", "emp"), ("oicp-2.3-emp-hub.yaml", "cpo")],
    ids=["cpo-api-at-the-emp-node", "emp-api-at-the-cpo-node"],
)
async def test_hubject_api(nodes: Nodes, document: str, served_by: str) -> None:
    """What a CPO calls at the hub, the EMP node serves (with its CPO peer's token), and the reverse."""
    node, token = (nodes.emp, CPO_TOKEN) if served_by == "emp" else (nodes.cpo, EMP_TOKEN)
    exercised = await asyncio.to_thread(
        fuzz,
        OICP_FILES / document,
        node.oicp_url + "/api/oicp",
        {"Authorization": f"Bearer {token}"},
        check_oicp_answer,
    )
    assert len(exercised) >= 8, exercised
    await assert_ready(node)


@pytest.mark.timeout(900)
async def test_the_gateways_own_oicp_document(nodes: Nodes) -> None:
    """docs/openapi/oicp.json: every path of both faces, including our split PullEvseStatus paths."""
    for node, token in ((nodes.cpo, EMP_TOKEN), (nodes.emp, CPO_TOKEN)):
        await asyncio.to_thread(
            fuzz, OWN_DOCUMENTS / "oicp.json", node.oicp_url, {"Authorization": f"Bearer {token}"}, check_oicp_answer
        )
        await assert_ready(node)


@pytest.mark.timeout(900)
async def test_the_gateways_internal_api_document(nodes: Nodes) -> None:
    """docs/openapi/internal.json with the node's own token: commands, peers, queries. Peer changes
    are left out (a generated DELETE would take the fuzzing partner away mid-run)."""
    node = nodes.cpo
    await asyncio.to_thread(
        fuzz,
        OWN_DOCUMENTS / "internal.json",
        node.internal_url,
        {"Authorization": f"Bearer {node.internal_token}"},
        check_json_answer,
        ("/peers",),
    )
    await assert_ready(node)
