"""status_fanout: a CPO node fans EVSE status changes out to N EMP peers by PushEvseStatus.

System under test: one CPO node as real processes (``python -m shared.node``, own RabbitMQ/Redis name
prefix), its N peers the sinks, driven through the internal API (``POST /commands/cpo.evse.status.set``,
``--per-command`` changes per command, 1 by default: one command per change, as a charge point
backend reports them).

Baseline: the same sinks and the same change schedule, fanned out by a bare aiohttp loop in the
benchmark's process: one ClientSession, per sink a sequential sender that sends what is pending in
batches of ``--batch-size``, latest status wins; no broker, no Redis, no validation.

Hub model (computed, not run): what an EMP would see if it polled a hub for the statuses every T
seconds (the OICP-recommended 1–5 minutes) instead of getting pushes; from the same recorded change
times (``hub_model``).

Issue #8's workload is the large size: 100 EMP peers, 10,000 EVSEs, 200 changes/s for 120 s (small:
30 peers, 3,000 EVSEs, 200/s for 20 s, about a minute); targets: p99 ≤ 250 ms and every peer ends
with the latest status of every EVSE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
import redis.asyncio as aioredis

from bench import plots, procstats
from bench.sinks import SinkControl
from bench.workload import OPERATOR_ID, Plan, SendLog, Submit, Tracer, drive, fmt, percentiles, ratio
from shared.bus.messages import CommandType
from shared.oicp.operations import OPERATIONS_BY_NAME
from tests.support.nodes import AMQP_URL, REDIS_URL, NodeProcesses, NodeSpec, cleanup

DESCRIPTION = "EVSE status fan-out: CPO node → N EMP sinks by PushEvseStatus, vs a bare aiohttp fan-out"
SIZES: dict[str, dict[str, float]] = {
    # About a minute in all; issue #8's workload is the large size (or --sinks 100 --evses 10000).
    "small": {"sinks": 30, "evses": 3000, "duration": 20, "drain_timeout": 90},
    "large": {"sinks": 100, "evses": 10000, "duration": 120, "drain_timeout": 300},
}
TARGET_P99_MS = 250.0  # issue #8: status command → a peer's receipt, 100 peers, 10,000 EVSEs, 200/s
HUB_POLL_INTERVALS_S = (60.0, 300.0)  # OICP recommends pulling the statuses every 1–5 minutes
HUB_MODEL_SEED = 8
PRIME_CHUNK = 500  # records per command when priming the node (well under the 10,000 limit)
SAMPLE_S = 0.5  # between two looks at a system's backlogs
PUSH_PATH = OPERATIONS_BY_NAME["PushEvseStatus"].path.format(operatorID=OPERATOR_ID)


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--sinks", type=int, default=None, help="EMP sinks, each its own server and peer (small 30, large 100)"
    )
    group.add_argument("--evses", type=int, default=None, help="EVSEs the changes cycle over (small 3000, large 10000)")
    group.add_argument("--rate", type=float, default=200.0, help="status changes per second (200)")
    group.add_argument("--duration", type=float, default=None, help="seconds of changes (small 20, large 120)")
    group.add_argument("--batch-size", type=int, default=500, help="records per PushEvseStatus, node and baseline")
    group.add_argument("--per-command", type=int, default=1, help="status changes per internal command (1)")
    group.add_argument("--max-in-flight", type=int, default=64, help="commands awaiting their answer (64)")
    group.add_argument("--drain-timeout", type=float, default=None, help="seconds to wait for the sinks to agree")
    group.add_argument("--log-level", default="INFO", help="the node's log_level (INFO, its default)")
    group.add_argument(
        "--linger", type=float, default=None, help="the node's delivery.linger_seconds (default: the node's, 0.02)"
    )
    group.add_argument(
        "--concurrent-rounds",
        type=int,
        default=None,
        help="the node's delivery.concurrent_rounds (default: the node's, 4)",
    )
    group.add_argument("--no-trace", action="store_true", help="do not listen to evse.status.changed")
    group.add_argument(
        "--py-spy",
        default="",
        metavar="SERVICES",
        help="profile these node services during the drive, e.g. evse_push,gateway (perturbs the figures)",
    )


def resolve(args: argparse.Namespace, size: str) -> None:
    for key, value in SIZES[size].items():
        if getattr(args, key) is None:
            setattr(args, key, value)


# ---- one measured phase, common to both systems --------------------------------------------------


@dataclass
class Phase:
    """What one system did with the plan, and what the sinks saw of it."""

    log: SendLog
    progress: dict[str, Any]
    sinks: list[dict[str, Any]]
    cpu: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)


class Probe:
    """Looks inside a system while it is driven: its backlogs every ``SAMPLE_S``, the Redis commands
    issued meanwhile, and whatever a subclass adds in ``stop()``."""

    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []
        self.redis = aioredis.from_url(REDIS_URL)
        self._redis_before: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._started = 0.0

    async def start(self) -> None:
        self._redis_before = await self.redis.info("commandstats")
        self._started = time.monotonic()
        self._task = asyncio.create_task(self._sample_forever())

    async def _sample_forever(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed sample is no reason to fail the run
                self.samples.append({"t": round(time.monotonic() - self._started, 2), **await self.sample()})
            await asyncio.sleep(SAMPLE_S)

    async def sample(self) -> dict[str, Any]:
        return {}

    async def stop(self) -> dict[str, Any]:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        extra: dict[str, Any] = {"backlog_timeline": self.samples}
        with contextlib.suppress(Exception):
            after = await self.redis.info("commandstats")
            before = {name: int(stats["calls"]) for name, stats in self._redis_before.items()}
            calls = {name.removeprefix("cmdstat_"): int(v["calls"]) - before.get(name, 0) for name, v in after.items()}
            # Redis is shared: the counts include whatever else used it meanwhile (the baseline's
            # count, which uses no Redis, shows how much), and the commands a Lua script runs count
            # as well as the EVALSHA itself.
            extra["redis_calls"] = dict(sorted(((k, v) for k, v in calls.items() if v > 0), key=lambda kv: -kv[1]))
            extra["redis_calls_total"] = sum(extra["redis_calls"].values())
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        return extra


async def measure(
    args: argparse.Namespace,
    plan: Plan,
    sinks: SinkControl,
    submit: Submit,
    prime: Submit,
    cpu_pids: dict[int, str],
    probe: Probe,
    only: list[int] | None = None,
    later: list[int] | None = None,
    later_timeout: float = 0.0,
    on_drive: Callable[[], None] | None = None,
) -> Phase:
    """Prime every EVSE (and wait until every sink has it), then drive the plan and wait until every
    sink holds the final state; CPU and the probe cover the drive and the drain only.

    ``only``: the sinks waited for (default all; the isolation scenario's healthy ones); ``later``:
    sinks waited for afterwards, up to ``later_timeout`` s (its slow ones: ``extra["later"]``)."""
    await sinks.reset(state=True)
    await sinks.expect(plan.initial())
    started = time.monotonic()
    await prime(list(plan.initial().items()))
    primed = await sinks.wait_converged(time.monotonic() + args.drain_timeout, only=only)
    if primed["converged_at"] is None:
        raise RuntimeError(f"the sinks did not get the initial state: {primed}")
    prime_s = round(primed["converged_at"] - started, 2)
    await sinks.reset()
    await sinks.expect({})  # nothing to compare while driving: keeps the sinks' bookkeeping cheap
    await probe.start()
    meter = procstats.CpuMeter(cpu_pids)
    meter.start()
    own_cpu = procstats.own_cpu_seconds()
    if on_drive:
        on_drive()
    try:
        log = await drive(plan, submit, args.per_command, args.max_in_flight)
        await sinks.expect(log.final_state(plan.initial()))
        progress = await sinks.wait_converged(time.monotonic() + args.drain_timeout, only=only)
    finally:
        extra = await probe.stop()
    cpu = meter.stop()
    cpu["bench process"] = round(procstats.own_cpu_seconds() - own_cpu, 2)
    cpu["others"] = round(cpu["machine"] - sum(v for k, v in cpu.items() if k != "machine"), 2)
    extra["prime_s"] = prime_s
    if later:
        done = await sinks.wait_converged(time.monotonic() + later_timeout, only=later)
        extra["later"] = {
            "converged": done["converged_at"] is not None,
            "converged_after_last_change_s": round(done["converged_at"] - log.finished, 2)
            if done["converged_at"] is not None
            else None,
            "behind_records": done["behind_records"],
            "behind_sinks": done["behind_sinks"],
            "waited_up_to_s": later_timeout,
        }
    dump = await sinks.dump()
    if only is not None:
        extra["later_sinks"] = [dump[i] for i in later or []]
        dump = [dump[i] for i in only]
    return Phase(log, progress, dump, cpu, extra)


def summarise(plan: Plan, phase: Phase) -> dict[str, Any]:
    log, tracer = phase.log, Tracer(phase.log)
    later_sinks = phase.extra.pop("later_sinks", None)
    if later_sinks:
        later = [tracer.latencies(sink["records"])[0] for sink in later_sinks]
        phase.extra["later"] |= {
            "latency_ms": percentiles([v for values in later for v in values]),
            "records_received": sum(len(sink["records"]) for sink in later_sinks),
            "requests": sum(len(sink["batches"]) for sink in later_sinks),
        }
    acked = [i for i, t in enumerate(log.acked_at) if not math.isnan(t)]
    sent = [t for t in log.sent_at if not math.isnan(t)]
    latencies: list[float] = []
    unmatched = 0
    worst_sink_p99: float | None = None
    last_receipt = 0.0
    requests = records = max_batch = 0
    for sink in phase.sinks:
        found, missing = tracer.latencies(sink["records"])
        latencies += found
        unmatched += missing
        p99 = percentiles(found)["p99"]
        if p99 is not None and (worst_sink_p99 is None or p99 > worst_sink_p99):
            worst_sink_p99 = p99
        if sink["records"]:
            last_receipt = max(last_receipt, sink["records"][-1][2])
        requests += len(sink["batches"])
        records += len(sink["records"])
        max_batch = max([max_batch, *sink["batches"]])
    window = max(1e-9, last_receipt - sent[0]) if sent and last_receipt else math.nan
    drive_s = max(1e-9, sent[-1] - sent[0]) if len(sent) > 1 else math.nan
    possible = len(acked) * len(phase.sinks)
    converged = phase.progress["converged_at"] is not None and phase.progress["behind_records"] == 0
    return {
        "changes_planned": len(plan),
        "commands": log.commands,
        "command_failures": log.failures,
        "command_errors": log.errors,
        "changes_per_s_offered": round((len(sent) - 1) / drive_s, 1) if len(sent) > 1 else None,
        "send_lateness_ms": percentiles(log.lateness),
        "command_ack_ms": percentiles([log.acked_at[i] - log.sent_at[i] for i in acked]),
        "latency_ms": percentiles(latencies),
        "latency_curve_ms": curve(latencies),
        "worst_sink_p99_ms": worst_sink_p99,
        "records_received": records,
        "records_attributed": len(latencies),
        "records_unattributed": unmatched,
        "delivered_fraction": round(records / possible, 4) if possible else None,
        "requests": requests,
        "records_per_request_mean": round(records / requests, 2) if requests else None,
        "records_per_request_max": max_batch,
        "window_s": round(window, 3),
        "records_per_s": round(records / window, 1) if records else 0.0,
        "requests_per_s": round(requests / window, 1) if requests else 0.0,
        "drain_s": round(last_receipt - sent[-1], 3) if sent and last_receipt else None,
        "final_state_ok": converged,
        "final_state_behind_records": phase.progress["behind_records"],
        "final_state_behind_sinks": phase.progress["behind_sinks"],
        "cpu_seconds": phase.cpu,
        "timeline": timeline(phase, tracer, log.started),
        "backlog_peak": backlog_peak(phase.extra.get("backlog_timeline", [])),
        **phase.extra,
    }


def curve(values_s: Any) -> dict[str, float]:
    """Latency at each of the plot's percentiles (nearest rank), ms: ``{"p50": …, "p99.9": …}``."""
    import numpy as np

    ordered = np.sort(np.asarray(values_s, dtype=float))
    if not len(ordered):
        return {}
    ranks = [min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1)) for p in plots.PERCENTILES]
    return {f"p{p:g}": round(float(ordered[r]) * 1000, 2) for p, r in zip(plots.PERCENTILES, ranks, strict=True)}


def backlog_peak(samples: list[dict[str, Any]]) -> dict[str, int]:
    peak: dict[str, int] = {}
    for sample in samples:
        for key, value in sample.items():
            if key != "t":
                peak[key] = max(peak.get(key, 0), value)
    return peak


def timeline(phase: Phase, tracer: Tracer, start: float) -> list[dict[str, Any]]:
    """Per second of receipt: records, requests, p99 and max latency; shows whether a backlog grows."""
    buckets: dict[int, list[float]] = {}
    requests: dict[int, int] = {}
    for sink in phase.sinks:
        previous = None
        for evse, status, at in sink["records"]:
            second = int(at - start)
            latency = tracer.latency(evse, status, at)
            buckets.setdefault(second, []).append(latency if latency is not None else math.nan)
            if at != previous:  # the records of one request share its receipt time
                requests[second] = requests.get(second, 0) + 1
                previous = at
    rows = []
    for second in sorted(buckets):
        values = [v for v in buckets[second] if not math.isnan(v)]
        stats = percentiles(values)
        rows.append(
            {
                "second": second,
                "records": len(buckets[second]),
                "requests": requests.get(second, 0),
                "p50_ms": stats["p50"],
                "p99_ms": stats["p99"],
                "max_ms": stats["max"],
            }
        )
    return rows


# ---- the node ----------------------------------------------------------------------------------


class NodeProbe(Probe):
    """The node's backlogs (commands waiting in RabbitMQ, records waiting in the lanes' outboxes),
    the Redis commands issued meanwhile, and the node's ``evse.status.changed`` events (published by
    evse_push after a change is stored and queued), which split a record's latency in two."""

    def __init__(self, spec: NodeSpec, trace: bool) -> None:
        super().__init__()
        self.spec = spec
        self.trace = trace
        self.seen: list[tuple[str, str, float]] = []
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._outboxes: list[str] = []

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(AMQP_URL)
        self._channel = await self._connection.channel()
        if self.trace:
            channel = await self._connection.channel()
            # Exclusive and auto-delete: it disappears with the connection, whatever happens to the run.
            queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
            await queue.bind(self.spec.topology.events.name, routing_key="evse.status.changed")
            await queue.consume(self._on_event, no_ack=True)
        with contextlib.suppress(Exception):  # the outbox layout is the store's business: skip if it moved
            from shared.settings import PeerConfig
            from shared.stores.delivery import DeliveryStore
            from shared.stores.redis import KeySpace

            store = DeliveryStore(self.redis, KeySpace(self.spec.config()["redis"]["key_prefix"]))
            self._outboxes = [
                store.pending_key(PeerConfig.model_validate(p).key, "PushEvseStatus") for p in self.spec.peers
            ]
        await super().start()

    async def _on_event(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        now = time.monotonic()
        data = orjson.loads(message.body)["data"]
        self.seen.append((data["evse_id"], data["status"], now))

    async def sample(self) -> dict[str, Any]:
        assert self._channel is not None
        # On the underlying channel: aio_pika's own passive declare answers with a cached count.
        channel = await self._channel.get_underlay_channel()
        queue = await channel.queue_declare(
            self.spec.topology.command_queue(CommandType.CPO_EVSE_STATUS_SET).name, passive=True
        )
        result: dict[str, Any] = {"commands_queued": queue.message_count}
        if self._outboxes:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in self._outboxes:
                    pipe.hlen(key)
                sizes = await pipe.execute()
            result |= {"outbox_total": sum(sizes), "outbox_max": max(sizes)}
        return result

    async def stop(self) -> dict[str, Any]:
        extra = await super().stop()
        if self._connection:
            with contextlib.suppress(Exception):
                await self._connection.close()
        return extra


def node_peers(urls: list[str], batch_size: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"DE-{index:03d}",
            "role": "emp",
            "base_url": url,
            "inbound_token": f"bench-sink-{index:03d}-calls-cpo",
            "outbound_token": f"bench-cpo-calls-sink-{index:03d}",
            "push": ["PushEvseStatus"],
            "batch_size": batch_size,
        }
        for index, url in enumerate(urls)
    ]


async def run_node(
    args: argparse.Namespace,
    plan: Plan,
    sinks: SinkControl,
    artefacts: Path,
    peer_urls: list[str] | None = None,
    only: list[int] | None = None,
    later: list[int] | None = None,
    later_timeout: float = 0.0,
    log_suffix: str = ".node.log",
    keep: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One node, its peers ``peer_urls`` (default: every sink), measured on the sinks ``only``
    (default all) and, after them, the sinks ``later`` (see ``measure``)."""
    urls = peer_urls if peer_urls is not None else [sinks.url(i) for i in range(sinks.count)]
    spec = NodeSpec(
        "bench",
        operator_ids=[OPERATOR_ID],
        peers=node_peers(urls, args.batch_size),
        # The delivery settings of a production config (the test support's are tuned for fast retries).
        extra={
            "delivery": {
                name: value
                for name, value in (("linger_seconds", args.linger), ("concurrent_rounds", args.concurrent_rounds))
                if value is not None
            },
            "log_level": args.log_level,
        },
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-node-"))
    processes = NodeProcesses([spec], workdir)
    probe = NodeProbe(spec, trace=not args.no_trace)
    result: dict[str, Any] = {}
    try:
        started = time.monotonic()
        await processes.start(timeout=120)
        assert processes.process is not None
        services = {pid: procstats.label(pid) for pid in procstats.descendants(processes.process.pid)}
        result["startup_s"] = round(time.monotonic() - started, 2)
        url = f"{spec.internal_url}/commands/cpo.evse.status.set"
        headers = {"Authorization": f"Bearer {spec.internal_token}", "Content-Type": "application/json"}
        connector = aiohttp.TCPConnector(limit=args.max_in_flight + 4)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:

            async def submit(records: list[tuple[str, str]]) -> None:
                body = orjson.dumps({"records": [{"EvseID": e, "EvseStatus": s} for e, s in records]})
                async with http.post(url, data=body, headers=headers) as response:
                    text = await response.read()
                    if response.status != 202:
                        raise RuntimeError(f"HTTP {response.status}: {text[:200]!r}")

            async def prime(records: list[tuple[str, str]]) -> None:
                for start in range(0, len(records), PRIME_CHUNK):
                    await submit(records[start : start + PRIME_CHUNK])

            cpu_pids = {**services, **procstats.shared_services(), sinks.pid: "sinks"}
            wanted = {name.strip() for name in args.py_spy.split(",") if name.strip()}
            spies: list[tuple[str, Path, subprocess.Popen[bytes]]] = []

            def start_profiles() -> None:
                for pid, name in services.items():
                    if name in wanted:
                        spies.append((name, *start_py_spy(pid, args.duration, artefacts, log_suffix, name)))

            phase = await measure(
                args, plan, sinks, submit, prime, cpu_pids, probe, only, later, later_timeout, start_profiles
            )
            if spies:
                phase.extra["profile"] = finish_py_spy(spies)
            async with http.get(f"{spec.internal_url}/delivery", headers=headers) as response:
                lanes = orjson.loads(await response.read()) if response.status == 200 else []
        phase.extra["peak_rss_mib"] = procstats.peak_rss_mib(services)
        phase.extra["peak_rss_mib_total"] = round(sum(phase.extra["peak_rss_mib"].values()), 1)
        phase.extra["lanes_backlog_after"] = sum(int(lane.get("backlog") or 0) for lane in lanes)
        phase.extra["lanes_with_errors"] = sum(1 for lane in lanes if lane.get("last_error"))
        if probe.seen:
            stored, _ = Tracer(phase.log).latencies(probe.seen)
            phase.extra["changed_event_ms"] = percentiles(stored)
            phase.extra["changed_events"] = len(probe.seen)
        result.update(summarise(plan, phase))
        if keep is not None:
            keep["log"] = phase.log  # the send log, for the hub model
        return result
    finally:
        processes.stop()
        await cleanup([spec])
        with contextlib.suppress(OSError):
            shutil.copy(processes.log_path, artefacts.with_suffix(log_suffix))
        shutil.rmtree(workdir, ignore_errors=True)


def start_py_spy(
    pid: int, seconds: float, artefacts: Path, log_suffix: str, name: str
) -> tuple[Path, subprocess.Popen[bytes]]:
    """py-spy on one node process for ``seconds``, collapsed stacks to ``<artefacts>….<name>.pyspy.txt``."""
    out = artefacts.with_suffix(log_suffix.removesuffix(".node.log").removesuffix(".log") + f".{name}.pyspy.txt")
    command = [shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid)]
    command += ["--rate", "100", "--duration", str(max(1, int(seconds))), "--format", "raw", "--nonblocking"]
    process = subprocess.Popen([*command, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out, process


def finish_py_spy(spies: list[tuple[str, Path, subprocess.Popen[bytes]]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, out, process in spies:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.terminate()
        if out.exists():
            found[name] = {"file": out.name}
            with contextlib.suppress(Exception):  # the summary is a convenience: the file is the profile
                from bench.profile_summary import summarise as summarise_profile

                found[name] |= summarise_profile(out, top=15)
    return found


# ---- the baseline --------------------------------------------------------------------------------


class BaselineLane:
    """One sink's sender: sequential, batches what is pending, latest status wins."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str, batch_size: int) -> None:
        self.http = http
        self.url = url + PUSH_PATH
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.batch_size = batch_size
        self.pending: dict[str, str] = {}
        self.wake = asyncio.Event()
        self.failures = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                batch = dict(itertools.islice(self.pending.items(), self.batch_size))
                body = orjson.dumps(
                    {
                        "ActionType": "update",
                        "OperatorEvseStatus": {
                            "OperatorID": OPERATOR_ID,
                            "EvseStatusRecord": [{"EvseID": e, "EvseStatus": s} for e, s in batch.items()],
                        },
                    }
                )
                try:
                    async with self.http.post(self.url, data=body, headers=self.headers) as response:
                        answer = await response.read()
                        ok = response.status == 200 and orjson.loads(answer).get("Result") is True
                except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
                    ok = False
                if not ok:
                    self.failures += 1
                    await asyncio.sleep(0.2)
                    continue
                # Compare-and-delete, as the node's outbox does: a change that came in meanwhile stays.
                for evse, status in batch.items():
                    if self.pending.get(evse) == status:
                        del self.pending[evse]

    def add(self, records: list[tuple[str, str]]) -> None:
        self.pending.update(records)
        self.wake.set()


class BaselineProbe(Probe):
    def __init__(self, lanes: list[BaselineLane]) -> None:
        super().__init__()
        self.lanes = lanes

    async def sample(self) -> dict[str, Any]:
        sizes = [len(lane.pending) for lane in self.lanes]
        return {"outbox_total": sum(sizes), "outbox_max": max(sizes)}


async def run_baseline(args: argparse.Namespace, plan: Plan, sinks: SinkControl, artefacts: Path) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as http:
        lanes = [
            BaselineLane(http, sinks.url(i), f"bench-cpo-calls-sink-{i:03d}", args.batch_size)
            for i in range(sinks.count)
        ]

        async def submit(records: list[tuple[str, str]]) -> None:
            for lane in lanes:
                lane.add(records)

        try:
            cpu_pids = {sinks.pid: "sinks", **procstats.shared_services()}
            phase = await measure(args, plan, sinks, submit, submit, cpu_pids, BaselineProbe(lanes))
        finally:
            for lane in lanes:
                lane.task.cancel()
            await asyncio.gather(*(lane.task for lane in lanes), return_exceptions=True)
    phase.extra["send_failures"] = sum(lane.failures for lane in lanes)
    return summarise(plan, phase)


# ---- the hub model -------------------------------------------------------------------------------


def hub_model(log: SendLog, sinks: int, hub_latency_s: float) -> dict[str, Any]:
    """What the EMPs would see polling a hub every T s instead of getting the node's pushes.

    Each of the ``sinks`` EMPs polls at times φ + k·T, the phases spread over [0, T) (EMP n's phase
    uniform in the n-th 1/N of it; seeded, so a rerun draws the same phases). A change sent at s is
    at the hub at s + ``hub_latency_s`` and the EMP learns of it (or of a later status of the same
    EVSE) at its first poll after that: the delay
    is that poll minus s, i.e. uniform on [0, T] plus the hub's latency. A change is *seen* when the
    EVSE has not changed again before that poll (otherwise the EMP gets the later status instead).
    Computed from the same recorded send times as the node's latency; every acknowledged change ×
    every EMP counts once."""
    import numpy as np

    sent_all = np.asarray(log.sent_at, dtype=float)
    ok = ~np.isnan(np.asarray(log.acked_at, dtype=float)) & ~np.isnan(sent_all)
    if not ok.any():
        return {}
    index = np.nonzero(ok)[0]
    sent = sent_all[index]
    ready = sent + hub_latency_s
    # The next change of the same EVSE is E changes later (round robin); inf when there is none.
    following = index + log.plan.evse_count
    next_ready = np.full(len(index), np.inf)
    has_next = following < len(sent_all)
    next_ready[has_next] = sent_all[following[has_next]] + hub_latency_s
    next_ready[np.isnan(next_ready)] = np.inf
    rng = np.random.default_rng(HUB_MODEL_SEED)
    origin = log.started
    result: dict[str, Any] = {
        "model": "each EMP polls every T s at a random phase; delay = next poll after (send + hub latency) − send",
        "hub_latency_ms": round(hub_latency_s * 1000, 2),
        "emps": sinks,
        "seed": HUB_MODEL_SEED,
    }
    for interval in HUB_POLL_INTERVALS_S:
        # Stratified: one phase in each 1/N of [0, T), so 100 EMPs cover it evenly (plain uniform draws
        # of 100 phases put the p50 several seconds off T/2, depending on the seed).
        phases = (np.arange(sinks) + rng.uniform(0.0, 1.0, size=sinks)) / sinks * interval
        polls = origin + phases[None, :] + np.ceil((ready[:, None] - origin - phases[None, :]) / interval) * interval
        delays = (polls - sent[:, None]).ravel()
        seen = (next_ready[:, None] > polls).ravel()
        result[f"poll_{interval:g}s"] = {
            "interval_s": interval,
            "latency_ms": percentiles(delays.tolist()),
            "latency_curve_ms": curve(delays),
            "seen_fraction": round(float(seen.mean()), 4),
            "polls_per_s": round(sinks / interval, 3),
            "records_per_poll": log.plan.evse_count,
        }
    return result


# ---- the scenario --------------------------------------------------------------------------------


def workload(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    return {
        "sinks": args.sinks,
        "evses": args.evses,
        "rate": args.rate,
        "duration": args.duration,
        "batch_size": args.batch_size,
        "per_command": args.per_command,
        "max_in_flight": args.max_in_flight,
        "node_log_level": args.log_level,
        "node_linger_s": args.linger,
        "node_concurrent_rounds": args.concurrent_rounds,
        "changes": len(plan),
        "identification_window_s": plan.identification_window_s,
        "command_path": "HTTP internal API, POST /commands/cpo.evse.status.set",
    }


async def run(args: argparse.Namespace, artefacts: Path) -> dict[str, Any]:
    plan = Plan(args.evses, args.rate, args.duration)
    params = workload(args, plan)
    sinks = SinkControl(args.sinks)
    await sinks.start()
    keep: dict[str, Any] = {}
    try:
        node = await run_node(args, plan, sinks, artefacts, keep=keep)
        baseline = await run_baseline(args, plan, sinks, artefacts)
    finally:
        await sinks.stop()
    # The hub's own latency: one plain push hop (CPO → hub), as the baseline measured it just now.
    hub = hub_model(keep["log"], args.sinks, (baseline["latency_ms"]["p50"] or 0) / 1000)

    return {
        "params": params,
        "node": node,
        "baseline": baseline,
        "hub_model": hub,
        "ratios": {
            "p50": ratio_of(node, baseline, "latency_ms", "p50"),
            "p99": ratio_of(node, baseline, "latency_ms", "p99"),
            "throughput": ratio_of(node, baseline, "records_per_s"),
            "requests_per_s": ratio_of(node, baseline, "requests_per_s"),
        },
    }


def ratio_of(system: dict[str, Any], baseline: dict[str, Any], key: str, sub: str | None = None) -> float | None:
    a, b = (system[key][sub], baseline[key][sub]) if sub else (system[key], baseline[key])
    return ratio(a, b)


def table(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    node, base, ratios = result["node"], result["baseline"], result["ratios"]

    def ratio(value: float | None) -> str:
        return f"{value:.2f}x" if value is not None else ""

    rows = [
        ("latency p50 ms", fmt(node["latency_ms"]["p50"]), fmt(base["latency_ms"]["p50"]), ratio(ratios["p50"])),
        ("latency p95 ms", fmt(node["latency_ms"]["p95"]), fmt(base["latency_ms"]["p95"]), ""),
        ("latency p99 ms", fmt(node["latency_ms"]["p99"]), fmt(base["latency_ms"]["p99"]), ratio(ratios["p99"])),
        ("latency max ms", fmt(node["latency_ms"]["max"]), fmt(base["latency_ms"]["max"]), ""),
        ("worst sink p99 ms", fmt(node["worst_sink_p99_ms"]), fmt(base["worst_sink_p99_ms"]), ""),
        ("records/s delivered", fmt(node["records_per_s"]), fmt(base["records_per_s"]), ratio(ratios["throughput"])),
        ("requests/s", fmt(node["requests_per_s"]), fmt(base["requests_per_s"]), ratio(ratios["requests_per_s"])),
        ("records/request", fmt(node["records_per_request_mean"]), fmt(base["records_per_request_mean"]), ""),
        ("delivered fraction", fmt(node["delivered_fraction"]), fmt(base["delivered_fraction"]), ""),
        ("changes/s offered", fmt(node["changes_per_s_offered"]), fmt(base["changes_per_s_offered"]), ""),
        ("drain after last change s", fmt(node["drain_s"]), fmt(base["drain_s"]), ""),
        ("first change → last receipt s", fmt(node["window_s"]), fmt(base["window_s"]), ""),
        ("final state on every sink", fmt(node["final_state_ok"]), fmt(base["final_state_ok"]), ""),
        ("priming (all EVSEs to all sinks) s", fmt(node.get("prime_s")), fmt(base.get("prime_s")), ""),
        ("command failures", fmt(node["command_failures"]), fmt(base["command_failures"]), ""),
        ("command ack p99 ms", fmt(node["command_ack_ms"]["p99"]), "", ""),
    ]
    if "changed_event_ms" in node:
        rows.append(("evse.status.changed p99 ms", fmt(node["changed_event_ms"]["p99"]), "", ""))
    for model in (result.get("hub_model") or {}).values():
        if isinstance(model, dict) and "interval_s" in model:
            p50, p99 = model["latency_ms"]["p50"], model["latency_ms"]["p99"]
            vs = f"{p99 / node['latency_ms']['p99']:,.0f}x node" if p99 and node["latency_ms"]["p99"] else ""
            rows.append(
                (f"hub model, poll every {model['interval_s']:g} s: p50 / p99 ms", f"{fmt(p50)} / {fmt(p99)}", "", vs)
            )
    node_peak, base_peak = node["backlog_peak"], base["backlog_peak"]
    rows.append(("commands queued in RabbitMQ, peak", fmt(node_peak.get("commands_queued")), "", ""))
    rows.append(("outbox records, peak", fmt(node_peak.get("outbox_total")), fmt(base_peak.get("outbox_total")), ""))
    redis_calls = fmt(node.get("redis_calls_total")), fmt(base.get("redis_calls_total"))
    rows.append(("Redis calls, all clients", *redis_calls, ""))
    if node.get("redis_calls_total") and node["requests"]:
        rows.append(("  per node request", fmt(round(node["redis_calls_total"] / node["requests"], 1)), "", ""))
    rows.append(("peak RSS node MiB (sum)", fmt(node.get("peak_rss_mib_total")), "", ""))
    cpu_names = sorted(set(node["cpu_seconds"]) | set(base["cpu_seconds"]))
    for name in cpu_names:
        rows.append((f"CPU s {name}", fmt(node["cpu_seconds"].get(name)), fmt(base["cpu_seconds"].get(name)), ""))
    return rows


def _workload_text(params: dict[str, Any]) -> str:
    return f"{params['sinks']} peers, {params['evses']:,} EVSEs, {params['rate']:g}/s for {params['duration']:g} s"


def targets(result: dict[str, Any]) -> list[tuple[str, str, bool]]:
    node, base, params = result["node"], result["baseline"], result["params"]
    p99 = node["latency_ms"]["p99"]
    issue = params["sinks"] >= 100 and params["evses"] >= 10000 and params["rate"] >= 200
    suffix = "" if issue else " (smaller than issue #8's workload)"
    behind = node["final_state_behind_records"]
    return [
        (
            f"status fan-out p99 ≤ {TARGET_P99_MS:g} ms ({_workload_text(params)}){suffix}",
            f"{fmt(p99)} ms (baseline {fmt(base['latency_ms']['p99'])} ms)",
            p99 is not None and p99 <= TARGET_P99_MS,
        ),
        (
            "every peer ends with the latest status of every EVSE",
            "yes"
            if node["final_state_ok"]
            else f"no: {behind:,} records behind on {node['final_state_behind_sinks']} peers",
            bool(node["final_state_ok"]),
        ),
    ]


def plot(result: dict[str, Any], path: Path) -> Path:
    node, base = result["node"], result["baseline"]
    fig, (lat, per_second, throughput, backlog) = plots.figure(
        f"EVSE status fan-out, {_workload_text(result['params'])} — {plots.describe(result)}", panels=4, width=5.0
    )
    plots.percentile_points(lat, "node (push)", node.get("latency_curve_ms", {}))
    plots.percentile_points(lat, "baseline (bare aiohttp)", base.get("latency_curve_ms", {}))
    for model in (result.get("hub_model") or {}).values():
        if isinstance(model, dict) and "interval_s" in model:
            plots.percentile_points(lat, f"hub model, poll every {model['interval_s']:g} s", model["latency_curve_ms"])
    lat.set_yscale("log")
    lat.axhline(TARGET_P99_MS, linestyle="--", color="red", label=f"target p99 {TARGET_P99_MS:g} ms")
    lat.legend(fontsize="small")
    lat.set_title("latency: command → peer receipt")
    lat.tick_params(axis="x", labelrotation=60)
    for name, system in (("node", node), ("baseline", base)):
        rows = system.get("timeline", [])
        plots.timeline(per_second, f"{name} p99", [r["second"] for r in rows], [r["p99_ms"] or 0 for r in rows], "ms")
        plots.timeline(throughput, name, [r["second"] for r in rows], [r["records"] for r in rows], "records/s")
    per_second.set_title("p99 latency per second of receipt")
    throughput.set_title("records received per second (all peers)")
    for name, system in (("node", node), ("baseline", base)):
        samples = system.get("backlog_timeline", [])
        plots.timeline(
            backlog, f"{name} outbox", [x["t"] for x in samples], [x.get("outbox_total", 0) for x in samples], "records"
        )
    samples = node.get("backlog_timeline", [])
    if any("commands_queued" in x for x in samples):
        plots.timeline(
            backlog,
            "node commands in RabbitMQ",
            [x["t"] for x in samples],
            [x.get("commands_queued", 0) for x in samples],
            "records / commands",
        )
    backlog.set_title("backlog")
    return plots.save(fig, path)
