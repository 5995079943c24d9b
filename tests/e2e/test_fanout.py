"""Fan-out of a CPO node's own EVSE data and status to 12 EMP peers (strict OICP sinks), with one
peer down for a while and one answering slowly, then two evse_push replicas with one killed.

What is proven: healthy peers reach the latest state while a peer is down and are not held up by
the slow one; the downed peer, back after longer than ``resync_after_seconds``, gets a fullLoad and
then holds exactly the latest status and data of every EVSE; no peer ever sees two concurrent
requests of one operation; strict ActionType semantics are never violated (no 009 at the sinks);
with two replicas nothing is lost when one is killed and sends never overlap."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest
import pytest_asyncio

from tests.support.bodies import evse_record
from tests.support.nodes import AMQP_URL, REPO, NodeProcesses, NodeSpec, cleanup, free_port, wait_until
from tests.support.sinks import OicpSink

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

OPERATOR = "DE*FAN"
PEERS = 12
EVSES = [f"DE*FAN*E{n:04d}" for n in range(60)]
STATUSES = ["Available", "Occupied", "Reserved", "OutOfService"]
SLOW_ANSWER_SECONDS = 3.0
RESYNC_AFTER_SECONDS = 3.0
BACKOFF_MAX_SECONDS = 1.0
RATE_LIMITED = 3  # this peer is configured with a rate limit
RATE_LIMITED_RPS = 4.0
RETRY_AFTER_SECONDS = 2.0
SHORT_TIMEOUT = 5  # this peer is configured with a short timeout
SHORT_TIMEOUT_SECONDS = 1.0
BATCH_SIZE = 25
PAUSE = 0.05  # between two status commands of the stream


class Fan:
    def __init__(self, node: NodeSpec, sinks: list[OicpSink], processes: NodeProcesses) -> None:
        self.node, self.sinks, self.processes = node, sinks, processes
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {node.internal_token}"})

    async def command(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(f"{self.node.internal_url}/commands/{name}", json=body) as response:
            answer = await response.json()
            assert response.status in (200, 202), answer
            return answer

    async def set_statuses(self, records: list[tuple[str, str]]) -> None:
        await self.command("cpo.evse.status.set", {"records": [{"EvseID": e, "EvseStatus": s} for e, s in records]})

    async def delivery(self) -> list[dict[str, Any]]:
        async with self.http.get(f"{self.node.internal_url}/delivery") as response:
            return await response.json()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def fan(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fan]:
    sinks = [OicpSink(f"DE-F{n:02d}") for n in range(PEERS)]
    for sink in sinks:
        await sink.start()
    node = NodeSpec("fan", operator_ids=[OPERATOR])
    node.peers = [
        {
            "id": sink.name,
            "role": "emp",
            "base_url": sink.url,
            "inbound_token": f"{sink.name}-token",
            "push": ["PushEvseStatus", "PushEvseData"],
            "batch_size": BATCH_SIZE,
            "timeout_seconds": 10,
            **({"max_requests_per_second": RATE_LIMITED_RPS} if sink is sinks[RATE_LIMITED] else {}),
            **({"timeout_seconds": SHORT_TIMEOUT_SECONDS} if sink is sinks[SHORT_TIMEOUT] else {}),
        }
        for sink in sinks
    ]
    node.extra = {
        "delivery": {
            "poll_interval_seconds": 0.5,
            "backoff_initial_seconds": 0.2,
            "backoff_max_seconds": BACKOFF_MAX_SECONDS,
            "lease_seconds": 2,
            "resync_after_seconds": RESYNC_AFTER_SECONDS,
        }
    }
    processes = NodeProcesses([node], tmp_path_factory.mktemp("fan"))
    fan = Fan(node, sinks, processes)
    try:
        await processes.start()
        yield fan
    finally:
        await fan.http.close()
        processes.stop()
        for sink in sinks:
            await sink.stop()
        await cleanup([node])


def converged(sink: OicpSink, statuses: dict[str, str], data: dict[str, str]) -> bool:
    names = {k: v["ChargingStationNames"][0]["value"] for k, v in sink.held["PushEvseData"].items()}
    return sink.statuses == statuses and names == data


async def test_fan_out_isolates_down_and_slow_peers_and_resyncs(fan: Fan) -> None:
    rng = random.Random(7)
    data = {evse: "Station" for evse in EVSES}
    answer = await fan.command(
        "cpo.evse.data.set",
        {
            "ActionType": "fullLoad",
            "OperatorEvseData": {
                "OperatorID": OPERATOR,
                "OperatorName": "Fan CPO",
                "EvseDataRecord": [evse_record(e) for e in EVSES],
            },
        },
    )
    assert answer["ok"] and answer["changed"] == len(EVSES)
    statuses = {evse: "Available" for evse in EVSES}
    await fan.set_statuses(list(statuses.items()))
    await wait_until(
        lambda: all(converged(s, statuses, data) for s in fan.sinks), timeout=60, what="initial state at every peer"
    )

    down, slow, healthy = fan.sinks[0], fan.sinks[1], fan.sinks[2:]
    await down.stop()
    slow.delay = SLOW_ANSWER_SECONDS
    sent_at: dict[tuple[str, str], float] = {}
    for _ in range(40):
        batch = rng.sample(EVSES, 5)
        changes = []
        for evse in batch:
            status = rng.choice([s for s in STATUSES if s != statuses[evse]])
            statuses[evse] = status
            changes.append((evse, status))
        now = time.time()
        for change in changes:
            sent_at[change] = now
        await fan.set_statuses(changes)
        await asyncio.sleep(PAUSE)
    # EVSE data changes too: an update of 3 records and a delete of 2
    renamed = EVSES[:3]
    data_went_down = time.monotonic()  # the data lane fails from its first change on
    for evse in renamed:
        data[evse] = "Renamed"
    answer = await fan.command(
        "cpo.evse.data.set",
        {
            "ActionType": "update",
            "OperatorEvseData": {
                "OperatorID": OPERATOR,
                "OperatorName": "Fan CPO",
                "EvseDataRecord": [evse_record(e, "Renamed") for e in renamed],
            },
        },
    )
    assert answer["ok"], answer
    removed = EVSES[-2:]
    for evse in removed:
        del data[evse]
    answer = await fan.command(
        "cpo.evse.data.set",
        {
            "ActionType": "delete",
            "OperatorEvseData": {
                "OperatorID": OPERATOR,
                "OperatorName": "Fan CPO",
                "EvseDataRecord": [evse_record(e) for e in removed],
            },
        },
    )
    assert answer["deleted"] == 2, answer

    # The healthy peers converge while one peer is still down and another answers slowly.
    await wait_until(
        lambda: all(converged(s, statuses, data) for s in healthy), timeout=60, what="healthy peers converge"
    )
    assert down._runner is None, "the downed peer must still be down while the others converged"
    latencies = [
        received - sent_at[key] for sink in healthy for key, received in sink.received_at.items() if key in sent_at
    ]
    assert latencies, "healthy peers received the stream"
    # Blocked behind the slow peer, a healthy peer's median latency would be at least its delay.
    assert statistics.median(latencies) < SLOW_ANSWER_SECONDS, statistics.median(latencies)

    lanes = {(lane["peer_id"], lane["operation"]): lane for lane in await fan.delivery()}
    down_lane = lanes[(down.name, "PushEvseStatus")]
    assert down_lane["last_error"] and down_lane["consecutive_failures"] >= 1 and down_lane["next_attempt"]
    # 200 changes queued for the downed peer, coalesced per EVSE: the backlog is bounded by the EVSEs
    assert 0 < down_lane["backlog"] <= len(EVSES)
    assert lanes[(healthy[0].name, "PushEvseStatus")]["last_error"] is None

    # Down for longer than resync_after_seconds: on its return the peer gets a fullLoad.
    await asyncio.sleep(max(0.0, RESYNC_AFTER_SECONDS + BACKOFF_MAX_SECONDS - (time.monotonic() - data_went_down)))
    requests_before = len(down.requests)
    await down.start()
    await wait_until(lambda: converged(down, statuses, data), timeout=60, what="downed peer catches up")
    await wait_until(lambda: converged(slow, statuses, data), timeout=60, what="slow peer catches up")
    resync = [(op, body["ActionType"]) for _, op, body in down.requests[requests_before:]]
    assert ("PushEvseStatus", "fullLoad") in resync and ("PushEvseData", "fullLoad") in resync, resync

    for sink in fan.sinks:
        assert dict(sink.max_in_flight) == {"PushEvseStatus": 1, "PushEvseData": 1}, (sink.name, sink.max_in_flight)
        assert max(records_in(op, body) for _, op, body in sink.requests) <= BATCH_SIZE
        assert sink.refusals == 0, f"{sink.name} had to refuse pushes that broke ActionType semantics"
    slow.delay = 0.0


def evse_push_children(processes: NodeProcesses) -> list[int]:
    """PIDs of the evse_push processes that ``shared.node`` runs for the node."""
    assert processes.process is not None
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == processes.process.pid and b"services.evse_push" in cmdline:
            pids.append(int(entry.name))
    return pids


async def test_two_evse_push_replicas_never_overlap_and_lose_nothing_when_one_is_killed(fan: Fan) -> None:
    # a replica on the same host needs a metrics port of its own (in containers each has its address)
    env = dict(
        os.environ, OICP_P2P_CONFIG=str(fan.processes.configs[0]), OICP_P2P_METRICS__PORTS__EVSE_PUSH=str(free_port())
    )
    log = (Path(fan.processes.log_path).parent / "second-evse-push.log").open("wb")
    second = subprocess.Popen(
        [sys.executable, "-m", "services.evse_push"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        await wait_until(lambda: two_consumers(fan.node), timeout=60, what="the second replica consumes")
        statuses = dict(fan.sinks[2].statuses)
        rng = random.Random(11)
        for round_ in range(60):
            changes = []
            for evse in rng.sample(sorted(statuses), 5):
                statuses[evse] = rng.choice([s for s in STATUSES if s != statuses[evse]])
                changes.append((evse, statuses[evse]))
            await fan.set_statuses(changes)
            if round_ == 20:
                # The first replica holds the leases (it renews them while alive): kill it, so
                # the second must take the lanes over when the leases expire.
                (first,) = evse_push_children(fan.processes)
                os.kill(first, signal.SIGKILL)
            await asyncio.sleep(PAUSE)
        data = {k: v["ChargingStationNames"][0]["value"] for k, v in fan.sinks[2].held["PushEvseData"].items()}
        await wait_until(
            lambda: all(converged(s, statuses, data) for s in fan.sinks), timeout=60, what="every peer converges"
        )
        for sink in fan.sinks:
            assert max(sink.max_in_flight.values()) == 1, (sink.name, sink.max_in_flight)
            assert sink.refusals == 0
    finally:
        if second.poll() is None:
            second.kill()
        second.wait()
        log.close()


async def two_consumers(node: NodeSpec) -> bool:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(node.prefix + "evse_push.cpo.evse.status.set", passive=True)
        return int(queue.declaration_result.consumer_count) >= 2


async def test_rate_limit_and_retry_after_are_honoured(fan: Fan) -> None:
    limited, throttling = fan.sinks[RATE_LIMITED], fan.sinks[4]
    throttling.throttle = [RETRY_AFTER_SECONDS]
    statuses = dict(fan.sinks[2].statuses)
    rng = random.Random(5)
    for _ in range(15):
        evse = rng.choice(sorted(statuses))
        statuses[evse] = rng.choice([s for s in STATUSES if s != statuses[evse]])
        await fan.set_statuses([(evse, statuses[evse])])
        await asyncio.sleep(PAUSE)
    await wait_until(lambda: converged(throttling, statuses, dict(throttling_names(throttling))), what="throttled")
    await wait_until(lambda: limited.statuses == statuses, what="rate-limited peer converges")
    # HTTP 429 with Retry-After: the lane's next request came no earlier than the peer asked
    (throttled,) = throttling.throttled_at
    after = [t for t, op, _ in throttling.requests if op == "PushEvseStatus" and t > throttled]
    assert after and after[0] - throttled >= RETRY_AFTER_SECONDS - 0.05
    # the rate limit: the lane starts its requests at least 1/rate apart. What the sink measures is
    # when each arrived and was read, which a loaded machine (or a larger body) delays unevenly: one
    # late request makes the gap before it long and the one after it short. So the check is on spans
    # of two gaps and on the mean; without the limit the requests come milliseconds apart.
    times = sorted(t for t, op, _ in limited.requests if op == "PushEvseStatus")
    gaps = [b - a for a, b in itertools.pairwise(times)]
    interval = 1 / RATE_LIMITED_RPS
    assert len(gaps) >= 3, gaps
    assert min(a + b for a, b in itertools.pairwise(gaps)) >= 1.5 * interval, gaps
    assert (times[-1] - times[0]) / len(gaps) >= interval * 0.9, gaps


def throttling_names(sink: OicpSink) -> dict[str, str]:
    return {k: v["ChargingStationNames"][0]["value"] for k, v in sink.held["PushEvseData"].items()}


def records_in(operation: str, body: dict[str, Any]) -> int:
    if operation == "PushEvseStatus":
        return len(body["OperatorEvseStatus"]["EvseStatusRecord"])
    return len(body["OperatorEvseData"]["EvseDataRecord"])


async def test_a_peer_slower_than_its_timeout_fails_then_recovers(fan: Fan) -> None:
    sink = fan.sinks[SHORT_TIMEOUT]
    sink.delay = SHORT_TIMEOUT_SECONDS * 2
    statuses = dict(fan.sinks[2].statuses)
    evse = sorted(statuses)[0]
    statuses[evse] = next(s for s in STATUSES if s != statuses[evse])
    await fan.set_statuses([(evse, statuses[evse])])

    async def timed_out() -> bool:
        lanes = {(lane["peer_id"], lane["operation"]): lane for lane in await fan.delivery()}
        return "timeout" in (lanes[(sink.name, "PushEvseStatus")]["last_error"] or "")

    await wait_until(timed_out, what="the lane records the timeout")
    sink.delay = 0.0
    # generous: the lane may be in its longest backoff after several timeouts, on a busy machine
    await wait_until(
        lambda: sink.statuses == statuses, timeout=60, what="the peer gets the status once it answers in time"
    )
