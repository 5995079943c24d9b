"""cdr_flow: CDRs submitted at a CPO node, delivered exactly once to an EMP node.

System under test: a CPO node (operator ``DE*BEN``) and an EMP node (provider ``DE-BEN``), each real
processes (``python -m shared.node``, own RabbitMQ/Redis prefixes), each the other's peer as in the
tests' pair. The benchmark is the CPO's charge point backend: it submits each CDR with
``POST /commands/cpo.cdr.submit`` on the CPO node's internal API (the documented way for a backend;
over AMQP the gateway's HTTP hop would be skipped, but so would the answer the backend waits for
before it forgets the CDR: the node answers only once the CDR is stored). The CDR's EvcoID belongs to
``DE-BEN``, so the CPO node routes it to the EMP node; the benchmark listens to the EMP node's
``cdr.received`` event (its own exclusive queue on ``<prefix>oicp.events``) and takes the receipt time
there: end-to-end = event received − submit sent.

Open loop at ``--cdr-rate`` CDRs per second (at most ``--cdr-concurrency`` awaiting their answer), or
as fast as accepted (``--cdr-rate 0``, the default: ``--cdr-concurrency`` submitters in a loop).

Baseline: the same CDR bodies POSTed by a bare aiohttp loop with the same rate and concurrency straight
to ``bench.bare_oicp_server``'s ChargeDetailRecord endpoint (one CDR per SessionID in a dict, receipt
time kept): one HTTP hop, no validation, broker, Redis or delivery lane.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
import redis.asyncio as aioredis

from bench import plots, procstats
from bench.bare_oicp_server import BareServer
from bench.workload import fmt, percentiles, ratio
from shared.oicp.operations import OPERATIONS_BY_NAME
from tests.support.cdrs import cdr_body
from tests.support.nodes import AMQP_URL, REDIS_URL, NodeProcesses, NodeSpec, cleanup

DESCRIPTION = "CDR flow: N CDRs submitted at a CPO node delivered exactly once to an EMP node, vs a bare POST loop"
SIZES: dict[str, dict[str, Any]] = {
    "small": {"cdrs": 2_000, "cdr_drain_timeout": 180},
    "large": {"cdrs": 10_000, "cdr_drain_timeout": 900},
}
OPERATOR_ID, PROVIDER_ID = "DE*BEN", "DE-BEN"
CPO_CALLS_EMP, EMP_CALLS_CPO = "bench-cpo-calls-emp", "bench-emp-calls-cpo"
TIMELINE_BIN_S = 0.25
CDR_PATH = OPERATIONS_BY_NAME["ChargeDetailRecord"].path.format(operatorID=OPERATOR_ID)

Send = Callable[[bytes], Awaitable[bool]]


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--cdrs", type=int, default=None, help="CDRs submitted (small 2,000, large 10,000)")
    group.add_argument("--cdr-rate", type=float, default=0.0, help="CDRs per second, open loop; 0: as fast as accepted")
    group.add_argument("--cdr-concurrency", type=int, default=16, help="submits awaiting their answer (16)")
    group.add_argument("--cdr-drain-timeout", type=float, default=None, help="seconds to wait for every CDR")
    group.add_argument("--cdr-log-level", default="INFO", help="the nodes' log_level (INFO)")


def resolve(args: argparse.Namespace, size: str) -> None:
    for key, value in SIZES[size].items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def bodies(count: int) -> list[tuple[str, bytes]]:
    """(SessionID, body): complete calibration-law CDRs (10 signed metering values), EVSEs and
    contracts varied, the EvcoIDs of the EMP node's provider."""
    found = []
    for i in range(count):
        sid = str(uuid.uuid4())
        body = cdr_body(
            sid,
            f"{OPERATOR_ID}*E{i % 5000:07d}",
            evco_id=f"{PROVIDER_ID}-C{i % 100_000:08d}-X",
            energy=f"{5 + i % 60}.{i % 1000:03d}",
        )
        body["HubOperatorID"] = OPERATOR_ID
        found.append((sid, orjson.dumps(body)))
    return found


async def drive(cdrs: list[tuple[str, bytes]], send: Send, rate: float, concurrency: int) -> dict[str, Any]:
    """Send every CDR; per SessionID its send and acknowledgement time (monotonic)."""
    sent: dict[str, float] = {}
    acked: dict[str, float] = {}
    errors: list[str] = []
    slots = asyncio.Semaphore(concurrency)

    async def one(sid: str, body: bytes) -> None:
        try:
            sent[sid] = time.monotonic()
            if await send(body):
                acked[sid] = time.monotonic()
            else:
                errors.append(sid)
        except Exception as exc:  # counted, the run goes on
            errors.append(f"{sid}: {type(exc).__name__}: {exc}"[:200])
        finally:
            slots.release()

    started = time.monotonic()
    tasks = []
    for i, (sid, body) in enumerate(cdrs):
        if rate > 0:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await slots.acquire()
        tasks.append(asyncio.create_task(one(sid, body)))
    await asyncio.gather(*tasks)
    return {"started": started, "finished": time.monotonic(), "sent": sent, "acked": acked, "errors": errors}


def summarise(log: dict[str, Any], received: list[tuple[str, float]], extra: dict[str, Any]) -> dict[str, Any]:
    sent, acked, started = log["sent"], log["acked"], log["started"]
    counts = Counter(sid for sid, _ in received)
    first: dict[str, float] = {}
    for sid, at in received:
        first.setdefault(sid, at)
    latencies = [first[sid] - sent[sid] for sid in first if sid in sent]
    last = max(first.values()) if first else math.nan
    window = last - started if first else math.nan
    bins: Counter[int] = Counter(int((at - started) / TIMELINE_BIN_S) for at in first.values())
    span = int(window / TIMELINE_BIN_S) + 1 if first else 0
    ack_span = (max(acked.values()) - started) if acked else math.nan
    return {
        "submitted": len(sent),
        "accepted": len(acked),
        "submit_failures": len(log["errors"]),
        "submit_errors": log["errors"][:5],
        "submit_ack_ms": percentiles([acked[s] - sent[s] for s in acked]),
        "accepted_per_s": round(len(acked) / ack_span, 1) if acked else None,
        "received_distinct": len(first),
        "received_events": len(received),
        "duplicates": sum(c - 1 for c in counts.values()),
        "missing": len(set(acked) - set(first)),
        "unexpected": len(set(first) - set(sent)),
        "latency_ms": percentiles(latencies),
        "latency_sample_ms": sorted(round(v * 1000, 1) for v in latencies),
        "window_s": round(window, 3) if first else None,
        "delivered_per_s": round(len(first) / window, 1) if first else None,
        # CDRs received per second, in bins of TIMELINE_BIN_S from the first submit
        "delivered_timeline": [bins.get(b, 0) / TIMELINE_BIN_S for b in range(span)],
        "timeline_bin_s": TIMELINE_BIN_S,
        **extra,
    }


class ReceivedTap:
    """The EMP node's ``cdr.received`` events, with the moment the benchmark got each."""

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self.received: list[tuple[str, float]] = []
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect(AMQP_URL)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=1000)
        exchange = await channel.get_exchange(self.exchange)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, "cdr.received")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            now = time.monotonic()
            self.received.append((orjson.loads(message.body)["data"]["session_id"], now))

        await queue.consume(on_message, no_ack=True)

    async def stop(self) -> None:
        if self._connection:
            with contextlib.suppress(Exception):
                await self._connection.close()


async def wait_for(count: Callable[[], Awaitable[int]], expected: int, deadline: float, quiet_s: float = 1.0) -> None:
    """Until ``count()`` reached ``expected`` and stayed put for ``quiet_s`` (a late duplicate would
    show), or the monotonic deadline."""
    reached: float | None = None
    last = -1
    while time.monotonic() < deadline:
        now_count = await count()
        if now_count >= expected:
            if reached is None or now_count != last:
                reached = time.monotonic()
            elif time.monotonic() - reached >= quiet_s:
                return
        last = now_count
        await asyncio.sleep(0.1)


# ---- the node ------------------------------------------------------------------------------------


async def run_node(args: argparse.Namespace, cdrs: list[tuple[str, bytes]], artefacts: Path) -> dict[str, Any]:
    cpo = NodeSpec("cfcpo", operator_ids=[OPERATOR_ID])
    emp = NodeSpec("cfemp", provider_ids=[PROVIDER_ID])
    cpo.peers = [
        {
            "id": PROVIDER_ID,
            "role": "emp",
            "base_url": emp.oicp_url,
            "inbound_token": EMP_CALLS_CPO,
            "outbound_token": CPO_CALLS_EMP,
        }
    ]
    emp.peers = [
        {
            "id": OPERATOR_ID,
            "role": "cpo",
            "base_url": cpo.oicp_url,
            "inbound_token": CPO_CALLS_EMP,
            "outbound_token": EMP_CALLS_CPO,
        }
    ]
    for spec in (cpo, emp):  # the production delivery and cdr defaults
        spec.extra = {"delivery": {}, "log_level": args.cdr_log_level}
    workdir = Path(tempfile.mkdtemp(prefix="bench-node-"))
    cpo_processes, emp_processes = NodeProcesses([cpo], workdir), NodeProcesses([emp], workdir)
    tap = ReceivedTap(emp.topology.events.name)
    client = aioredis.from_url(REDIS_URL)
    try:
        await asyncio.gather(cpo_processes.start(timeout=120), emp_processes.start(timeout=120))
        services: dict[int, str] = {}
        for name, processes in (("cpo", cpo_processes), ("emp", emp_processes)):
            assert processes.process is not None
            services |= {pid: f"{name} {procstats.label(pid)}" for pid in procstats.descendants(processes.process.pid)}
        await tap.start()
        url = f"{cpo.internal_url}/commands/cpo.cdr.submit"
        headers = {"Authorization": f"Bearer {cpo.internal_token}", "Content-Type": "application/json"}
        connector = aiohttp.TCPConnector(limit=args.cdr_concurrency + 4)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:

            async def send(body: bytes) -> bool:
                async with http.post(url, data=body, headers=headers) as response:
                    raw = await response.read()
                return response.status == 200 and orjson.loads(raw).get("ok") is True

            meter = procstats.CpuMeter({**services, **procstats.shared_services()})
            meter.start()
            log = await drive(cdrs, send, args.cdr_rate, args.cdr_concurrency)

            async def distinct() -> int:
                return len({sid for sid, _ in tap.received})

            await wait_for(distinct, len(log["acked"]), time.monotonic() + args.cdr_drain_timeout)
            cpu = meter.stop()
        from shared.stores.cdr_inbox import CdrInbox
        from shared.stores.cdr_outbox import CdrOutbox
        from shared.stores.redis import KeySpace

        inbox = await CdrInbox(client, KeySpace(emp.config()["redis"]["key_prefix"])).count()
        extra: dict[str, Any] = {"inbox_count": inbox, "cpu_seconds": cpu}
        with contextlib.suppress(Exception):
            outbox = CdrOutbox(client, KeySpace(cpo.config()["redis"]["key_prefix"]))
            extra["outbox_parked"] = await outbox.count_parked()
        extra["peak_rss_mib"] = procstats.peak_rss_mib(services)
        extra["pids"] = {str(p): n for p, n in services.items()}
        return summarise(log, tap.received, extra)
    finally:
        await tap.stop()
        cpo_processes.stop()
        emp_processes.stop()
        await cleanup([cpo, emp])
        await client.aclose()
        for processes, suffix in ((cpo_processes, ".cpo.log"), (emp_processes, ".emp.log")):
            with contextlib.suppress(OSError):
                shutil.copy(processes.log_path, artefacts.with_suffix(suffix))
        shutil.rmtree(workdir, ignore_errors=True)


# ---- the baseline --------------------------------------------------------------------------------


async def run_baseline(args: argparse.Namespace, cdrs: list[tuple[str, bytes]]) -> dict[str, Any]:
    server = BareServer()
    await server.start()
    try:
        url = server.url + CDR_PATH
        headers = {"Content-Type": "application/json"}
        connector = aiohttp.TCPConnector(limit=args.cdr_concurrency + 4)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:

            async def send(body: bytes) -> bool:
                async with http.post(url, data=body, headers=headers) as response:
                    raw = await response.read()
                return response.status == 200 and orjson.loads(raw)["Result"] is True

            meter = procstats.CpuMeter({server.pid: "bare server", **procstats.shared_services()})
            meter.start()
            log = await drive(cdrs, send, args.cdr_rate, args.cdr_concurrency)
            cpu = meter.stop()
            async with http.get(server.url + "/control/cdrs") as response:
                dump = orjson.loads(await response.read())
        # the server keeps one CDR per SessionID and counts repeats (server_duplicates)
        received = [(sid, at) for sid, at in dump["received"]]
        extra = {
            "inbox_count": len(dump["received"]),
            "server_duplicates": dump["duplicates"],
            "cpu_seconds": cpu,
            "peak_rss_mib": procstats.peak_rss_mib({server.pid: "bare server"}),
        }
        return summarise(log, received, extra)
    finally:
        await server.stop()


# ---- the scenario --------------------------------------------------------------------------------


async def run(args: argparse.Namespace, artefacts: Path) -> dict[str, Any]:
    cdrs = bodies(args.cdrs)
    params = {
        "cdrs": args.cdrs,
        "cdr_rate": args.cdr_rate or "as fast as accepted",
        "concurrency": args.cdr_concurrency,
        "body_bytes": len(cdrs[0][1]) if cdrs else 0,
        "node_log_level": args.cdr_log_level,
        "submit_path": "HTTP internal API, POST /commands/cpo.cdr.submit (answered once stored)",
        "receipt": "cdr.received event of the EMP node, received by the benchmark",
    }
    node = await run_node(args, cdrs, artefacts)
    baseline = await run_baseline(args, cdrs)

    return {
        "params": params,
        "node": node,
        "baseline": baseline,
        "ratios": {
            "delivered_per_s": ratio(node["delivered_per_s"], baseline["delivered_per_s"]),
            "p50": ratio(node["latency_ms"]["p50"], baseline["latency_ms"]["p50"]),
            "p99": ratio(node["latency_ms"]["p99"], baseline["latency_ms"]["p99"]),
        },
    }


def exactly_once(system: dict[str, Any]) -> bool:
    return (
        system["submit_failures"] == 0
        and system["received_distinct"] == system["accepted"] == system["submitted"]
        and system["duplicates"] == 0
        and system["missing"] == 0
        and system["unexpected"] == 0
        and system["inbox_count"] == system["accepted"]
    )


def table(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    node, base, ratios = result["node"], result["baseline"], result["ratios"]

    def r(value: float | None) -> str:
        return f"{value:.2f}x" if value is not None else ""

    rows = [
        (
            "CDRs submitted / accepted",
            f"{node['submitted']:,} / {node['accepted']:,}",
            f"{base['submitted']:,} / {base['accepted']:,}",
            "",
        ),
        (
            "delivered CDRs/s (sustained)",
            fmt(node["delivered_per_s"]),
            fmt(base["delivered_per_s"]),
            r(ratios["delivered_per_s"]),
        ),
        ("accepted CDRs/s (submit)", fmt(node["accepted_per_s"]), fmt(base["accepted_per_s"]), ""),
        ("end-to-end p50 ms", fmt(node["latency_ms"]["p50"]), fmt(base["latency_ms"]["p50"]), r(ratios["p50"])),
        ("end-to-end p95 ms", fmt(node["latency_ms"]["p95"]), fmt(base["latency_ms"]["p95"]), ""),
        ("end-to-end p99 ms", fmt(node["latency_ms"]["p99"]), fmt(base["latency_ms"]["p99"]), r(ratios["p99"])),
        ("end-to-end max ms", fmt(node["latency_ms"]["max"]), fmt(base["latency_ms"]["max"]), ""),
        ("submit answer p99 ms", fmt(node["submit_ack_ms"]["p99"]), "", ""),
        ("first submit → last receipt s", fmt(node["window_s"]), fmt(base["window_s"]), ""),
        (
            "received distinct / events",
            f"{node['received_distinct']:,} / {node['received_events']:,}",
            f"{base['received_distinct']:,}",
            "",
        ),
        (
            "duplicates / missing",
            f"{node['duplicates']} / {node['missing']}",
            f"{base['server_duplicates']} / {base['missing']}",
            "",
        ),
        ("inbox count (EMP)", fmt(node["inbox_count"]), fmt(base["inbox_count"]), ""),
        ("parked at the CPO", fmt(node.get("outbox_parked")), "", ""),
        ("exactly once", fmt(exactly_once(node)), fmt(exactly_once(base)), ""),
    ]
    for name, mib in node["peak_rss_mib"].items():
        rows.append((f"peak RSS MiB {name}", fmt(mib), "", ""))
    rows.append(("peak RSS MiB bare server", "", fmt(base["peak_rss_mib"]["bare server"]), ""))
    for name in sorted(set(node["cpu_seconds"]) | set(base["cpu_seconds"])):
        n, b = node["cpu_seconds"].get(name), base["cpu_seconds"].get(name)
        if name == "machine" or (n or 0) >= 0.1 or (b or 0) >= 0.1:
            rows.append((f"CPU s {name}", fmt(n), fmt(b), ""))
    return rows


def targets(result: dict[str, Any]) -> list[tuple[str, str, bool]]:
    node, ratios = result["node"], result["ratios"]
    return [
        (
            f"every one of {result['params']['cdrs']:,} CDRs received exactly once",
            f"{node['received_distinct']:,} distinct, {node['duplicates']} duplicates, inbox {node['inbox_count']:,}",
            exactly_once(node),
        ),
        # No number is set for these two: "met" means measured and reported, the ratio says how it compares.
        (
            "sustained CDRs/s reported (no number set)",
            f"{node['delivered_per_s']} /s ({ratios['delivered_per_s']}x baseline)",
            node["delivered_per_s"] is not None,
        ),
        (
            "p99 end-to-end reported (no number set)",
            f"{node['latency_ms']['p99']} ms ({ratios['p99']}x baseline)",
            node["latency_ms"]["p99"] is not None,
        ),
    ]


def plot(result: dict[str, Any], path: Path) -> Path:
    fig, (ax_rate, ax_latency) = plots.figure(plots.describe(result), panels=2)
    for label, system in (("node", result["node"]), ("baseline", result["baseline"])):
        timeline = system["delivered_timeline"]
        bin_s = system.get("timeline_bin_s", 1.0)
        plots.timeline(ax_rate, label, [i * bin_s for i in range(len(timeline))], timeline, "CDRs received per second")
        plots.percentile_curve(ax_latency, label, system["latency_sample_ms"])
    ax_rate.set_title(f"delivered per second ({TIMELINE_BIN_S:g} s bins, from the first submit)")
    ax_latency.set_title("end-to-end latency (submit → received)")
    ax_latency.set_yscale("log")
    return plots.save(fig, path)
