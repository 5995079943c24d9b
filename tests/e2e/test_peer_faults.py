"""EVSE status fan-out from a real CPO node to six EMP peers (issue #9): one healthy, one down (nothing
listens on its port), one that never answers within its timeout, one answering HTTP 500, one answering
HTTP 200 with bodies that are no OICP acknowledgement, and one resetting every connection (RST).

What is proven, with a stream of status changes running: the healthy peer gets every change in order
per EVSE (coalesced at most: latest wins) and promptly, while the faulty lanes fail and retry on their
own; every failure is visible (``GET /delivery``, the worker's and the gateway's metrics, the
``peer.delivery.failed`` events) and classified by kind; no failed answer counts as accepted (last
success, the lane's ``known`` set and the propagation histogram stay put); the node stays ready. Once
every faulty peer is healed (and the down one started), every peer holds the latest status of every
EVSE: the healed ones through retries of their coalesced outbox (``insert`` for the EVSEs they never
acknowledged, ``update`` for the others; never a conflict at their strict sinks), the one that was never
reached through its first ``fullLoad``."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.oicp.ids import normalize_id
from shared.stores.delivery import DeliveryStore
from shared.stores.redis import KeySpace
from tests.support.events import EventTap
from tests.support.faulty_peers import Fault, FaultyPeer
from tests.support.metrics import Scrape, scrape
from tests.support.nodes import REDIS_URL, RUN_ID, NodeProcesses, NodeSpec, cleanup, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

OPERATOR = "DE*PFT"
EVSES = [f"DE*PFT*E{n:04d}" for n in range(40)]
NEW_EVSES = [f"DE*PFT*E{n:04d}" for n in range(40, 46)]  # first set while the peers are faulty
STATUSES = ["Available", "Occupied", "Reserved", "OutOfService"]
STATUS = "PushEvseStatus"
HEALTHY, DOWN, HANG, HTTP_500, GARBAGE, RESET = "DE-PHY", "DE-PDN", "DE-PHG", "DE-P5X", "DE-PGB", "DE-PRS"
FAULTS = {HANG: Fault.HANG, HTTP_500: Fault.HTTP_500, GARBAGE: Fault.GARBAGE, RESET: Fault.RESET}
FAULTY = [DOWN, *FAULTS]
#: how each faulty peer's failures are classified (PeerCallError.kind: the metric's outcome, the error's prefix)
KIND = {DOWN: "connect", HANG: "timeout", HTTP_500: "http", GARBAGE: "invalid_response", RESET: "connect"}
HANG_TIMEOUT_SECONDS = 3.0  # the hanging peer's timeout_seconds
BACKOFF_MAX_SECONDS = 1.0
BATCH_SIZE = 25
ROUNDS = 100  # status commands of the stream, CHANGES_PER_ROUND records each
CHANGES_PER_ROUND = 4
NEW_EVSES_AT_ROUND = 30
PAUSE = 0.03  # between two status commands of the stream
DEADLINE = 60  # generous bound of every wait (they usually take well under a second)


class Scenario:
    """The node, its peers, and what the test did to them: the sent history of every EVSE."""

    def __init__(self, node: NodeSpec, peers: dict[str, FaultyPeer], processes: NodeProcesses) -> None:
        self.node, self.peers, self.processes = node, peers, processes
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {node.internal_token}"})
        self.redis = aioredis.from_url(REDIS_URL)
        self.store = DeliveryStore(self.redis, KeySpace(f"{RUN_ID}:{node.name}:"))
        self.statuses: dict[str, str] = {}
        self.history: dict[str, list[tuple[str, float]]] = defaultdict(list)  # EvseID → (status, sent at)
        self.readiness: list[tuple[str, int]] = []
        self.faulted_at = 0.0
        self.before: dict[str, dict[str, Any]] = {}  # the lanes just before the faults
        self.worker_before: Scrape | None = None
        self.applied_before: dict[str, int] = {}  # requests each peer had applied before the faults
        self.failure_events: EventTap | None = None
        self._faulted: asyncio.Task[None] | None = None

    async def close(self) -> None:
        await self.http.close()
        await self.redis.aclose()

    # ---- what the test does to the node ----------------------------------------------------------

    async def set_statuses(self, records: list[tuple[str, str]]) -> None:
        now = time.time()
        for evse, status in records:
            self.statuses[evse] = status
            self.history[evse].append((status, now))
        body = {"records": [{"EvseID": e, "EvseStatus": s} for e, s in records]}
        async with self.http.post(f"{self.node.internal_url}/commands/cpo.evse.status.set", json=body) as response:
            assert response.status in (200, 202), await response.text()

    async def change_some(self, rng: random.Random, evses: list[str]) -> None:
        changes = []
        for evse in rng.sample(evses, CHANGES_PER_ROUND):
            changes.append((evse, rng.choice([s for s in STATUSES if s != self.statuses[evse]])))
        await self.set_statuses(changes)

    # ---- what the test reads from the node ---------------------------------------------------------

    async def lanes(self) -> dict[str, dict[str, Any]]:
        """Peer id → its PushEvseStatus lane as ``GET /delivery`` shows it."""
        async with self.http.get(f"{self.node.internal_url}/delivery") as response:
            assert response.status == 200, await response.text()
            return {lane["peer_id"]: lane for lane in await response.json() if lane["operation"] == STATUS}

    async def known(self, peer_id: str) -> set[str]:
        """The EVSEs the node has recorded the peer as holding (acknowledged)."""
        return await self.store.known_all(normalize_id(peer_id), STATUS)

    async def worker_metrics(self) -> Scrape:
        return await scrape(self.http, self.node.metrics_url("evse_push"), self.node.monitoring_token)

    async def gateway_metrics(self) -> Scrape:
        return await scrape(self.http, self.node.metrics_url("gateway"), self.node.monitoring_token)

    async def probe_readiness(self) -> None:
        """The gateway's /readyz and the evse_push worker's /healthz, as the probes see them."""
        async with self.http.get(f"{self.node.internal_url}/readyz", headers=self.node.monitoring_headers) as r:
            self.readiness.append(("gateway /readyz", r.status))
        async with self.http.get(f"http://127.0.0.1:{self.node.metrics_ports['evse_push']}/healthz") as r:
            self.readiness.append(("evse_push /healthz", r.status))

    # ---- the faulty phase, run once for the module's tests -------------------------------------------

    async def faulted(self) -> None:
        """Sync the started peers, make every faulty peer fail and stream changes; once."""
        if self._faulted is None:
            self._faulted = asyncio.ensure_future(self._run_faulted_phase())
        await self._faulted

    async def _run_faulted_phase(self) -> None:
        peers = self.peers
        await self.set_statuses([(evse, "Available") for evse in EVSES])
        started = [p for name, p in peers.items() if name != DOWN]
        await wait_until(
            lambda: all(p.statuses == self.statuses for p in started), timeout=DEADLINE, what="initial sync"
        )
        # The lanes settle: the last acknowledgement is recorded after the peer applied it.
        await wait_until(self._lanes_idle(started), timeout=DEADLINE, what="lanes idle after the initial sync")
        self.before = await self.lanes()
        self.worker_before = await self.worker_metrics()
        self.applied_before = {name: len(p.requests) for name, p in peers.items()}

        self.faulted_at = time.time()
        for name, fault in FAULTS.items():
            peers[name].fault = fault
        rng = random.Random(9)
        pool = list(EVSES)
        for round_ in range(ROUNDS):
            if round_ == NEW_EVSES_AT_ROUND:
                await self.set_statuses([(evse, "Available") for evse in NEW_EVSES])
                pool += NEW_EVSES
            else:
                await self.change_some(rng, pool)
            if round_ % 20 == 0:
                await self.probe_readiness()
            await asyncio.sleep(PAUSE)
        await self.probe_readiness()

        healthy = peers[HEALTHY]
        await wait_until(lambda: healthy.statuses == self.statuses, timeout=DEADLINE, what="the healthy peer")
        assert all(peers[name].fault is fault for name, fault in FAULTS.items()) and peers[DOWN]._runner is None

        async def every_faulty_lane_retried() -> bool:
            lanes = await self.lanes()
            # (the down peer has been failing since the node started: two more since the faults began)
            return all(
                lanes[name]["consecutive_failures"] >= self.before[name]["consecutive_failures"] + 2 for name in FAULTY
            )

        await wait_until(every_faulty_lane_retried, timeout=DEADLINE, what="every faulty lane failed twice")

    def _lanes_idle(self, peers: list[FaultyPeer]) -> Callable[[], Awaitable[bool]]:
        async def idle() -> bool:
            lanes = await self.lanes()
            return all(lanes[p.name]["backlog"] == 0 and lanes[p.name]["last_success"] for p in peers)

        return idle


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def scenario(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Scenario]:
    peers = {name: FaultyPeer(name) for name in (HEALTHY, *FAULTY)}
    for name, peer in peers.items():
        if name != DOWN:  # the down peer's port refuses connections until it is started
            await peer.start()
    node = NodeSpec("faults", operator_ids=[OPERATOR])
    node.peers = [
        {
            "id": name,
            "role": "emp",
            "base_url": peer.url,
            "inbound_token": f"{name}-token",
            "push": [STATUS],
            "batch_size": BATCH_SIZE,
            "timeout_seconds": HANG_TIMEOUT_SECONDS if name == HANG else 10,
        }
        for name, peer in peers.items()
    ]
    node.extra = {
        "delivery": {
            "poll_interval_seconds": 0.5,
            "backoff_initial_seconds": 0.2,
            "backoff_max_seconds": BACKOFF_MAX_SECONDS,
            "lease_seconds": 2,
            # Far longer than the faults last: the healed peers recover by retries, not by a resync.
            "resync_after_seconds": 300,
        }
    }
    processes = NodeProcesses([node], tmp_path_factory.mktemp("faults"))
    scenario = Scenario(node, peers, processes)
    try:
        await processes.start()
        scenario.failure_events = EventTap(node.topology.events.name, "peer.delivery.failed")
        async with scenario.failure_events:
            yield scenario
    finally:
        await scenario.close()
        processes.stop()
        for peer in peers.values():
            peer.heal()
            await peer.stop()
        await cleanup([node])


# ---- checks ------------------------------------------------------------------------------------------


def received(peer: FaultyPeer) -> dict[str, list[tuple[str, float]]]:
    """EvseID → the statuses the peer applied, in order (a repeat of the same status counted once)."""
    sequences: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for at, operation, body in peer.requests:
        if operation != STATUS:
            continue
        for record in body["OperatorEvseStatus"]["EvseStatusRecord"]:
            sequence = sequences[record["EvseID"]]
            if not sequence or sequence[-1][0] != record["EvseStatus"]:
                sequence.append((record["EvseStatus"], at))
    return sequences


def latencies_in_order(peer: FaultyPeer, history: dict[str, list[tuple[str, float]]], since: float) -> list[float]:
    """Assert that per EVSE the peer applied a subsequence of the statuses set, in the order they were set
    (changes may be coalesced, never reordered); the latency of each change it got that was set after
    ``since`` (matched to the earliest possible change: an upper bound)."""
    latencies = []
    for evse, got in received(peer).items():
        sent, j = history[evse], 0
        for status, at in got:
            while j < len(sent) and sent[j][0] != status:
                j += 1
            assert j < len(sent), f"{peer.name} got {evse} {[s for s, _ in got]}, set {[s for s, _ in sent]}"
            if sent[j][1] >= since:
                latencies.append(at - sent[j][1])
            j += 1
    return latencies


# ---- the tests ---------------------------------------------------------------------------------------


async def test_faulty_peers_fail_alone_and_visibly_while_the_healthy_peer_gets_every_change(
    scenario: Scenario,
) -> None:
    await scenario.faulted()
    peers, healthy = scenario.peers, scenario.peers[HEALTHY]

    # The healthy peer: every EVSE's statuses in the order they were set, promptly (were its lane held up
    # by the hanging peer, its median latency would be at least that peer's timeout).
    latencies = latencies_in_order(healthy, scenario.history, scenario.faulted_at)
    assert len(latencies) >= ROUNDS, "the healthy peer received the stream"
    assert statistics.median(latencies) < HANG_TIMEOUT_SECONDS, statistics.median(latencies)
    # ... and it kept receiving while a request to the hanging peer was outstanding.
    hung_at = [at for at, *_ in peers[HANG].faulty_requests]
    assert hung_at, "the hanging peer was called"
    served = [at for at, *_ in healthy.requests]
    assert any(sum(t < at < t + HANG_TIMEOUT_SECONDS for at in served) >= 3 for t in hung_at), (hung_at, served)
    assert healthy.refusals == 0 and dict(healthy.max_in_flight) == {STATUS: 1}

    # The node stayed ready throughout.
    assert scenario.readiness and all(status == 200 for _, status in scenario.readiness), scenario.readiness

    # Every faulty lane shows its failure, classified, and keeps retrying; nothing counts as accepted.
    lanes = await scenario.lanes()
    assert lanes[HEALTHY]["consecutive_failures"] == 0 and lanes[HEALTHY]["last_error"] is None
    for name in FAULTY:
        lane, before = lanes[name], scenario.before[name]
        assert (lane["last_error"] or "").startswith(f"{KIND[name]}: "), (name, lane)
        assert lane["consecutive_failures"] >= 2 and lane["next_attempt"], (name, lane)
        assert lane["failing_since"] >= scenario.faulted_at - 1, (name, lane)
        # coalesced per EVSE: the backlog is bounded by the EVSEs, not by the ~400 changes
        assert 0 < lane["backlog"] <= len(EVSES) + len(NEW_EVSES), (name, lane)
        assert lane["last_success"] == before["last_success"], (name, lane, before)
    assert scenario.before[DOWN]["last_success"] is None and lanes[DOWN]["synced_at"] is None
    assert lanes[DOWN]["resync_pending"], "the down peer is still due its first fullLoad"

    # What the node records as held by each peer: the healthy one holds the new EVSEs, no faulty one does.
    assert await scenario.known(HEALTHY) == set(EVSES) | set(NEW_EVSES)
    for name in FAULTS:
        assert await scenario.known(name) == set(EVSES), name
    assert await scenario.known(DOWN) == set()

    # The faulty servers were called again and again, and applied nothing.
    for name in FAULTS:
        assert len(peers[name].faulty_requests) >= 2, name
        assert len(peers[name].requests) == scenario.applied_before[name], name

    # The worker's metrics: requests by outcome; the propagation histogram counts acknowledged changes only.
    worker, before_scrape = await scenario.worker_metrics(), scenario.worker_before
    assert before_scrape is not None

    def delta(name: str, **labels: str) -> float:
        return worker.total(name, **labels) - before_scrape.total(name, **labels)

    requests = "oicp_peer_delivery_requests_total"
    propagation = "oicp_evse_status_propagation_seconds_count"
    assert delta(requests, peer=HEALTHY, operation=STATUS, outcome="success") >= 1
    assert delta(propagation, peer=HEALTHY) >= ROUNDS
    for name in FAULTY:
        assert delta(requests, peer=name, operation=STATUS, outcome=KIND[name]) >= 2, name
        assert delta(requests, peer=name, operation=STATUS, outcome="success") == 0, name
        assert delta(propagation, peer=name) == 0, name

    # The gateway's node-wide view: the faulty lanes are failing, the healthy one is ok.
    gateway = await scenario.gateway_metrics()
    assert gateway.value("oicp_peer_lane_state", peer=HEALTHY, operation=STATUS, state="ok") == 1
    for name in FAULTY:
        assert gateway.value("oicp_peer_lane_state", peer=name, operation=STATUS, state="failing") == 1, name
        assert (gateway.value("oicp_peer_consecutive_failures", peer=name, operation=STATUS) or 0) >= 2, name

    # Internal systems hear of the failures: peer.delivery.failed events, by peer, with the error.
    assert scenario.failure_events is not None
    failures: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in scenario.failure_events.events:
        failures[event["data"]["peer_id"]].append(event["data"])
    assert HEALTHY not in failures, failures[HEALTHY]
    for name in FAULTY:
        assert failures[name], name
        assert all(e["operation"] == STATUS and e["error"].startswith(f"{KIND[name]}: ") for e in failures[name])


async def test_healed_peers_converge_to_the_latest_status_of_every_evse(scenario: Scenario) -> None:
    await scenario.faulted()
    peers = scenario.peers
    healed_at = time.time()
    for name in FAULTS:
        peers[name].heal()
    await peers[DOWN].start()
    rng = random.Random(13)
    for _ in range(10):  # changes keep coming while they recover
        await scenario.change_some(rng, EVSES + NEW_EVSES)
        await asyncio.sleep(PAUSE)

    await wait_until(
        lambda: all(p.statuses == scenario.statuses for p in peers.values()),
        timeout=DEADLINE,
        what="every peer holds the latest status of every EVSE",
    )

    async def lanes_settled() -> bool:
        lanes = await scenario.lanes()
        return all(lane["backlog"] == 0 and lane["consecutive_failures"] == 0 for lane in lanes.values())

    await wait_until(lanes_settled, timeout=DEADLINE, what="every lane settled")
    every_evse = set(EVSES) | set(NEW_EVSES)
    for name, peer in peers.items():
        assert await scenario.known(name) == every_evse, name
        # in order per EVSE at every peer, never a conflict at its strict sink, one request at a time
        latencies_in_order(peer, scenario.history, healed_at)
        assert peer.refusals == 0, f"{name} had to refuse pushes that broke ActionType semantics"
        assert dict(peer.max_in_flight) == {STATUS: 1}, (name, peer.max_in_flight)

    # The peer never reached gets its first fullLoad; the healed ones recovered by retrying what was
    # queued for them (inserts of the EVSEs they never acknowledged, updates of the others).
    (first, *_) = peers[DOWN].requests
    assert first[2]["ActionType"] == "fullLoad", first
    for name in FAULTS:
        recovered = [body for at, _, body in peers[name].requests if at >= healed_at]
        actions = {body["ActionType"] for body in recovered}
        assert actions <= {"insert", "update"} and "insert" in actions, (name, actions)
        inserted = {
            r["EvseID"]
            for b in recovered
            if b["ActionType"] == "insert"
            for r in b["OperatorEvseStatus"]["EvseStatusRecord"]
        }
        assert inserted == set(NEW_EVSES), (name, inserted)

    gateway = await scenario.gateway_metrics()
    for name in peers:
        assert gateway.value("oicp_peer_lane_state", peer=name, operation=STATUS, state="ok") == 1, name
    await scenario.probe_readiness()
    assert all(status == 200 for _, status in scenario.readiness), scenario.readiness
