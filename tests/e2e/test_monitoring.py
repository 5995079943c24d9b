"""The monitoring, live: a real Prometheus (the installed binary) scrapes a running CPO node and EMP node
— every process of both — with the jobs of deploy/prometheus/prometheus.yml and evaluates the real
alert rules, while a short scenario makes every metric exist and every alert condition true. Then
every dashboard panel's query and every alert's expression must return series, every target must be
up, and every metric of the contract must be known to Prometheus.

The scenario, and what it is for:

* EVSE status changes, pushed by the CPO node to the EMP node (delivery, propagation, handler metrics)
  and to a second EMP peer nobody listens for (``DOWN``: its lane fails — OicpPeerDown — and, since
  the background traffic keeps changing fresh EVSEs, its backlog grows — OicpDeliveryBacklogGrowing);
* a CDR to the EMP node (sent, received, a session unknown to both ledgers) and one to ``DOWN``, parked
  after ``cdr.max_attempts`` = 2 (OicpCdrsParked);
* an authorization routed to the EMP node (decisions on both sides); a remote start and a charging
  notification End without any CDR, with ``sessions.cdr_missing_after_seconds`` tiny
  (OicpSessionsWithoutCdr);
* a command for a foreign EVSE over AMQP, which the worker rejects to the dead-letter queue
  (OicpDeadLetters, oicp_dead_lettered_total kind rejected), and a status change whose handler keeps
  failing (a corrupted Redis key): requeued at every delivery (FastStream's non-acked statuses), then
  dead-lettered kind failed;
* a journal outage on the EMP node (its raw journal stream briefly of the wrong type): its answers
  are unaffected, the entries dropped (OicpJournalEntriesDropped);
* calls with an unknown token (017 — OicpHighErrorRate for "anonymous") and one pull over the peer's
  rate limit (429, oicp_rate_limited_total);
* peer probes every ``PROBE_INTERVAL`` on both nodes: ``DOWN`` fails at TCP (OicpPeerProbeFailing), and a
  third EMP peer of the CPO node (``TLS_ID``) is a bare TLS server whose certificate expires in two days
  (tests/support/certs.py — OicpPeerCertificateExpiring).

Last, a stopped worker: the node launcher (``shared.node``) restarts a dead child within a second, too
fast for an alert, so the test freezes the launcher (SIGSTOP; its other children keep running), stops
the EMP node's ``cdr`` worker gracefully (SIGTERM: its consumers are cancelled, its /metrics goes
away), checks OicpQueueWithoutConsumers and OicpTargetDown, and lets the launcher go on (SIGCONT) — it
restarts the worker before everything is stopped.

Alerts whose condition the test cannot make true without breaking what other tests share are listed in
ALLOWED_FALSE with the reason; for them the compared expression (without its threshold) must return
series instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.oicp.ids import normalize_id
from shared.oicp.operations import OPERATIONS_BY_NAME
from shared.stores.redis import KeySpace
from tests.support.cdr_bodies import full_cdr
from tests.support.cdrs import service_pids
from tests.support.certs import Authority
from tests.support.nodes import (
    AMQP_URL,
    POLL_INTERVAL,
    REDIS_URL,
    RUN_ID,
    NodeProcesses,
    NodeSpec,
    cleanup,
    free_port,
    wait_until,
)
from tests.support.prometheus import (
    HISTOGRAMS,
    NODE_SERVICES,
    PLAIN_METRICS,
    Expression,
    PrometheusServer,
    alert_expressions,
    alert_rules,
    dashboard_expressions,
    local_config,
    substitute,
    without_threshold,
)
from tests.support.responders import BusResponder, always
from tests.support.sessions import notification

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(240)]

CPO_ID, EMP_ID, DOWN_ID = "DE*MON", "DE-MON", "DE-MDX"
TLS_ID = "DE-MTL"  # an EMP peer that only completes TLS handshakes (probe.operation: none)
PROBE_INTERVAL = 2  # probes.interval_seconds: AuthorizeStop to the EMP node stays under its 50 a minute
EMP_CALLS_CPO, CPO_CALLS_EMP = "mon-emp-calls-cpo", "mon-cpo-calls-emp"
MONITORING_TOKEN = f"{RUN_ID}-monitoring-token"
PULL_LIMIT = 1  # PullEvseStatus per minute for the EMP peer: the second pull is refused with 429
TRAFFIC_INTERVAL = 0.5  # seconds between two rounds of background traffic
SERIES_TIMEOUT = 60  # seconds for every query to return series (scrapes and evaluations every second)
SCENARIO_TIMEOUT = 30

# Alerts the scenario does not make true, each with the reason. Keep this short: every other alert
# must actually be pending (its expression true) at the end of the scenario.
ALLOWED_FALSE = {
    # Redis and RabbitMQ are shared with every other test running on this machine: stopping them would
    # break those. The gateway's flags (oicp_*_up == 1) must be there.
    "OicpRedisDown": "cannot stop the shared Redis",
    "OicpRabbitMqDown": "cannot stop the shared RabbitMQ",
    # p99 above 60 s needs status changes waiting over a minute for a peer that then answers: longer
    # than the whole test may take. The quantile itself must be there.
    "OicpStatusPropagationSlow": "needs a minute-long delay",
    # journal entries waiting 5 minutes for the sealer: longer than the whole test may take. The
    # backlog's age itself must be there.
    "OicpJournalNotSealed": "needs entries unsealed for 5 minutes",
}
# Made true in the last step (a stopped worker), not while everything runs.
WORKER_STOPPED = ("OicpQueueWithoutConsumers", "OicpTargetDown")


class SharedTokenNode(NodeSpec):
    """A node whose monitoring token is the same as the other node's: a scrape job has one token, and
    the test scrapes both nodes with the compose file's jobs (one per service)."""

    @property
    def monitoring_token(self) -> str:
        return MONITORING_TOKEN


def evco(provider: str) -> str:
    return f"{provider}-C{uuid.uuid4().hex[:8].upper()}-X"


def fresh_evse() -> str:
    return f"{CPO_ID}*E{uuid.uuid4().hex[:10].upper()}"


@dataclass
class Monitored:
    cpo: NodeSpec
    emp: NodeSpec
    processes: NodeProcesses
    prometheus: PrometheusServer
    http: aiohttp.ClientSession
    traffic: asyncio.Task[None] | None = None

    async def command(self, node: NodeSpec, name: str, body: dict[str, Any], expect: int = 200) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {node.internal_token}"}
        async with self.http.post(f"{node.internal_url}/commands/{name}", json=body, headers=headers) as response:
            answer = await response.json()
            assert response.status == expect, (name, answer)
            return answer  # type: ignore[no-any-return]

    async def internal_get(self, node: NodeSpec, path: str) -> Any:
        headers = {"Authorization": f"Bearer {node.internal_token}"}
        async with self.http.get(node.internal_url + path, headers=headers) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def pull_status(self, token: str) -> int:
        """PullEvseStatus on the CPO node's OICP face as the caller of ``token``; the HTTP status."""
        path = OPERATIONS_BY_NAME["PullEvseStatus"].path.format(providerID=EMP_ID)
        headers = {"Authorization": f"Bearer {token}"}
        async with self.http.post(self.cpo.oicp_url + path, json={"ProviderID": EMP_ID}, headers=headers) as response:
            await response.read()
            return response.status

    async def set_status(self, evse_id: str, status: str = "Occupied") -> None:
        body = {"records": [{"EvseID": evse_id, "EvseStatus": status}]}
        await self.command(self.cpo, "cpo.evse.status.set", body, expect=202)


async def publish_foreign_command(node: NodeSpec) -> None:
    """A command the node can never carry out (an EVSE of another operator), over AMQP as an internal
    system would send it: the worker rejects it to the dead-letter queue."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(node.topology.commands.name)
        body = {
            "type": "cpo.evse.status.set",
            "node": "csms",
            "data": {"records": [{"EvseID": "DE*XXX*E1", "EvseStatus": "Available"}]},
        }
        await exchange.publish(
            aio_pika.Message(orjson.dumps(body), content_type="application/json", delivery_mode=2),
            routing_key="cpo.evse.status.set",
            mandatory=True,
        )


async def fail_a_handler(m: Monitored) -> None:
    """A command whose handler keeps failing: the CPO's own status hash is briefly a string (every
    write to it fails with WRONGTYPE), so a status change is requeued at each delivery (FastStream's
    non-acked statuses) and dead-lettered "failed" at the last; the hash is put back afterwards."""
    key = KeySpace(f"{RUN_ID}:{m.cpo.name}:").key("own", "evse-status", normalize_id(CPO_ID))
    saved = f"{key}:saved"
    client = aioredis.from_url(REDIS_URL)
    async with client:
        had = await client.exists(key)
        if had:
            await client.rename(key, saved)
        await client.set(key, "not a hash")
        try:
            await m.set_status(fresh_evse())

            async def failed() -> bool:
                letters = (await m.internal_get(m.cpo, "/dead-letters"))["messages"]
                return any(letter["kind"] == "failed" for letter in letters)

            await wait_until(failed, timeout=SCENARIO_TIMEOUT, what="the failing command dead-lettered")
        finally:
            await client.delete(key)
            if had:
                await client.rename(saved, key)


async def drop_journal_entries(m: Monitored) -> None:
    """A journal outage: the EMP node's raw journal stream is briefly a string (every journal write
    fails with WRONGTYPE), so the pushes it answers meanwhile are not journaled —
    oicp_journal_dropped_total, OicpJournalEntriesDropped; the answers themselves are unaffected."""
    key = KeySpace(f"{RUN_ID}:{m.emp.name}:").key("journal", "raw")
    client = aioredis.from_url(REDIS_URL)
    async with client:
        await client.delete(key)
        await client.set(key, "not a stream")
        try:

            async def dropped() -> bool:
                await m.set_status(fresh_evse())
                async with m.http.get(m.emp.metrics_url("gateway"), headers=m.emp.monitoring_headers) as response:
                    lines = (await response.text()).splitlines()
                prefix = 'oicp_journal_dropped_total{reason="redis"} '
                return any(float(line.removeprefix(prefix)) > 0 for line in lines if line.startswith(prefix))

            await wait_until(dropped, timeout=SCENARIO_TIMEOUT, interval=0.5, what="journal entries dropped")
        finally:
            await client.delete(key)


async def scenario(m: Monitored) -> None:
    # EVSE status to both EMP peers (the EMP node acknowledges, DOWN never answers)
    for _ in range(3):
        await m.set_status(fresh_evse())

    # an authorization the CPO node routes to the EMP node by the EvcoID's provider (the EMP does not
    # know the contract: NotAuthorized — a decision on both sides is what counts here)
    contract = {"PlugAndChargeIdentification": {"EvcoID": evco(EMP_ID)}}
    reply = await m.command(m.cpo, "cpo.authorize.start", {"EvseID": fresh_evse(), "Identification": contract})
    assert reply["answer"]["AuthorizationStatus"] in ("Authorized", "NotAuthorized"), reply

    # a remote start the charge point backend accepts, then the End notification: an ended session
    # without a CDR on both nodes
    evse = fresh_evse()
    async with BusResponder(m.cpo, ["cpo.backend.#"], always({"accepted": True})):
        start = {"EvseID": evse, "Identification": {"RemoteIdentification": {"EvcoID": evco(EMP_ID)}}}
        started = await m.command(m.emp, "emp.remote_start.request", start)
        assert started["ok"], started
    end = notification("End", started["session_id"], evse, operator_id=CPO_ID)
    ended = await m.command(m.cpo, "cpo.session.notify", {"notification": end})
    assert ended["ok"], ended

    # CDRs: one to the EMP node (delivered; neither ledger knows its session), one to DOWN (parked)
    delivered = full_cdr(evse_id=fresh_evse(), Identification={"RemoteIdentification": {"EvcoID": evco(EMP_ID)}})
    parked = full_cdr(evse_id=fresh_evse(), Identification={"RemoteIdentification": {"EvcoID": evco(DOWN_ID)}})
    for cdr in (delivered, parked):
        assert (await m.command(m.cpo, "cpo.cdr.submit", cdr))["ok"]

    # a poison command (dead letter), an unknown caller (017), a pull over the EMP peer's limit (429)
    await publish_foreign_command(m.cpo)
    await fail_a_handler(m)
    await drop_journal_entries(m)
    assert await m.pull_status("nobody-knows-this-token") == 200  # an OICP answer with 017
    statuses = [await m.pull_status(EMP_CALLS_CPO) for _ in range(PULL_LIMIT + 1)]
    assert statuses[-1] == 429, statuses

    async def cdrs_settled() -> bool:
        out = await m.internal_get(m.cpo, f"/cdrs/{delivered['SessionID']}")
        parked_now = await m.internal_get(m.cpo, "/cdrs/parked")
        return (out.get("out") or {}).get("state") == "delivered" and parked_now["total"] >= 1

    await wait_until(cdrs_settled, timeout=SCENARIO_TIMEOUT, what="one CDR delivered and one parked")


async def keep_busy(m: Monitored) -> None:
    """Traffic while the queries are checked: a fresh EVSE's status each round (DOWN's backlog keeps
    growing; propagation and delivery rates stay above zero), and an unknown caller (a steady error
    share for "anonymous"; a rate needs an increase between two scrapes)."""
    while True:
        await m.set_status(fresh_evse())
        await m.pull_status("nobody-knows-this-token")
        await asyncio.sleep(TRAFFIC_INTERVAL)


async def stop_traffic(m: Monitored) -> None:
    if m.traffic is not None:
        m.traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await m.traffic
        m.traffic = None


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def monitored(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Monitored]:
    directory: Path = tmp_path_factory.mktemp("monitoring")
    cpo = SharedTokenNode("mon-cpo", operator_ids=[CPO_ID])
    ca = Authority.create(directory / "ca")
    server = ca.issue("tls-peer", "tls-peer", server=True)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(server.cert, server.key)
    tls_port = free_port()

    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    tls_peer = await asyncio.start_server(close_at_once, "127.0.0.1", tls_port, ssl=server_tls)
    emp = SharedTokenNode("mon-emp", provider_ids=[EMP_ID])
    cpo.peers = [
        {
            "id": EMP_ID,
            "role": "emp",
            "base_url": emp.oicp_url,
            "inbound_token": EMP_CALLS_CPO,
            "outbound_token": CPO_CALLS_EMP,
            "push": ["PushEvseStatus"],
            "rate_limits": {"PullEvseStatus": PULL_LIMIT},
        },
        {
            "id": DOWN_ID,
            "role": "emp",
            "base_url": f"http://127.0.0.1:{free_port()}",  # nobody listens
            "inbound_token": "mon-down-calls-cpo",
            "outbound_token": "mon-cpo-calls-down",
            "push": ["PushEvseStatus"],
            "timeout_seconds": 1,
        },
        {
            "id": TLS_ID,
            "role": "emp",
            "base_url": f"https://127.0.0.1:{tls_port}",
            "inbound_token": "mon-tls-calls-cpo",
            "authorization": False,  # no RFID broadcasts to it
            "probe": {"operation": "none"},
            "tls": {"ca_file": str(ca.cert)},
        },
    ]
    emp.peers = [
        {
            "id": CPO_ID,
            "role": "cpo",
            "base_url": cpo.oicp_url,
            "inbound_token": CPO_CALLS_EMP,
            "outbound_token": EMP_CALLS_CPO,
        }
    ]
    sessions = {"cdr_missing_after_seconds": 0.5, "check_interval_seconds": 0.3}
    cpo.extra = {
        "rate_limits": {"enabled": True},  # Hubject's defaults, and the EMP peer's own PullEvseStatus limit
        "cdr": {"max_attempts": 2, "backoff_initial_seconds": 0.2, "backoff_max_seconds": 0.5},
        "sessions": sessions,
        "probes": {"enabled": True, "interval_seconds": PROBE_INTERVAL},
    }
    emp.extra = {"sessions": sessions, "probes": {"enabled": True, "interval_seconds": PROBE_INTERVAL}}

    token_file = directory / "monitoring_token"
    token_file.write_text(MONITORING_TOKEN + "\n")
    prometheus = PrometheusServer(directory)
    prometheus.write_config(local_config([cpo, emp], token_file, prometheus.listen))
    processes = NodeProcesses([cpo, emp], directory)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    m = Monitored(cpo, emp, processes, prometheus, http)
    try:
        await asyncio.gather(processes.start(), prometheus.start())
        # every target scraped once before anything happens: the lanes' backlogs start at 0 in the TSDB
        await wait_until(lambda: all_targets_up(prometheus), timeout=SCENARIO_TIMEOUT, what="every target up")
        await scenario(m)
        m.traffic = asyncio.create_task(keep_busy(m))
        yield m
    finally:
        await stop_traffic(m)
        if processes.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(processes.process.pid, signal.SIGCONT)  # in case the last test froze it
        processes.stop()
        await prometheus.stop()
        await http.close()
        tls_peer.close()
        await cleanup([cpo, emp])


async def all_targets_up(prometheus: PrometheusServer) -> bool:
    targets = (await prometheus.api("targets", state="active"))["activeTargets"]
    return len(targets) == 2 * len(NODE_SERVICES) + 1 and all(t["health"] == "up" for t in targets)


async def without_series(prometheus: PrometheusServer, expressions: list[Expression]) -> list[Expression]:
    return [e for e in expressions if not await prometheus.query(e.expr)]


async def wait_for_series(prometheus: PrometheusServer, expressions: list[Expression], timeout: float) -> None:
    """Poll until every expression returns at least one series; fail naming those that never did."""
    deadline = time.monotonic() + timeout
    missing = expressions
    while missing := await without_series(prometheus, missing):
        if time.monotonic() > deadline:
            lines = "\n".join(f"  {e.origin}: {e.expr}" for e in missing)
            pytest.fail(f"no series after {timeout}s for:\n{lines}")
        await asyncio.sleep(POLL_INTERVAL)


async def rule_states(prometheus: PrometheusServer) -> dict[str, dict[str, Any]]:
    groups = (await prometheus.api("rules", type="alert"))["groups"]
    return {rule["name"]: rule for group in groups for rule in group["rules"]}


async def test_every_process_of_both_nodes_is_scraped_and_up(monitored: Monitored) -> None:
    targets = (await monitored.prometheus.api("targets", state="active"))["activeTargets"]
    seen = {(t["labels"].get("node"), t["labels"]["service"], t["labels"]["job"]) for t in targets}
    for node in (monitored.cpo, monitored.emp):
        for service in NODE_SERVICES:
            assert (node.name, service, f"oicp-{service.replace('_', '-')}") in seen, (node.name, service)
    down = [(t["scrapeUrl"], t["lastError"]) for t in targets if t["health"] != "up"]
    assert down == []


async def test_every_dashboard_query_returns_series(monitored: Monitored) -> None:
    expressions = [Expression(e.origin, substitute(e.expr)) for e in dashboard_expressions()]
    await wait_for_series(monitored.prometheus, expressions, SERIES_TIMEOUT)


async def test_every_alert_condition_is_true_and_its_rule_pending(monitored: Monitored) -> None:
    expected_true = [
        e for e in alert_expressions() if e.origin.removeprefix("alert ") not in {*ALLOWED_FALSE, *WORKER_STOPPED}
    ]
    assert {rule["alert"] for rule in alert_rules()} >= {*ALLOWED_FALSE, *WORKER_STOPPED}, "stale allow-list"
    compared = [
        Expression(f"{e.origin} (without its threshold)", without_threshold(e.expr))
        for e in alert_expressions()
        if e.origin.removeprefix("alert ") in {*ALLOWED_FALSE, *WORKER_STOPPED}
    ]
    await wait_for_series(monitored.prometheus, expected_true + compared, SERIES_TIMEOUT)

    # Prometheus loaded the real rule file and evaluates it: no rule in error; each alert whose
    # condition is true is pending (every rule has a `for:` longer than this test) or firing, and about
    # what the scenario did, nothing else — the healthy EMP node's lanes are not "down", nor is DOWN's
    # CDR lane once its CDR is parked (that is OicpCdrsParked's). Polled: a lane's state reaches the
    # rules one scrape and one evaluation after it changed.
    expected_alerts: dict[str, tuple[tuple[str, ...], set[tuple[str, ...]]]] = {
        "OicpPeerDown": (("peer", "operation"), {(DOWN_ID, "PushEvseStatus")}),
        "OicpDeliveryBacklogGrowing": (("peer", "operation"), {(DOWN_ID, "PushEvseStatus")}),
        "OicpCdrsParked": (("peer",), {(DOWN_ID,)}),
        "OicpPeerProbeFailing": (("peer", "failed_step"), {(DOWN_ID, "tcp")}),
        "OicpPeerCertificateExpiring": (("peer", "certificate"), {(TLS_ID, "server")}),
        "OicpHighErrorRate": (("face", "peer"), {("cpo", "anonymous")}),
        "OicpDeadLetters": (("queue",), {(monitored.cpo.topology.dead_letters.name,)}),
    }
    wanted = [e.origin.removeprefix("alert ") for e in expected_true]
    seen: dict[str, Any] = {}

    async def as_expected() -> bool:
        rules = await rule_states(monitored.prometheus)
        seen.clear()
        seen.update(
            {
                name: {
                    "state": r["state"],
                    "health": r["health"],
                    "error": r.get("lastError"),
                    "alerts": [a["labels"] for a in r["alerts"]],
                }
                for name, r in rules.items()
            }
        )
        if set(rules) != {rule["alert"] for rule in alert_rules()}:
            return False
        if any(r["health"] != "ok" for r in rules.values()):
            return False
        if any(rules[name]["state"] not in ("pending", "firing") for name in wanted):
            return False
        if any(rules[name]["state"] != "inactive" for name in ALLOWED_FALSE):
            return False
        return all(
            {tuple(a["labels"][label] for label in labels) for a in rules[name]["alerts"]} == alerts
            for name, (labels, alerts) in expected_alerts.items()
        )

    try:
        await wait_until(as_expected, timeout=SERIES_TIMEOUT, interval=POLL_INTERVAL, what="the alerts as expected")
    except AssertionError as exc:
        pytest.fail(f"{exc}; the rules as last seen:\n" + "\n".join(f"  {k}: {v}" for k, v in seen.items()))


async def test_every_metric_of_the_contract_is_known_to_prometheus(monitored: Monitored) -> None:
    """Declared by some scraped process (HELP/TYPE), even a counter without samples yet (e.g.
    FastStream's exceptions): what the dashboards and alerts name exists."""
    metadata = await monitored.prometheus.api("metadata")
    assert sorted((PLAIN_METRICS - {"up"} | HISTOGRAMS) - set(metadata)) == []


def worker_pid(processes: NodeProcesses, node: NodeSpec, service: str) -> int:
    """The PID of one node's worker among the launcher's children (told apart by their config file)."""
    config = str(processes.configs[processes.specs.index(node)]).encode()
    for pid in service_pids(processes, service):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if b"OICP_P2P_CONFIG=" + config in environ:
            return pid
    raise AssertionError(f"no {service} process of {node.name}")


async def test_a_stopped_worker_leaves_its_queues_without_consumers(monitored: Monitored) -> None:
    """Last (it takes a worker down): the launcher frozen so that it does not restart the worker at
    once, the EMP node's cdr worker stopped; its queues have no consumer, its target is down."""
    await stop_traffic(monitored)
    processes = monitored.processes
    assert processes.process is not None
    launcher = processes.process.pid
    os.kill(launcher, signal.SIGSTOP)
    try:
        os.kill(worker_pid(processes, monitored.emp, "cdr"), signal.SIGTERM)
        stopped = [e for e in alert_expressions() if e.origin.removeprefix("alert ") in WORKER_STOPPED]
        await wait_for_series(monitored.prometheus, stopped, SERIES_TIMEOUT)
        queues = await monitored.prometheus.query(
            next(e.expr for e in stopped if e.origin == "alert OicpQueueWithoutConsumers")
        )
        cdr_queues = monitored.emp.prefix + "cdr."
        assert queues and all(q["metric"]["queue"].startswith(cdr_queues) for q in queues), queues
        down = await monitored.prometheus.query(next(e.expr for e in stopped if e.origin == "alert OicpTargetDown"))
        assert [(t["metric"]["node"], t["metric"]["service"]) for t in down] == [(monitored.emp.name, "cdr")]
    finally:
        os.kill(launcher, signal.SIGCONT)
