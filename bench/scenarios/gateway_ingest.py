"""gateway_ingest: an EMP node ingests PushEvseStatus and PushEvseData from a CPO peer.

System under test: one EMP node as real processes (``python -m shared.node``, own RabbitMQ/Redis name
prefix) with one CPO peer (``DE*ING``), whose bearer token the load generator uses. A push is
answered ``000`` only once evse_push stored it (gateway → RabbitMQ request/reply → evse_push →
Redis → reply), so an answered request is a durably accepted one.

Baseline: a bare Starlette endpoint (``python -m bench.bare_endpoint``: uvicorn, one process, uvloop,
httptools, like the gateway) that parses the JSON and answers an acknowledgement.

Load: ``--ingest-drivers`` load generator processes (``python -m bench.loadgen``). Per system and per
operation, (1) saturation: a closed loop of ``--ingest-concurrency`` connections for the duration →
requests/s; (2) an open loop at half of THAT system's saturation rate → latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import loadgen, plots, procstats
from bench.profile_summary import summarise as summarise_profile
from bench.workload import curve, fmt, percentiles
from shared.oicp.operations import OPERATIONS_BY_NAME
from tests.support.nodes import REPO, NodeProcesses, NodeSpec, cleanup, free_port

DESCRIPTION = (
    "gateway ingest: PushEvseStatus (1 record) / PushEvseData (100 records) into an EMP node, "
    "vs a bare Starlette endpoint"
)
SIZES: dict[str, dict[str, float]] = {
    "small": {"ingest_duration": 5, "ingest_warmup": 1},
    "large": {"ingest_duration": 30, "ingest_warmup": 3},
}
OPERATIONS = ("PushEvseStatus", "PushEvseData")
KIND = {"PushEvseStatus": "status", "PushEvseData": "data"}
EMP_ID = "DE-BEN"
CPO_ID = "DE*ING"
CPO_TOKEN = "bench-ing-calls-emp"
START_DELAY_S = 1.0  # between spawning the drivers and their common start (they connect meanwhile)
PRIME_STATUS_CHUNK = 500
TARGET_RATIO = 0.5
TARGET_P99_MS = 25.0


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--ingest-duration", type=float, default=None, help="seconds per phase (small 5, large 30)")
    group.add_argument("--ingest-warmup", type=float, default=None, help="unmeasured seconds before saturation")
    group.add_argument("--ingest-concurrency", type=int, default=32, help="connections of the closed loop (32)")
    group.add_argument(
        "--ingest-operations",
        nargs="+",
        choices=OPERATIONS,
        default=list(OPERATIONS),
        help="which pushes to measure (both)",
    )
    group.add_argument("--ingest-drivers", type=int, default=1, help="load generator processes (1)")
    group.add_argument("--ingest-status-evses", type=int, default=5000, help="EVSEs the status updates cycle over")
    group.add_argument("--ingest-data-records", type=int, default=100, help="records per PushEvseData (100)")
    group.add_argument("--ingest-data-blocks", type=int, default=64, help="distinct PushEvseData record sets (64)")
    group.add_argument("--ingest-max-connections", type=int, default=256, help="per driver, open loop (256)")
    group.add_argument("--ingest-log-level", default="INFO", help="the node's log_level (INFO, its default)")
    group.add_argument(
        "--ingest-profile",
        action="store_true",
        help="py-spy the gateway and evse_push during the node's saturation phases (perturbs the figures)",
    )
    group.add_argument("--ingest-skip-baseline", action="store_true", help="node only (profiling, debugging)")


def resolve(args: argparse.Namespace, size: str) -> None:
    for key, value in SIZES[size].items():
        if getattr(args, key) is None:
            setattr(args, key, value)


# ---- driving one phase ---------------------------------------------------------------------------


class Target:
    """A system under load: where its OICP port is and which processes are its own."""

    def __init__(self, name: str, port: int, services: dict[int, str]) -> None:
        self.name = name
        self.port = port
        self.services = services
        self.next_index = 0  # request index: every phase continues where the last one stopped


async def drive(
    args: argparse.Namespace,
    target: Target,
    operation: str,
    mode: str,
    rate: float | None = None,
    profile: dict[str, Path] | None = None,
) -> dict[str, Any]:
    drivers = max(1, args.ingest_drivers)
    duration = args.ingest_duration
    warmup = args.ingest_warmup if mode == "closed" else 0.0
    start_at = time.monotonic() + START_DELAY_S
    base = {
        "host": "127.0.0.1",
        "port": target.port,
        "path": OPERATIONS_BY_NAME[operation].path.format(operatorID=CPO_ID),
        "token": CPO_TOKEN,
        "operator": CPO_ID,
        "kind": KIND[operation],
        "evses": args.ingest_status_evses,
        "blocks": args.ingest_data_blocks,
        "records": args.ingest_data_records,
        "mode": mode,
        "duration": duration,
        "warmup": warmup,
        "max_connections": args.ingest_max_connections,
        "stride": drivers,
        "start_at": start_at,
    }
    jobs = []
    for j in range(drivers):
        share = args.ingest_concurrency // drivers + (1 if j < args.ingest_concurrency % drivers else 0)
        jobs.append(
            {
                **base,
                "first_index": target.next_index + j,
                "concurrency": max(1, share),
                "rate": (rate or 0.0) / drivers,
            }
        )
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.loadgen",
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in jobs
    ]
    spies: list[subprocess.Popen[bytes]] = []
    try:
        communicate = [
            asyncio.create_task(proc.communicate(orjson.dumps(job))) for proc, job in zip(procs, jobs, strict=True)
        ]
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        meter = procstats.CpuMeter({**target.services, **procstats.shared_services()})
        meter.start()
        started = time.monotonic()
        if profile:
            spies = [start_py_spy(pid, path, warmup, duration) for pid, path in profile.items()]
        outputs = await asyncio.gather(*communicate)
        elapsed = time.monotonic() - started
        cpu = meter.stop()
        for spy in spies:
            await asyncio.to_thread(spy.wait, duration + 30)
    finally:
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        for spy in spies:
            if spy.poll() is None:
                spy.kill()
    results = []
    for proc, (stdout, _) in zip(procs, outputs, strict=True):
        if proc.returncode != 0 or not stdout:
            raise RuntimeError(f"load generator exited with {proc.returncode}")
        results.append(orjson.loads(stdout))
    target.next_index += drivers * max(r["issued"] for r in results)
    return summarise_phase(mode, rate, duration, elapsed, results, cpu)


def summarise_phase(
    mode: str, rate: float | None, duration: float, elapsed: float, results: list[dict[str, Any]], cpu: dict[str, Any]
) -> dict[str, Any]:
    latencies = sorted(v for r in results for v in r["latencies"])
    ok = sum(r["ok"] for r in results)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    driver_cpu = sum(r["cpu_s"] for r in results)
    cpu = {**cpu, "load generators": round(driver_cpu, 2)}
    cpu["others"] = round(cpu["machine"] - sum(v for k, v in cpu.items() if k != "machine"), 2)
    phase: dict[str, Any] = {
        "mode": mode,
        "requests_ok": ok,
        "failures": sum(r["failures"] for r in results),
        "errors": dict(errors.most_common(10)),
        "requests_per_s": round(ok / duration, 1),
        "latency_ms": percentiles(latencies, quantiles=(50, 90, 99)),
        "latency_curve_ms": curve(latencies),
        "elapsed_s": round(elapsed, 2),
        "cpu_seconds": cpu,
        # share of one core the load generators used: close to the number of drivers means they were
        # the bottleneck, not the system under test
        "load_generator_cores": round(driver_cpu / elapsed, 2) if elapsed else None,
        "late_start_s": max(r["late_start_s"] for r in results),
    }
    if mode == "open":
        phase["offered_per_s"] = round(rate or 0.0, 1)
        phase["send_lateness_p99_ms"] = max((r["lateness_ms"]["p99"] or 0.0) for r in results)
        phase["send_lateness_max_ms"] = max((r["lateness_ms"]["max"] or 0.0) for r in results)
        phase["connections"] = sum(r["connections"] for r in results)
    return phase


def start_py_spy(pid: int, path: Path, warmup: float, duration: float) -> subprocess.Popen[bytes]:
    """py-spy record (folded stacks) of ``pid`` over the measured window of a saturation phase."""
    py_spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(warmup + duration))),
            "--rate",
            "100",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def profile_shares(path: Path, top: int = 25) -> dict[str, Any]:
    """``bench.profile_summary.summarise`` of a py-spy file as this scenario's JSON has it: where the
    samples are (``self``) and what they run under (``inclusive``), by function, as shares of all
    samples (0–1); no samples when py-spy wrote no file."""
    try:
        summary = summarise_profile(path, top)
    except OSError:
        return {"samples": 0, "self": {}, "inclusive": {}}
    return {
        "samples": summary["samples"],
        "self": {name: round(pct / 100, 3) for name, pct in summary["self_pct"]},
        "inclusive": {name: round(pct / 100, 3) for name, pct in summary["inclusive_pct"]},
    }


# ---- priming -----------------------------------------------------------------------------------


async def prime(args: argparse.Namespace, port: int, operation: str) -> None:
    """Create every record the phases will update (``update`` of an unknown EVSE is refused with 009)."""
    url = f"http://127.0.0.1:{port}" + OPERATIONS_BY_NAME[operation].path.format(operatorID=CPO_ID)
    headers = {"Authorization": f"Bearer {CPO_TOKEN}", "Content-Type": "application/json"}
    bodies: list[dict[str, Any]] = []
    if operation == "PushEvseStatus":
        evses = [loadgen.status_evse(CPO_ID, n) for n in range(args.ingest_status_evses)]
        for start in range(0, len(evses), PRIME_STATUS_CHUNK):
            records = [(e, loadgen.STATUS_CYCLE[0]) for e in evses[start : start + PRIME_STATUS_CHUNK]]
            bodies.append(loadgen.status_body(CPO_ID, "insert", records))
    else:
        size = args.ingest_data_records
        for block in range(args.ingest_data_blocks):
            ids = [loadgen.data_evse(CPO_ID, block * size + i) for i in range(size)]
            bodies.append(loadgen.data_body(CPO_ID, "insert", ids, "Primed"))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        for body in bodies:
            async with http.post(url, data=orjson.dumps(body), headers=headers) as response:
                answer = await response.read()
                if response.status != 200 or orjson.loads(answer)["StatusCode"]["Code"] != "000":
                    raise RuntimeError(f"priming {operation} failed: HTTP {response.status} {answer[:300]!r}")


async def run_phases(args: argparse.Namespace, target: Target, profile_base: Path | None) -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for operation in args.ingest_operations:
        await prime(args, target.port, operation)
        profile = None
        if profile_base is not None:
            profile = {
                pid: profile_base.with_suffix(f".{operation}.{name}.pyspy.txt")
                for pid, name in target.services.items()
                if name in ("gateway", "evse_push")
            }
        saturation = await drive(args, target, operation, "closed", profile=profile)
        if profile:
            saturation["profile"] = {
                target.services[pid]: {"file": path.name, **profile_shares(path)} for pid, path in profile.items()
            }
        print(f"  {target.name} {operation}: saturation {saturation['requests_per_s']:,.1f} req/s", flush=True)
        rate = max(1.0, saturation["requests_per_s"] / 2)
        half = await drive(args, target, operation, "open", rate=rate)
        print(
            f"  {target.name} {operation}: {rate:,.1f} req/s → p50 {half['latency_ms']['p50']} ms, "
            f"p99 {half['latency_ms']['p99']} ms, {half['failures']} failures",
            flush=True,
        )
        operations[operation] = {"saturation": saturation, "half_saturation": half}
    return operations


def cpu_totals(operations: dict[str, Any]) -> dict[str, float]:
    totals: Counter[str] = Counter()
    for phases in operations.values():
        for phase in phases.values():
            totals.update(phase["cpu_seconds"])
    return {k: round(v, 2) for k, v in totals.items()}


# ---- the node ----------------------------------------------------------------------------------


async def run_node(args: argparse.Namespace, artefacts: Path) -> dict[str, Any]:
    spec = NodeSpec(
        "bench",
        provider_ids=[EMP_ID],
        peers=[
            {
                "id": CPO_ID,
                "role": "cpo",
                "base_url": "http://127.0.0.1:9",  # never called: the node only receives in this scenario
                "inbound_token": CPO_TOKEN,
                "outbound_token": "bench-emp-calls-ing",
            }
        ],
        # The production delivery settings (the test support's are tuned for fast retries).
        extra={"delivery": {}, "log_level": args.ingest_log_level},
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-node-"))
    processes = NodeProcesses([spec], workdir)
    try:
        started = time.monotonic()
        await processes.start(timeout=120)
        assert processes.process is not None
        services = {pid: procstats.label(pid) for pid in procstats.descendants(processes.process.pid)}
        startup = round(time.monotonic() - started, 2)
        target = Target("node", spec.oicp_port, services)
        operations = await run_phases(args, target, artefacts if args.ingest_profile else None)
        rss = procstats.peak_rss_mib(services)
        return {
            "startup_s": startup,
            "operations": operations,
            "peak_rss_mib": rss,
            "peak_rss_mib_total": round(sum(rss.values()), 1),
            "cpu_seconds_total": cpu_totals(operations),
        }
    finally:
        processes.stop()
        await cleanup([spec])
        with contextlib.suppress(OSError):
            shutil.copy(processes.log_path, artefacts.with_suffix(".node.log"))
        shutil.rmtree(workdir, ignore_errors=True)


# ---- the baseline --------------------------------------------------------------------------------


async def wait_listening(port: int, process: asyncio.subprocess.Process, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while True:
        if process.returncode is not None:
            raise RuntimeError(f"the bare endpoint exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the bare endpoint is not listening on {port} after {within}s")
        await asyncio.sleep(0.1)


async def run_baseline(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.bare_endpoint", str(port), cwd=REPO)
    try:
        await wait_listening(port, process)
        services = {process.pid: "bare endpoint"}
        operations = await run_phases(args, Target("baseline", port, services), None)
        rss = procstats.peak_rss_mib(services)
        return {
            "operations": operations,
            "peak_rss_mib": rss,
            "peak_rss_mib_total": round(sum(rss.values()), 1),
            "cpu_seconds_total": cpu_totals(operations),
        }
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()


# ---- the scenario --------------------------------------------------------------------------------


async def run(args: argparse.Namespace, artefacts: Path) -> dict[str, Any]:
    params = {
        "operations": args.ingest_operations,
        "duration": args.ingest_duration,
        "warmup": args.ingest_warmup,
        "concurrency": args.ingest_concurrency,
        "drivers": args.ingest_drivers,
        "status_evses": args.ingest_status_evses,
        "data_records_per_request": args.ingest_data_records,
        "data_blocks": args.ingest_data_blocks,
        "node_log_level": args.ingest_log_level,
        "profiled": args.ingest_profile,
        "workload": {
            "PushEvseStatus": "update, 1 record: EVSE k mod E to the next status of a 5-status cycle",
            "PushEvseData": "update, 100 records: block k mod B with station name 'Station k'",
        },
    }
    print("  node …", flush=True)
    node = await run_node(args, artefacts)
    baseline: dict[str, Any] | None = None
    if not args.ingest_skip_baseline:
        print("  baseline …", flush=True)
        baseline = await run_baseline(args)
    ratios: dict[str, float | None] = {}
    for operation in args.ingest_operations:
        a = node["operations"][operation]["saturation"]["requests_per_s"]
        b = baseline["operations"][operation]["saturation"]["requests_per_s"] if baseline else None
        ratios[operation] = round(a / b, 3) if a is not None and b else None
    return {"params": params, "node": node, "baseline": baseline, "ratios": {"requests_per_s": ratios}}


def table(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    node, base = result["node"], result["baseline"] or {"operations": {}, "cpu_seconds_total": {}}
    rows: list[tuple[str, str, str, str]] = []
    for operation, phases in node["operations"].items():
        other = base["operations"].get(operation, {})
        ns, bs = phases["saturation"], other.get("saturation", {})
        nh, bh = phases["half_saturation"], other.get("half_saturation", {})
        ratio = result["ratios"]["requests_per_s"].get(operation)
        rows += [
            (
                f"{operation} saturation req/s",
                fmt(ns["requests_per_s"]),
                fmt(bs.get("requests_per_s")),
                f"{ratio:.2f}x" if ratio is not None else "",
            ),
            (
                "  latency p50 / p99 at saturation ms",
                f"{fmt(ns['latency_ms']['p50'])} / {fmt(ns['latency_ms']['p99'])}",
                f"{fmt(bs.get('latency_ms', {}).get('p50'))} / {fmt(bs.get('latency_ms', {}).get('p99'))}",
                "",
            ),
            ("  failures at saturation", fmt(ns["failures"]), fmt(bs.get("failures")), ""),
            (
                "  load generator cores at saturation",
                fmt(ns["load_generator_cores"]),
                fmt(bs.get("load_generator_cores")),
                "",
            ),
            ("  half-saturation rate req/s", fmt(nh["offered_per_s"]), fmt(bh.get("offered_per_s")), ""),
        ]
        for key in ("p50", "p90", "p99", "max"):
            rows.append(
                (
                    f"  latency {key} at half ms",
                    fmt(nh["latency_ms"][key]),
                    fmt(bh.get("latency_ms", {}).get(key)),
                    "",
                )
            )
        rows.append(("  failures at half", fmt(nh["failures"]), fmt(bh.get("failures")), ""))
        rows.append(
            ("  send lateness p99 ms", fmt(nh["send_lateness_p99_ms"]), fmt(bh.get("send_lateness_p99_ms")), "")
        )
    rows.append(("peak RSS MiB (sum)", fmt(node["peak_rss_mib_total"]), fmt(base.get("peak_rss_mib_total")), ""))
    for name, value in node["peak_rss_mib"].items():
        rows.append((f"  peak RSS {name} MiB", fmt(value), "", ""))
    names = sorted(set(node["cpu_seconds_total"]) | set(base["cpu_seconds_total"]))
    for name in names:
        rows.append(
            (f"CPU s {name}", fmt(node["cpu_seconds_total"].get(name)), fmt(base["cpu_seconds_total"].get(name)), "")
        )
    return rows


def targets(result: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Issue #8: requests/s ≥ 0.5 of the bare endpoint's; p99 ≤ 25 ms at half the saturation rate."""
    rows: list[tuple[str, str, bool]] = []
    base = result["baseline"]
    for operation, phases in result["node"]["operations"].items():
        ratio = result["ratios"]["requests_per_s"].get(operation)
        node_rps = phases["saturation"]["requests_per_s"]
        if base:
            base_rps = base["operations"][operation]["saturation"]["requests_per_s"]
            measured = f"{fmt(ratio)} ({node_rps:,.0f} / {base_rps:,.0f} req/s)"
            rows.append((f"{operation} req/s node/bare ≥ {TARGET_RATIO}", measured, (ratio or 0.0) >= TARGET_RATIO))
        half = phases["half_saturation"]
        p99 = half["latency_ms"]["p99"]
        measured = f"{fmt(p99)} ms at {half['offered_per_s']:,.0f} req/s"
        if half["failures"]:
            measured += f", {half['failures']} failures"
        met = p99 is not None and p99 <= TARGET_P99_MS and not half["failures"]
        rows.append((f"{operation} p99 at half saturation ≤ {TARGET_P99_MS:g} ms", measured, met))
    return rows


def plot(result: dict[str, Any], path: Path) -> Path:
    node, base = result["node"], result["baseline"]
    operations = list(node["operations"])
    fig, axes = plots.figure(f"gateway ingest — {plots.describe(result)}", panels=1 + len(operations))
    rps: dict[str, float] = {}
    for operation in operations:
        short = KIND[operation]
        rps[f"{short}\nnode"] = node["operations"][operation]["saturation"]["requests_per_s"]
        if base:
            rps[f"{short}\nbare"] = base["operations"][operation]["saturation"]["requests_per_s"]
    plots.bars(axes[0], rps, "requests/s at saturation (log)")
    axes[0].set_yscale("log")
    axes[0].set_title("saturation (closed loop)")
    for ax, operation in zip(axes[1:], operations, strict=True):
        for label, system in (("node", node), ("bare endpoint", base)):
            if system:
                half = system["operations"][operation]["half_saturation"]
                plots.percentile_points(ax, f"{label} @ {half['offered_per_s']:,.0f}/s", half["latency_curve_ms"])
        ax.axhline(TARGET_P99_MS, linestyle="--", color="red", label=f"target p99 {TARGET_P99_MS:g} ms")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title(f"{operation} latency at half saturation")
        ax.tick_params(axis="x", labelrotation=45)
    return plots.save(fig, path)
