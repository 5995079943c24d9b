"""Every process of a real node serves its metrics, and the gateway reports the node-wide state (lanes,
CDR outbox, queues, Redis) as it is in Redis and RabbitMQ — what Prometheus scrapes and the dashboards
and alerts read (issue #7)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from shared.settings import WORKER_SERVICES
from tests.support.metrics import Scrape, scrape
from tests.support.nodes import HttpSink, NodeProcesses, NodeSpec, cleanup, free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

CPO_ID = "DE*MET"
SINK = "DE-MSK"  # an EMP peer that acknowledges every push
DOWN = "DE-MDN"  # an EMP peer nobody listens for
STATUS = "PushEvseStatus"
DELIVERY_TIMEOUT = 30


@dataclass
class MonitoredNode:
    spec: NodeSpec
    sink: HttpSink
    processes: NodeProcesses

    async def gateway(self, http: aiohttp.ClientSession) -> Scrape:
        return await scrape(http, self.spec.metrics_url("gateway"), self.spec.monitoring_token)

    async def worker(self, http: aiohttp.ClientSession, service: str) -> Scrape:
        return await scrape(http, self.spec.metrics_url(service), self.spec.monitoring_token)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def node(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MonitoredNode]:
    sink = HttpSink()
    await sink.start()
    spec = NodeSpec("metrics-cpo", operator_ids=[CPO_ID])
    push = {"outbound_token": "to-peer", "push": [STATUS]}
    spec.peers = [
        {"id": SINK, "role": "emp", "base_url": sink.url, **push},
        {"id": DOWN, "role": "emp", "base_url": f"http://127.0.0.1:{free_port()}", **push},
    ]
    directory: Path = tmp_path_factory.mktemp("metrics")
    processes = NodeProcesses([spec], directory)
    try:
        await processes.start()
        yield MonitoredNode(spec, sink, processes)
    finally:
        processes.stop()
        await sink.stop()
        await cleanup([spec])


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_every_worker_serves_healthz_openly_and_metrics_only_with_a_token(
    node: MonitoredNode, http: aiohttp.ClientSession
) -> None:
    for service in WORKER_SERVICES:
        port = node.spec.metrics_ports[service]
        async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200 and (await response.json())["service"] == service
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": node.spec.monitoring_token}):
            async with http.get(node.spec.metrics_url(service), headers=headers) as response:
                assert response.status == 401, (service, headers)
        # the internal token works too (like on the gateway), the monitoring token is the one to hand out
        assert (await scrape(http, node.spec.metrics_url(service), node.spec.internal_token)).samples
        assert (await node.worker(http, service)).samples


async def test_a_status_change_shows_in_delivery_propagation_and_handler_metrics(
    node: MonitoredNode, http: aiohttp.ClientSession
) -> None:
    spec = node.spec
    async with http.post(
        f"{spec.internal_url}/commands/cpo.evse.status.set",
        json={"records": [{"EvseID": f"{CPO_ID}*E1", "EvseStatus": "Occupied"}]},
        headers={"Authorization": f"Bearer {spec.internal_token}"},
    ) as response:
        assert response.status == 202, await response.text()

    async def delivered_and_failed() -> Scrape | None:
        worker = await node.worker(http, "evse_push")
        sent = worker.total("oicp_evse_status_propagation_seconds_count", peer=SINK)
        failed = worker.total("oicp_peer_delivery_requests_total", peer=DOWN, operation=STATUS, outcome="connect")
        return worker if sent >= 1 and failed >= 1 else None

    worker = await wait_until(delivered_and_failed, timeout=DELIVERY_TIMEOUT, what="pushed to the sink, failed to DOWN")
    assert worker.total("oicp_peer_delivery_requests_total", peer=SINK, operation=STATUS, outcome="success") >= 1
    assert worker.total("oicp_peer_delivery_duration_seconds_count", peer=SINK, operation=STATUS) >= 1
    # FastStream's per-handler metrics (RabbitPrometheusMiddleware), named after the service
    assert worker.total("faststream_received_messages_total", app_name="evse_push") >= 1
    assert worker.total("faststream_received_processed_messages_total", app_name="evse_push", status="acked") >= 1
    # the gateway counts the internal command's publish (its broker has the middleware too)
    gateway = await node.gateway(http)
    assert gateway.total("faststream_published_messages_total", app_name="gateway") >= 1


async def test_the_gateway_reports_the_lanes_as_they_are_in_redis(
    node: MonitoredNode, http: aiohttp.ClientSession
) -> None:
    async def down_lane_failing() -> Scrape | None:
        gateway = await node.gateway(http)
        failing = gateway.value("oicp_peer_lane_state", peer=DOWN, operation=STATUS, state="failing")
        return gateway if failing == 1 else None

    gateway = await wait_until(down_lane_failing, timeout=DELIVERY_TIMEOUT, what="the DOWN lane failing")
    assert gateway.value("oicp_peer_lane_state", peer=DOWN, operation=STATUS, state="ok") == 0
    assert (gateway.value("oicp_peer_consecutive_failures", peer=DOWN, operation=STATUS) or 0) >= 1
    assert (gateway.value("oicp_peer_delivery_backlog", peer=DOWN, operation=STATUS) or 0) >= 1
    assert gateway.value("oicp_peer_last_success_timestamp_seconds", peer=DOWN, operation=STATUS) is None
    # the sink's lane: ok, nothing waiting, a last success
    assert gateway.value("oicp_peer_lane_state", peer=SINK, operation=STATUS, state="ok") == 1
    assert gateway.value("oicp_peer_delivery_backlog", peer=SINK, operation=STATUS) == 0
    assert (gateway.value("oicp_peer_last_success_timestamp_seconds", peer=SINK, operation=STATUS) or 0) > 0
    # every EMP peer has a CDR lane and an outbox count
    for peer in (SINK, DOWN):
        assert gateway.value("oicp_peer_lane_state", peer=peer, operation="ChargeDetailRecord", state="ok") == 1
        assert gateway.value("oicp_cdrs_pending", peer=peer) == 0
        assert gateway.value("oicp_cdrs_parked", peer=peer) == 0
    assert gateway.value("oicp_sessions_without_cdr") == 0

    # a peer switched off has no lanes in the next scrape (no stale series for the dashboards); its CDR
    # outbox is still counted (what it holds still needs someone's attention)
    async with http.patch(
        f"{node.spec.internal_url}/peers/emp/{DOWN}",
        json={"enabled": False},
        headers={"Authorization": f"Bearer {node.spec.internal_token}"},
    ) as response:
        assert response.status == 200, await response.text()
    after = await node.gateway(http)
    assert not after.find("oicp_peer_lane_state", peer=DOWN) and not after.find("oicp_peer_delivery_backlog", peer=DOWN)
    assert after.value("oicp_cdrs_pending", peer=DOWN) == 0
    assert after.find("oicp_peer_lane_state", peer=SINK)


async def test_the_gateway_reports_every_queue_with_its_consumers_and_the_stores_up(
    node: MonitoredNode, http: aiohttp.ClientSession
) -> None:
    gateway = await node.gateway(http)
    topology = node.spec.topology
    for name in topology.queue_names():
        dead_letters = name == topology.dead_letters.name
        kind = "dead_letter" if dead_letters else "work"
        assert gateway.value("oicp_queue_messages", queue=name, kind=kind) is not None, name
        # one process per worker service: exactly one consumer per work queue, none on the dead letters
        assert gateway.value("oicp_queue_consumers", queue=name, kind=kind) == (0 if dead_letters else 1), name
    assert gateway.value("oicp_redis_up") == 1 and gateway.value("oicp_rabbitmq_up") == 1
