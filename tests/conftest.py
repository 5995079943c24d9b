"""Shared fixtures. Tests that prove flows use the real RabbitMQ and Redis on 127.0.0.1 (started by
`make test` where installed); every run uses its own name prefix (tests.support.nodes.RUN_ID)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.nodes import HttpSink, NodeProcesses, NodeSpec, cleanup

CPO_ID = "DE*GEF"
EMP_ID = "DE-GDF"
SINK_ID = "DE-SNK"
EMP_CALLS_CPO = "emp-calls-cpo-token"
CPO_CALLS_EMP = "cpo-calls-emp-token"
SINK_CALLS_CPO = "sink-calls-cpo-token"


def _reachable(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session", autouse=True)
def _services_running() -> None:
    missing = [name for name, port in (("RabbitMQ", 5672), ("Redis", 6379)) if not _reachable(port)]
    if missing:
        pytest.exit(
            f"{' and '.join(missing)} not reachable on 127.0.0.1: run the tests with `make test`, "
            "which starts them where installed",
            returncode=2,
        )


class Pair:
    """A CPO node and an EMP node that are each other's peers, plus a plain HTTP sink EMP peer."""

    def __init__(self, cpo: NodeSpec, emp: NodeSpec, sink: HttpSink, processes: NodeProcesses) -> None:
        self.cpo, self.emp, self.sink, self.processes = cpo, emp, sink, processes


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pair(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pair]:
    sink = HttpSink()
    await sink.start()
    cpo = NodeSpec("cpo", operator_ids=[CPO_ID])
    emp = NodeSpec("emp", provider_ids=[EMP_ID])
    cpo.peers = [
        {
            "id": EMP_ID,
            "role": "emp",
            "base_url": emp.oicp_url,
            "inbound_token": EMP_CALLS_CPO,
            "outbound_token": CPO_CALLS_EMP,
            "push": ["PushEvseStatus", "PushEvseData", "PushPricingProductData", "PushEVSEPricing"],
        },
        {
            "id": SINK_ID,
            "role": "emp",
            "base_url": sink.url,
            "inbound_token": SINK_CALLS_CPO,
            "outbound_token": "cpo-calls-sink-token",
            "push": ["PushEvseStatus"],
        },
    ]
    emp.peers = [
        {
            "id": CPO_ID,
            "role": "cpo",
            "base_url": cpo.oicp_url,
            "inbound_token": CPO_CALLS_EMP,
            "outbound_token": EMP_CALLS_CPO,
            # the CPO node authorizes offline with the EMP node's tokens (tests/e2e/test_authorization.py)
            "push": ["PushAuthenticationData"],
        },
    ]
    directory: Path = tmp_path_factory.mktemp("pair")
    processes = NodeProcesses([cpo, emp], directory)
    try:
        await processes.start()
        yield Pair(cpo, emp, sink, processes)
    finally:
        processes.stop()
        await sink.stop()
        await cleanup([cpo, emp])
