"""full_load: a CPO's whole EVSE data set pushed into an EMP node (PushEvseData ``fullLoad``), and the
same set pulled by PullEvseData in pages.

System under test, two real nodes (``python -m shared.node`` each, own RabbitMQ/Redis name prefixes):

* **ingest** — the EMP node (provider ``DE-BEN``). The benchmark is its CPO peer ``DE*BEN`` and pushes
  the records over HTTP with the peer's token, one request at a time (OICP: pushes of one operation are
  strictly sequential), the first request ``fullLoad`` and the others ``insert`` — the node's own
  delivery lanes send a resync the same way. OICP states no request size limit; the node's
  ``oicp.max_body_bytes`` (4 MiB by default, about 3,500 records) is raised here to fit
  ``--request-size``.
* **pull** — PullEvseData is the CPO face's operation (an EMP pulls from a CPO; the EMP node does not
  serve the records it received), so the same records are loaded into a CPO node's own data
  (``cpo.evse.data.set`` on its internal API, the same bodies; timed, no target) and the benchmark, as
  its EMP peer ``DE-BEN``, pulls every page of ``--page-size`` in order, no filter.

Baseline: the same bodies and pages against ``bench.bare_oicp_server`` (one aiohttp process: JSON parse,
a dict per operator, pages sliced from the EvseID-sorted list) — what the job costs without schema
validation, broker, worker, Redis and indexes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis

from bench import plots, procstats
from bench.bare_oicp_server import BareServer
from bench.workload import fmt, percentiles, ratio
from shared.oicp.operations import OPERATIONS_BY_NAME
from tests.support.nodes import REDIS_URL, NodeProcesses, NodeSpec, cleanup

DESCRIPTION = "EVSE data fullLoad: N records pushed into an EMP node, pulled by PullEvseData pages, vs a bare dict"
SIZES: dict[str, dict[str, Any]] = {"small": {"records": 20_000}, "large": {"records": 100_000}}
OPERATOR_ID, OPERATOR_NAME, PROVIDER_ID = "DE*BEN", "Bench Charging", "DE-BEN"
CPO_CALLS_EMP, EMP_CALLS_CPO = "bench-cpo-calls-emp", "bench-emp-calls-cpo"
PUSH_PATH = OPERATIONS_BY_NAME["PushEvseData"].path.format(operatorID=OPERATOR_ID)
PULL_PATH = OPERATIONS_BY_NAME["PullEvseData"].path.format(providerID=PROVIDER_ID)
TARGET_INGEST_S, TARGET_PULL_S, TARGET_PAGE_P99_MS, TARGET_RECORDS = 20.0, 10.0, 150.0, 100_000

# ---- the records ---------------------------------------------------------------------------------

CITIES = [  # (city, postal code prefix, latitude, longitude)
    ("Berlin", "10", 52.52, 13.405),
    ("Hamburg", "20", 53.551, 9.994),
    ("Munich", "80", 48.137, 11.575),
    ("Cologne", "50", 50.938, 6.960),
    ("Frankfurt am Main", "60", 50.110, 8.682),
    ("Stuttgart", "70", 48.776, 9.183),
    ("Leipzig", "04", 51.340, 12.375),
    ("Dresden", "01", 51.050, 13.738),
    ("Hannover", "30", 52.376, 9.732),
    ("Nuremberg", "90", 49.452, 11.077),
]
STREETS = ["Hauptstrasse", "Bahnhofstrasse", "Schulstrasse", "Gartenweg", "Industriestrasse", "Marktplatz"]
FACILITIES = [
    (["Type 2 Outlet"], {"PowerType": "AC_3_PHASE", "Power": 22}),
    (["Type 2 Outlet"], {"PowerType": "AC_3_PHASE", "Power": 11}),
    (["CCS Combo 2 Plug (Cable Attached)"], {"PowerType": "DC", "Power": 150}),
    (["CCS Combo 2 Plug (Cable Attached)", "CHAdeMO"], {"PowerType": "DC", "Power": 50}),
]
AUTH_MODES = [["NFC RFID Classic"], ["NFC RFID Classic", "REMOTE"], ["REMOTE", "Direct Payment"]]


def evse_record(i: int, rng: random.Random) -> dict[str, Any]:
    """EVSE ``i`` (two per station), every required field and a few optional ones, all varied."""
    station = i // 2
    city, postal, lat, lon = CITIES[station % len(CITIES)]
    plugs, facility = FACILITIES[station % len(FACILITIES)]
    open_24 = station % 5 != 0
    record: dict[str, Any] = {
        "EvseID": f"{OPERATOR_ID}*E{i:07d}",
        "ChargingPoolID": f"DE*BEN*P{station // 4:06d}",
        "ChargingStationID": f"ST{station:07d}",
        "ChargingStationNames": [{"lang": "de", "value": f"{city} {STREETS[station % len(STREETS)]} {station}"}],
        "HardwareManufacturer": "Bench Chargers GmbH",
        "Address": {
            "Country": "DEU",
            "City": city,
            "Street": STREETS[station % len(STREETS)],
            "PostalCode": f"{postal}{station % 1000:03d}",
            "HouseNum": str(1 + station % 200),
            "TimeZone": "UTC+01:00",
        },
        "GeoCoordinates": {
            "DecimalDegree": {
                "Latitude": f"{lat + rng.uniform(-0.3, 0.3):.6f}",
                "Longitude": f"{lon + rng.uniform(-0.4, 0.4):.6f}",
            }
        },
        "Plugs": plugs,
        "ChargingFacilities": [facility],
        "RenewableEnergy": station % 3 == 0,
        "CalibrationLawDataAvailability": "Local" if facility["PowerType"] != "DC" else "External",
        "AuthenticationModes": AUTH_MODES[station % len(AUTH_MODES)],
        "PaymentOptions": ["Contract"] if station % 4 else ["Contract", "Direct"],
        "ValueAddedServices": ["Reservation", "DynamicPricing"] if station % 2 else ["None"],
        "Accessibility": "Free publicly accessible" if station % 7 else "Restricted access",
        "HotlinePhoneNumber": "+4930123456",
        "IsOpen24Hours": open_24,
        "IsHubjectCompatible": True,
        "DynamicInfoAvailable": "true",
    }
    if not open_24:
        record["OpeningTimes"] = [{"Period": [{"begin": "07:00", "end": "22:00"}], "on": "Everyday"}]
    return record


def push_bodies(records: int, request_size: int) -> list[bytes]:
    """The fullLoad as sent: the first request ``fullLoad``, the others ``insert``."""
    rng = random.Random(4)
    bodies = []
    for start in range(0, max(records, 1), request_size):
        chunk = [evse_record(i, rng) for i in range(start, min(records, start + request_size))]
        body = {
            "ActionType": "fullLoad" if start == 0 else "insert",
            "OperatorEvseData": {"OperatorID": OPERATOR_ID, "OperatorName": OPERATOR_NAME, "EvseDataRecord": chunk},
        }
        bodies.append(orjson.dumps(body))
    return bodies


# ---- options -------------------------------------------------------------------------------------


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--records", type=int, default=None, help="EVSE data records (small 20,000, large 100,000)")
    group.add_argument("--request-size", type=int, default=2000, help="records per PushEvseData request (2000)")
    group.add_argument("--page-size", type=int, default=2000, help="records per PullEvseData page (2000, the max)")
    group.add_argument("--full-load-log-level", default="INFO", help="the nodes' log_level (INFO)")


def resolve(args: argparse.Namespace, size: str) -> None:
    for key, value in SIZES[size].items():
        if getattr(args, key) is None:
            setattr(args, key, value)


# ---- the two phases, the same for node and baseline ----------------------------------------------


async def ingest(http: aiohttp.ClientSession, url: str, headers: dict[str, str], bodies: list[bytes]) -> dict[str, Any]:
    """The bodies one at a time; per request (start offset s, duration ms, answer code)."""
    timeline: list[list[Any]] = []
    errors: list[str] = []
    started = time.monotonic()
    for body in bodies:
        sent = time.monotonic()
        async with http.post(url, data=body, headers=headers) as response:
            raw = await response.read()
        done = time.monotonic()
        code = str(response.status)  # the internal API answers 200 without an OICP StatusCode
        with contextlib.suppress(Exception):
            code = orjson.loads(raw)["StatusCode"]["Code"]
        if response.status != 200 or code not in ("000", "200"):
            errors.append(f"HTTP {response.status}: {raw[:200]!r}")
        timeline.append([round(sent - started, 4), round((done - sent) * 1000, 2), code])
    total = time.monotonic() - started
    return {
        "requests": len(bodies),
        "total_s": round(total, 3),
        "request_ms": percentiles([t[1] / 1000 for t in timeline]),
        "timeline": timeline,
        "failures": len(errors),
        "errors": errors[:5],
    }


async def pull(http: aiohttp.ClientSession, url: str, headers: dict[str, str], page_size: int) -> dict[str, Any]:
    """Every page in order, until ``last``; page latency = request sent → whole answer read."""
    body = orjson.dumps({"ProviderID": PROVIDER_ID, "GeoCoordinatesResponseFormat": "DecimalDegree"})
    latencies: list[float] = []
    ids: list[str] = []
    total_elements = None
    errors: list[str] = []
    started = time.monotonic()
    page = 0
    while True:
        sent = time.monotonic()
        async with http.post(f"{url}?page={page}&size={page_size}", data=body, headers=headers) as response:
            raw = await response.read()
        latencies.append(time.monotonic() - sent)
        answer = orjson.loads(raw)
        if response.status != 200 or "content" not in answer:
            errors.append(f"HTTP {response.status}: {raw[:200]!r}")
            break
        total_elements = answer["totalElements"]
        ids += [r["EvseID"] for r in answer["content"]]
        if answer["last"] or not answer["content"]:
            break
        page += 1
    total = time.monotonic() - started
    return {
        "pages": len(latencies),
        "total_s": round(total, 3),
        "page_ms": percentiles(latencies),
        "page_latencies_ms": [round(v * 1000, 2) for v in latencies],
        "total_elements": total_elements,
        "records": len(ids),
        "distinct": len(set(ids)),
        "in_order": ids == sorted(ids),
        "failures": len(errors),
        "errors": errors[:5],
    }


async def redis_usage(client: aioredis.Redis, prefix: str) -> dict[str, Any]:
    """Keys under the node's prefix and their ``MEMORY USAGE`` (Redis's estimate, sampled for big
    hashes and sets), in MiB."""
    total = keys = 0
    async for key in client.scan_iter(match=f"{prefix}*", count=1000):
        keys += 1
        total += int(await client.memory_usage(key) or 0)
    return {"keys": keys, "mib": round(total / 2**20, 1)}


# ---- the node ------------------------------------------------------------------------------------


async def run_node(args: argparse.Namespace, bodies: list[bytes], artefacts: Path) -> dict[str, Any]:
    max_body = max(4 * 1024 * 1024, 2 * max(len(b) for b in bodies))
    emp = NodeSpec("flemp", provider_ids=[PROVIDER_ID])
    cpo = NodeSpec("flcpo", operator_ids=[OPERATOR_ID])
    emp.peers = [{"id": OPERATOR_ID, "role": "cpo", "base_url": cpo.oicp_url, "inbound_token": CPO_CALLS_EMP}]
    # The CPO node pushes nothing (push: []): the EMP node's set comes from the benchmark alone.
    cpo.peers = [{"id": PROVIDER_ID, "role": "emp", "base_url": emp.oicp_url, "inbound_token": EMP_CALLS_CPO}]
    for spec in (emp, cpo):
        # The production delivery defaults; rate limits stay off (NodeSpec), the body limit fits the requests.
        oicp = {"host": "127.0.0.1", "port": spec.oicp_port, "max_body_bytes": max_body}
        spec.extra = {"delivery": {}, "log_level": args.full_load_log_level, "oicp": oicp}
    workdir = Path(tempfile.mkdtemp(prefix="bench-node-"))
    emp_processes, cpo_processes = NodeProcesses([emp], workdir), NodeProcesses([cpo], workdir)
    client = aioredis.from_url(REDIS_URL)
    result: dict[str, Any] = {"oicp_max_body_bytes": max_body}
    try:
        await asyncio.gather(emp_processes.start(timeout=120), cpo_processes.start(timeout=120))
        services: dict[str, dict[int, str]] = {}
        for name, processes in (("emp", emp_processes), ("cpo", cpo_processes)):
            assert processes.process is not None
            services[name] = {pid: procstats.label(pid) for pid in procstats.descendants(processes.process.pid)}
        shared = procstats.shared_services()
        used_before = int((await client.info("memory"))["used_memory"])
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            headers = {"Authorization": f"Bearer {CPO_CALLS_EMP}", "Content-Type": "application/json"}
            meter = procstats.CpuMeter({**{p: f"emp {n}" for p, n in services["emp"].items()}, **shared})
            meter.start()
            result["ingest"] = await ingest(http, emp.oicp_url + PUSH_PATH, headers, bodies)
            result["ingest"]["cpu_seconds"] = meter.stop()
            result["ingest"]["stored"] = await count_live(client, f"{emp.config()['redis']['key_prefix']}", "roaming")
            result["redis_emp"] = await redis_usage(client, emp.config()["redis"]["key_prefix"])
            result["redis_used_memory_delta_mib"] = round(
                (int((await client.info("memory"))["used_memory"]) - used_before) / 2**20, 1
            )

            internal = {"Authorization": f"Bearer {cpo.internal_token}", "Content-Type": "application/json"}
            meter = procstats.CpuMeter({**{p: f"cpo {n}" for p, n in services["cpo"].items()}, **shared})
            meter.start()
            result["own_load"] = await ingest(http, f"{cpo.internal_url}/commands/cpo.evse.data.set", internal, bodies)
            result["own_load"]["cpu_seconds"] = meter.stop()
            result["own_load"]["stored"] = await count_live(client, cpo.config()["redis"]["key_prefix"], "own")
            result["redis_cpo"] = await redis_usage(client, cpo.config()["redis"]["key_prefix"])

            headers = {"Authorization": f"Bearer {EMP_CALLS_CPO}", "Content-Type": "application/json"}
            meter = procstats.CpuMeter({**{p: f"cpo {n}" for p, n in services["cpo"].items()}, **shared})
            meter.start()
            result["pull"] = await pull(http, cpo.oicp_url + PULL_PATH, headers, args.page_size)
            result["pull"]["cpu_seconds"] = meter.stop()
        result["peak_rss_mib"] = {
            f"{node} {name}": v for node, pids in services.items() for name, v in procstats.peak_rss_mib(pids).items()
        }
        result["pids"] = {node: {str(p): n for p, n in pids.items()} for node, pids in services.items()}
        return result
    finally:
        emp_processes.stop()
        cpo_processes.stop()
        await cleanup([emp, cpo])
        await client.aclose()
        for processes, suffix in ((emp_processes, ".emp.log"), (cpo_processes, ".cpo.log")):
            with contextlib.suppress(OSError):
                shutil.copy(processes.log_path, artefacts.with_suffix(suffix))
        shutil.rmtree(workdir, ignore_errors=True)


async def count_live(client: aioredis.Redis, prefix: str, scope: str) -> int:
    from shared.stores.evse_data import EvseDataStore
    from shared.stores.redis import KeySpace

    return await EvseDataStore(client, KeySpace(prefix), scope).count()


# ---- the baseline --------------------------------------------------------------------------------


async def run_baseline(args: argparse.Namespace, bodies: list[bytes]) -> dict[str, Any]:
    server = BareServer()
    await server.start()
    try:
        pids = {server.pid: "bare server"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
            headers = {"Content-Type": "application/json"}
            meter = procstats.CpuMeter(pids)
            meter.start()
            result = {"ingest": await ingest(http, server.url + PUSH_PATH, headers, bodies)}
            result["ingest"]["cpu_seconds"] = meter.stop()
            meter = procstats.CpuMeter(pids)
            meter.start()
            result["pull"] = await pull(http, server.url + PULL_PATH, headers, args.page_size)
            result["pull"]["cpu_seconds"] = meter.stop()
        result["peak_rss_mib"] = procstats.peak_rss_mib(pids)
        return result
    finally:
        await server.stop()


# ---- the scenario --------------------------------------------------------------------------------


async def run(args: argparse.Namespace, artefacts: Path) -> dict[str, Any]:
    bodies = push_bodies(args.records, args.request_size)
    params = {
        "records": args.records,
        "request_size": args.request_size,
        "page_size": args.page_size,
        "requests": len(bodies),
        "body_bytes_total": sum(len(b) for b in bodies),
        "body_bytes_per_record": round(sum(len(b) for b in bodies) / max(1, args.records)),
        "node_log_level": args.full_load_log_level,
        "ingest": "PushEvseData on the EMP node's OICP face, sequential, first fullLoad then insert",
        "pull": "PullEvseData on the CPO node's OICP face, no filter, DecimalDegree, pages in order",
    }
    node = await run_node(args, bodies, artefacts)
    baseline = await run_baseline(args, bodies)

    return {
        "params": params,
        "node": node,
        "baseline": baseline,
        "ratios": {
            "ingest_s": ratio(node["ingest"]["total_s"], baseline["ingest"]["total_s"]),
            "pull_s": ratio(node["pull"]["total_s"], baseline["pull"]["total_s"]),
            "page_p99": ratio(node["pull"]["page_ms"]["p99"], baseline["pull"]["page_ms"]["p99"]),
        },
    }


def table(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    node, base, ratios = result["node"], result["baseline"], result["ratios"]

    def r(value: float | None) -> str:
        return f"{value:.2f}x" if value is not None else ""

    n_in, b_in, n_pull, b_pull = node["ingest"], base["ingest"], node["pull"], base["pull"]
    records = result["params"]["records"]
    rows = [
        ("records / requests", f"{records:,} / {n_in['requests']:,}", f"{records:,} / {b_in['requests']:,}", ""),
        ("ingest s (all requests)", fmt(n_in["total_s"]), fmt(b_in["total_s"]), r(ratios["ingest_s"])),
        ("ingest records/s", fmt(round(records / n_in["total_s"])), fmt(round(records / b_in["total_s"])), ""),
        ("ingest request p50 ms", fmt(n_in["request_ms"]["p50"]), fmt(b_in["request_ms"]["p50"]), ""),
        ("ingest request max ms", fmt(n_in["request_ms"]["max"]), fmt(b_in["request_ms"]["max"]), ""),
        ("ingest failures", fmt(n_in["failures"]), fmt(b_in["failures"]), ""),
        ("records stored (EMP roaming)", fmt(n_in.get("stored")), "", ""),
        ("own-data load s (CPO command)", fmt(node["own_load"]["total_s"]), "", ""),
        ("pull s (all pages)", fmt(n_pull["total_s"]), fmt(b_pull["total_s"]), r(ratios["pull_s"])),
        ("pages", fmt(n_pull["pages"]), fmt(b_pull["pages"]), ""),
        ("page p50 ms", fmt(n_pull["page_ms"]["p50"]), fmt(b_pull["page_ms"]["p50"]), ""),
        ("page p99 ms", fmt(n_pull["page_ms"]["p99"]), fmt(b_pull["page_ms"]["p99"]), r(ratios["page_p99"])),
        ("page max ms", fmt(n_pull["page_ms"]["max"]), fmt(b_pull["page_ms"]["max"]), ""),
        (
            "pulled distinct / totalElements",
            f"{n_pull['distinct']:,} / {fmt(n_pull['total_elements'])}",
            f"{b_pull['distinct']:,} / {fmt(b_pull['total_elements'])}",
            "",
        ),
        ("Redis MEMORY USAGE MiB emp / cpo", f"{node['redis_emp']['mib']} / {node['redis_cpo']['mib']}", "", ""),
        ("Redis used_memory delta MiB (ingest)", fmt(node["redis_used_memory_delta_mib"]), "", ""),
    ]
    for name, mib in node["peak_rss_mib"].items():
        rows.append((f"peak RSS MiB {name}", fmt(mib), "", ""))
    rows.append(("peak RSS MiB bare server", "", fmt(base["peak_rss_mib"].get("bare server")), ""))
    for phase, key in (("ingest", "ingest"), ("pull", "pull")):
        cpu = node[key]["cpu_seconds"]
        for name in sorted(cpu):
            if name == "machine" or cpu[name] >= 0.1:
                rows.append((f"CPU s {phase}: {name}", fmt(cpu[name]), fmt(base[key]["cpu_seconds"].get(name)), ""))
    return rows


def targets(result: dict[str, Any]) -> list[tuple[str, str, bool]]:
    node = result["node"]
    records = result["params"]["records"]
    scale = f" (measured at {records:,} records; target is for {TARGET_RECORDS:,})" if records != TARGET_RECORDS else ""
    complete = node["pull"]["distinct"] == records and node["ingest"].get("stored") == records
    rows = [
        (
            f"ingest ≤ {TARGET_INGEST_S:g} s{scale}",
            f"{node['ingest']['total_s']:.2f} s",
            _met(node["ingest"]["total_s"] <= TARGET_INGEST_S),
        ),
        (
            f"paged pull ≤ {TARGET_PULL_S:g} s{scale}",
            f"{node['pull']['total_s']:.2f} s",
            _met(node["pull"]["total_s"] <= TARGET_PULL_S),
        ),
        (
            f"p99 per page ≤ {TARGET_PAGE_P99_MS:g} ms",
            f"{node['pull']['page_ms']['p99']:.1f} ms",
            _met(node["pull"]["page_ms"]["p99"] <= TARGET_PAGE_P99_MS),
        ),
        (
            "every record stored and pulled once",
            f"{node['ingest'].get('stored'):,} stored, {node['pull']['distinct']:,} pulled",
            _met(complete),
        ),
        (
            "peak memory of each service reported",
            f"{sum(node['peak_rss_mib'].values()):.0f} MiB total, max {max(node['peak_rss_mib'].values()):.0f}",
            True,
        ),
    ]
    return rows


def _met(ok: bool) -> bool:
    return bool(ok)


def plot(result: dict[str, Any], path: Path) -> Path:
    fig, (ax_ingest, ax_pages) = plots.figure(plots.describe(result), panels=2)
    for label, system in (("node", result["node"]), ("baseline", result["baseline"])):
        timeline = system["ingest"]["timeline"]
        plots.timeline(
            ax_ingest,
            f"{label} ({system['ingest']['total_s']:.1f} s)",
            [t[0] for t in timeline],
            [t[1] for t in timeline],
            "ms per PushEvseData request",
        )
        pages = system["pull"]["page_latencies_ms"]
        plots.timeline(
            ax_pages,
            f"{label} ({system['pull']['total_s']:.1f} s)",
            list(range(len(pages))),
            pages,
            "ms per PullEvseData page",
        )
    ax_ingest.set_title(f"ingest, {result['params']['request_size']:,} records per request")
    ax_ingest.set_xlabel("s since the first request")
    ax_pages.set_title(f"pull, {result['params']['page_size']:,} records per page")
    ax_pages.set_xlabel("page number")
    ax_pages.axhline(TARGET_PAGE_P99_MS, linestyle="--", color="red", label="p99 target")
    ax_pages.legend()
    return plots.save(fig, path)
