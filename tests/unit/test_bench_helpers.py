"""The benchmark package's pure helpers (``bench/``, run by ``python -m bench``): percentiles and the
figures of the summary tables, the py-spy profile summaries, each scenario's targets against
hand-made results, the hub polling model, and the command line. No network, no processes (but the
``--help`` one), no timing."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.profile_summary import frame_name, summarise
from bench.scenarios import SCENARIOS, authorization, cdr_flow, full_load, gateway_ingest, isolation, status_fanout
from bench.workload import Plan, SendLog, curve, fmt, percentiles, ratio

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def _services_running() -> None:
    """Overrides tests/conftest.py's check: these tests need neither RabbitMQ nor Redis."""


# ---- bench.workload ------------------------------------------------------------------------------


def figures(*values: float | None, keys: str = "p50 p95 p99 max mean") -> dict[str, float | None]:
    return dict(zip(keys.split(), values, strict=True))


def test_percentiles_nearest_rank_in_ms() -> None:
    # unsorted on purpose; nearest rank: p50 of 10 values is the 5th (no interpolation: not 5.5)
    assert percentiles([float(v) for v in (7, 1, 10, 4, 2, 9, 3, 8, 6, 5)], scale=1.0) == figures(5, 10, 10, 10, 5.5)
    assert percentiles([0.04, 0.01, 0.03, 0.02]) == figures(20, 40, 40, 40, 25)  # seconds in, ms out
    assert percentiles([0.2, 0.1, 0.4, 0.3], quantiles=(50, 90)) == figures(200, 400, 400, 250, keys="p50 p90 max mean")


def test_percentiles_empty_and_one_value() -> None:
    assert percentiles([]) == figures(None, None, None, None, None)
    assert percentiles([], quantiles=(90,)) == figures(None, None, None, keys="p90 max mean")
    assert percentiles([0.0123]) == figures(12.3, 12.3, 12.3, 12.3, 12.3)


def test_curve_nearest_rank_at_the_plotted_percentiles() -> None:
    values = [i / 1000 for i in range(100, 0, -1)]  # 1 … 100 ms, in reverse
    points = curve(values)
    assert list(points) == "p1 p5 p10 p25 p50 p75 p90 p95 p98 p99 p99.5 p99.9 p100".split()
    assert [points[k] for k in ("p1", "p5", "p50", "p99", "p99.5", "p100")] == [1, 5, 50, 99, 100, 100]
    assert curve([]) == {}
    # status_fanout keeps a numpy version (for the hub model's millions of delays): the same figures
    assert status_fanout.curve(np.asarray(values)) == points


def test_fmt() -> None:
    # below 100: two decimals, whatever they round to; from 100 none; thousands separators; a bool is no number
    values = (None, 0.0, 1.5, 99.999, 12345.6, -150.0, 1234567, True, "yes")
    assert [fmt(v) for v in values] == ["-", "0.00", "1.50", "100.00", "12,346", "-150", "1,234,567", "True", "yes"]


def test_ratio() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(1.0, 3.0) == 0.33
    assert ratio(0.0, 2.0) == 0.0  # a zero system figure is a figure
    assert ratio(None, 2.0) is None
    assert ratio(2.0, None) is None
    assert ratio(2.0, 0.0) is None


# ---- bench.profile_summary -----------------------------------------------------------------------

STACKS = """\
process 1:"python -m app";main (app/main.py:10);handle (app/web.py:20);parse (/v/lib/site-packages/json/decoder.py:5) 6
main (app/main.py:10);handle (app/web.py:21);handle (app/web.py:22) 3
main (app/main.py:11);idle (<frozen runpy>) 1
process 1:"python -m app" 5
not a sample line
"""
MAIN, HANDLE = "main (app/main.py)", "handle (app/web.py)"
PARSE, IDLE = "parse (json/decoder.py)", "idle (<frozen runpy>)"


@pytest.mark.parametrize(
    ("frame", "name"),
    [
        ("authorize_start (services/authorization/emp.py:140)", "authorize_start (authorization/emp.py)"),
        ("x (/venv/lib/python3.11/site-packages/pydantic/main.py:5)", "x (pydantic/main.py)"),
        ("_run_code (<frozen runpy>:88)", "_run_code (<frozen runpy>)"),
        ("run (<frozen runpy>)", "run (<frozen runpy>)"),  # no line number (py-spy --nolineno)
        ("<module>", "<module>"),
    ],
)
def test_frame_name(frame: str, name: str) -> None:
    assert frame_name(frame) == name


def test_summarise_inclusive_and_self_shares(tmp_path: Path) -> None:
    path = tmp_path / "stacks.txt"
    path.write_text(STACKS)
    summary = summarise(path)
    # 10 samples: the process frame is no function and a stack of only that is no sample
    assert summary["samples"] == 10
    # inclusive: once per sample whatever the recursion (handle is twice on the second stack)
    assert summary["inclusive_pct"] == [(MAIN, 100.0), (HANDLE, 90.0), (PARSE, 60.0), (IDLE, 10.0)]
    assert summary["self_pct"] == [(PARSE, 60.0), (HANDLE, 30.0), (IDLE, 10.0)]
    assert summarise(path, top=2)["self_pct"] == [(PARSE, 60.0), (HANDLE, 30.0)]
    (tmp_path / "empty.txt").write_text("")
    assert summarise(tmp_path / "empty.txt") == {"samples": 0, "inclusive_pct": [], "self_pct": []}


def test_gateway_ingest_profile_keeps_its_json_shape(tmp_path: Path) -> None:
    path = tmp_path / "stacks.txt"
    path.write_text(STACKS)
    shares = gateway_ingest.profile_shares(path)
    assert shares["samples"] == 10
    assert shares["self"] == {PARSE: 0.6, HANDLE: 0.3, IDLE: 0.1}  # shares of 1, not percentages
    assert shares["inclusive"] == {MAIN: 1.0, HANDLE: 0.9, PARSE: 0.6, IDLE: 0.1}
    # py-spy wrote nothing (not installed, process gone): no samples, not a failed run
    assert gateway_ingest.profile_shares(tmp_path / "missing.txt") == {"samples": 0, "self": {}, "inclusive": {}}


# ---- the scenarios' targets ----------------------------------------------------------------------


def met(rows: list[tuple[str, str, bool]]) -> list[bool]:
    for row in rows:
        assert len(row) == 3 and isinstance(row[0], str) and isinstance(row[1], str) and type(row[2]) is bool
    return [row[2] for row in rows]


def fanout_result(p99: float | None, behind: int, **params: float) -> dict[str, Any]:
    node = {"latency_ms": {"p99": p99}, "final_state_ok": behind == 0}
    node |= {"final_state_behind_records": behind, "final_state_behind_sinks": 3 if behind else 0}
    params = {"sinks": 100, "evses": 10000, "rate": 200, "duration": 120} | params
    return {"node": node, "baseline": {"latency_ms": {"p99": 9.5}}, "params": params}


def test_status_fanout_targets() -> None:
    rows = status_fanout.targets(fanout_result(240.0, 0))
    assert met(rows) == [True, True]
    assert "smaller than" not in rows[0][0] and rows[0][1] == "240 ms (baseline 9.50 ms)"
    rows = status_fanout.targets(fanout_result(260.0, 12, sinks=30))
    assert met(rows) == [False, False]
    assert "smaller than issue #8's workload" in rows[0][0]
    assert rows[1][1] == "no: 12 records behind on 3 peers"
    assert met(status_fanout.targets(fanout_result(None, 0))) == [False, True]  # nothing received


def isolation_result(change: float | None, converged: bool) -> dict[str, Any]:
    slow = {"converged": converged, "converged_after_last_change_s": 80.0, "behind_records": 500, "waited_up_to_s": 180}
    return {
        "node": {"latency_ms": {"p99": 110.0}, "final_state_ok": True},
        "baseline": {"latency_ms": {"p99": 100.0}, "final_state_ok": True},
        "relative_change": {"p99": change},
        "slow_peers": slow,
        "params": {"slow": 5, "slow_delay_s": 5.0, "unreachable": 5, "healthy": 20, "evses": 3000, "rate": 200},
    }


def test_isolation_targets() -> None:
    assert met(isolation.targets(isolation_result(0.1, True))) == [True, True, True]
    rows = isolation.targets(isolation_result(-0.15, False))  # faster by more than 10 % is a change too
    assert met(rows) == [False, True, False]
    assert rows[0][1].startswith("-15.0 %") and rows[2][1] == "no: 500 records behind after 180 s"
    assert met(isolation.targets(isolation_result(None, True)))[0] is False


def auth_part(p99: float | None, errors: int = 0, wrong: int = 0, rate: float = 300.0) -> dict[str, Any]:
    node = {"latency_ms": {"p99": p99}, "errors": errors, "wrong_answers": wrong, "offered_per_s": rate}
    return {"node": node, "rate": rate, "tokens": 1_000_000, "emp_nodes": 10}


def test_authorization_targets() -> None:
    assert met(authorization.targets({"emp": auth_part(19.0), "broadcast": auth_part(99.0, rate=20.0)})) == [True, True]
    assert met(authorization.targets({"emp": auth_part(21.0), "broadcast": auth_part(101.0)})) == [False, False]
    assert met(authorization.targets({"emp": auth_part(5.0, rate=290.0)})) == [True]  # within 5 % of 300/s sent
    assert met(authorization.targets({"emp": auth_part(5.0, rate=280.0)})) == [False]  # the driver fell behind
    small = {**auth_part(5.0), "tokens": 100_000, "emp_nodes": 3}
    for what, _, _ in authorization.targets({"emp": small, "broadcast": small}):
        assert what.endswith("(smaller than issue #8's workload)")
    assert not any("smaller" in what for what, _, _ in authorization.targets({"emp": auth_part(5.0)}))
    assert met(authorization.targets({"emp": auth_part(5.0, wrong=1)})) == [False]
    assert met(authorization.targets({"broadcast": auth_part(5.0, errors=1)})) == [False]
    assert authorization.targets({}) == []


def test_authorization_targets_node_to_bare() -> None:
    """The CPO node → N bare EMP endpoints: its own row, judged like the broadcast to EMP nodes."""
    both = {**auth_part(120.0, rate=20.0), "node_to_bare": auth_part(30.0, rate=20.0)["node"]}
    rows = authorization.targets({"broadcast": both})
    assert met(rows) == [False, True]  # the EMP nodes on the same cores miss it, the CPO node's share does not
    what, measured, _ = rows[1]
    assert what == "RFID broadcast CPO node → 10 bare EMP endpoints p99 ≤ 100 ms (the CPO node's own share)"
    assert measured == "p99 30.00 ms to 10 bare EMP endpoints at 20.00/s, 0 errors, 0 wrong"
    # --broadcast-emps bare: no EMP-node run, only this row
    bare_only = {**auth_part(5.0), "node_to_bare": auth_part(101.0)["node"]}
    del bare_only["node"]
    rows = authorization.targets({"broadcast": bare_only})
    assert met(rows) == [False] and "bare EMP endpoints" in rows[0][0]
    for errors, wrong in ((1, 0), (0, 1)):
        failing = {**auth_part(5.0), "node_to_bare": auth_part(5.0, errors=errors, wrong=wrong)["node"]}
        assert met(authorization.targets({"broadcast": failing})) == [True, False]
    small = {**auth_part(5.0), "emp_nodes": 3, "node_to_bare": auth_part(5.0)["node"]}
    rows = authorization.targets({"broadcast": small})
    assert met(rows) == [True, True]
    assert rows[1][0].endswith("(the CPO node's own share) (smaller than issue #8's workload)")
    assert rows[1][1].startswith("p99 5.00 ms to 3 bare EMP endpoints")


def broadcast_run(p50: float, p99: float) -> dict[str, Any]:
    return {
        "latency_ms": {"p50": p50, "p90": p99, "p99": p99, "max": p99},
        "send_lateness_ms": {"p99": 0.5},
        "offered_per_s": 20.0,
        "answered": 100,
        "wrong_answers": 0,
        "errors": 0,
        "peak_rss_mib_total": 300.0,
        "cpu_seconds": {"cpo/gateway": 1.0, "baseline server": 0.25},
    }


def test_authorization_ratios_and_table_per_broadcast_run() -> None:
    base = {**broadcast_run(2.0, 4.0), "cpu_seconds": {"baseline server": 0.5}}
    both = {"emp_nodes": 2, "node": broadcast_run(20.0, 40.0), "node_to_bare": broadcast_run(10.0, 12.0)}
    result = authorization.add_ratios({"broadcast": {**both, "baseline": base}})
    assert result["broadcast"]["ratios"] == {"p50": 10.0, "p99": 10.0}
    assert result["broadcast"]["ratios_node_to_bare"] == {"p50": 5.0, "p99": 3.0}
    rows = {label: (node, baseline, r) for label, node, baseline, r in authorization.table(result)}
    assert rows["RFID broadcast p99 ms"] == ("40.00", "4.00", "10.00x")
    assert rows["RFID broadcast to bare EMPs p99 ms"] == ("12.00", "4.00", "3.00x")
    assert rows["RFID broadcast to bare EMPs CPU s baseline server"] == ("0.25", "0.50", "")
    # --broadcast-emps bare: no EMP-node run, no row of it
    bare = authorization.add_ratios(
        {"broadcast": {"emp_nodes": 2, "node_to_bare": both["node_to_bare"], "baseline": base}}
    )
    assert "ratios" not in bare["broadcast"]
    labels = [label for label, _, _, _ in authorization.table(bare)]
    assert "RFID broadcast to bare EMPs p50 ms" in labels and "RFID broadcast p50 ms" not in labels


def ingest_result(ratio: float | None, p99: float | None, failures: int = 0, baseline: bool = True) -> dict[str, Any]:
    half = {"latency_ms": {"p99": p99}, "offered_per_s": 1000.0, "failures": failures}
    node = {"operations": {"PushEvseStatus": {"saturation": {"requests_per_s": 2000.0}, "half_saturation": half}}}
    base = {"operations": {"PushEvseStatus": {"saturation": {"requests_per_s": 4000.0}}}}
    ratios = {"requests_per_s": {"PushEvseStatus": ratio}}
    return {"node": node, "baseline": base if baseline else None, "ratios": ratios}


def test_gateway_ingest_targets() -> None:
    rows = gateway_ingest.targets(ingest_result(0.5, 25.0))
    assert met(rows) == [True, True]
    assert rows[0][1] == "0.50 (2,000 / 4,000 req/s)"
    assert met(gateway_ingest.targets(ingest_result(0.49, 26.0))) == [False, False]
    rows = gateway_ingest.targets(ingest_result(None, 5.0, failures=2))
    assert met(rows) == [False, False] and rows[1][1].endswith(", 2 failures")
    assert met(gateway_ingest.targets(ingest_result(None, 5.0, baseline=False))) == [True]  # no baseline, no ratio


def full_load_result(ingest_s: float, pull_s: float, page_p99: float, stored: int = 100_000) -> dict[str, Any]:
    node = {
        "ingest": {"total_s": ingest_s, "stored": stored},
        "pull": {"total_s": pull_s, "page_ms": {"p99": page_p99}, "distinct": 100_000},
        "peak_rss_mib": {"emp gateway": 120.0, "emp evse_push": 80.0},
    }
    return {"node": node, "params": {"records": 100_000}}


def test_full_load_targets() -> None:
    rows = full_load.targets(full_load_result(20.0, 10.0, 150.0))
    assert met(rows) == [True, True, True, True, True]
    assert rows[4][1] == "200 MiB total, max 120"
    rows = full_load.targets(full_load_result(20.1, 10.1, 151.0, stored=99_999))
    assert met(rows) == [False, False, False, False, True]  # the memory row only reports


def cdr_node(duplicates: int = 0, inbox: int = 2000, delivered_per_s: float | None = 150.0) -> dict[str, Any]:
    node = {"submitted": 2000, "accepted": 2000, "received_distinct": 2000, "inbox_count": inbox}
    node |= {"submit_failures": 0, "duplicates": duplicates, "missing": 0, "unexpected": 0}
    return node | {"delivered_per_s": delivered_per_s, "latency_ms": {"p99": 80.0 if delivered_per_s else None}}


def test_cdr_flow_targets() -> None:
    result = {"node": cdr_node(), "ratios": {"delivered_per_s": 0.4, "p99": 9.0}, "params": {"cdrs": 2000}}
    assert met(cdr_flow.targets(result)) == [True, True, True]
    assert met(cdr_flow.targets(result | {"node": cdr_node(duplicates=1)})) == [False, True, True]
    assert met(cdr_flow.targets(result | {"node": cdr_node(inbox=1999, delivered_per_s=None)})) == [False, False, False]


# ---- the scenarios' pure computations ------------------------------------------------------------


class HalfwayRng:
    """Stands in for numpy's generator: every uniform draw is the middle of its range."""

    def uniform(self, low: float, high: float, size: int) -> np.ndarray:
        return np.full(size, (low + high) / 2)


def test_hub_model_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(np.random, "default_rng", lambda seed: HalfwayRng())
    log = SendLog(Plan(evse_count=2, rate=1.0, duration=4.0), started=100.0)
    log.sent_at = [100.0, 110.0, 114.75, 120.0]
    log.acked_at = [t + 0.01 for t in log.sent_at]
    model = status_fanout.hub_model(log, sinks=2, hub_latency_s=0.5)
    # T = 60: the two EMPs poll at 115, 175, … and 145, 205, …; a change is at the hub 0.5 s after its send.
    # Delays (s): EMP 1: 15, 5, 60.25, 55; EMP 2: 45, 35, 30.25, 25.
    poll = model["poll_60s"]
    assert poll["latency_ms"] == pytest.approx(figures(30250, 60250, 60250, 60250, 33812.5))
    # changes 0 and 1 are overtaken (their EVSE changes again at 115.25 / 120.5) before EMP 2's poll at 145,
    # not before EMP 1's at 115; the last change of each EVSE is always seen: 6 of 8
    assert poll["seen_fraction"] == 0.75
    assert (poll["polls_per_s"], poll["records_per_poll"], model["hub_latency_ms"]) == (0.033, 2, 500.0)
    # T = 300: polls at 175 and 325; every delay is 175 or 325 less the send time
    assert model["poll_300s"]["latency_ms"]["max"] == pytest.approx(225000.0)
    log.acked_at = [math.nan] * 4
    assert status_fanout.hub_model(log, sinks=2, hub_latency_s=0.5) == {}


def test_gateway_ingest_summarise_phase() -> None:
    driver = {"ok": 2, "failures": 1, "errors": {"HTTP 500": 1}, "cpu_s": 0.5, "late_start_s": 0.01, "connections": 3}
    first = driver | {"latencies": [0.002, 0.001], "lateness_ms": {"p99": 1.0, "max": 2.0}}
    second = {**driver, "ok": 1, "failures": 0, "errors": {}, "cpu_s": 0.25, "late_start_s": 0.02, "connections": 2}
    second |= {"latencies": [0.003], "lateness_ms": {"p99": None, "max": None}}
    phase = gateway_ingest.summarise_phase("open", 40.0, 2.0, 2.5, [first, second], {"gateway": 1.0, "machine": 3.0})
    assert (phase["requests_ok"], phase["failures"], phase["requests_per_s"]) == (3, 1, 1.5)
    assert phase["errors"] == {"HTTP 500": 1}
    assert phase["latency_ms"] == figures(2, 3, 3, 3, 2, keys="p50 p90 p99 max mean")
    assert phase["latency_curve_ms"]["p1"] == 1.0 and phase["latency_curve_ms"]["p100"] == 3.0
    assert phase["cpu_seconds"] == {"gateway": 1.0, "machine": 3.0, "load generators": 0.75, "others": 1.25}
    assert (phase["load_generator_cores"], phase["late_start_s"], phase["connections"]) == (0.3, 0.02, 5)
    assert (phase["offered_per_s"], phase["send_lateness_p99_ms"], phase["send_lateness_max_ms"]) == (40.0, 1.0, 2.0)
    closed = gateway_ingest.summarise_phase("closed", None, 2.0, 2.5, [first], {"machine": 1.0})
    assert "offered_per_s" not in closed and closed["requests_per_s"] == 1.0


def test_cdr_flow_summarise() -> None:
    log = {"started": 0.0, "sent": {"a": 0.0, "b": 0.5, "c": 1.0}, "acked": {"a": 0.25, "b": 0.75, "c": 1.25}}
    log["errors"] = []
    received = [("a", 1.0), ("b", 1.5), ("a", 2.0), ("x", 3.0)]  # a twice, c never, x never sent
    summary = cdr_flow.summarise(log, received, {"inbox_count": 3})
    assert (summary["received_distinct"], summary["received_events"]) == (3, 4)
    assert (summary["duplicates"], summary["missing"], summary["unexpected"]) == (1, 1, 1)
    assert summary["latency_ms"]["p50"] == 1000.0 and summary["latency_ms"]["max"] == 1000.0  # first receipt counts
    assert (summary["window_s"], summary["delivered_per_s"], summary["accepted_per_s"]) == (3.0, 1.0, 2.4)
    assert summary["submit_ack_ms"]["p99"] == 250.0
    timeline = summary["delivered_timeline"]  # CDRs/s per 0.25 s bin: one each at 1.0, 1.5 and 3.0 s
    assert len(timeline) == 13 and [i for i, v in enumerate(timeline) if v] == [4, 6, 12] and timeline[4] == 4.0
    assert cdr_flow.exactly_once(summary) is False


def test_authorization_group_cpu() -> None:
    cpu = {"emp00/gateway": 1.0, "emp01/gateway": 0.5, "emp00/authorization": 0.25, "cpo/gateway": 2.0, "machine": 9.0}
    grouped = {"emp nodes/gateway": 1.5, "emp nodes/authorization": 0.25, "cpo/gateway": 2.0, "machine": 9.0}
    assert authorization.group_cpu(cpu) == grouped


# ---- the command line ----------------------------------------------------------------------------


def test_help_lists_every_scenario() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    for name in SCENARIOS:
        assert name in done.stdout
    assert set(SCENARIOS) == {"status_fanout", "isolation", "authorization", "gateway_ingest", "full_load", "cdr_flow"}


def test_open_files_limit_reads_the_soft_limit() -> None:
    import os
    import resource

    from bench import procstats

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert procstats.open_files_limit(os.getpid()) == (None if soft == resource.RLIM_INFINITY else soft)
    assert procstats.open_files_limit(2**30) is None  # no such process
