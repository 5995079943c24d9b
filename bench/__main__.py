"""``python -m bench [scenario|all] [--small|--large] [scenario options]``

Runs each scenario (the system under test and its baseline, one after the other, in this one run),
writes ``bench/results/<scenario>-<timestamp>.json`` and, when the scenario draws one,
``….png`` next to it, prints a summary table per scenario and, at the end of the run, a table of
every scenario's targets (issue #8) with whether each was met.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import procstats
from bench.scenarios import SCENARIOS

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of a real node against an in-process baseline, run together.",
        epilog="scenarios: " + "; ".join(f"{name}: {module.DESCRIPTION}" for name, module in SCENARIOS.items()),
    )
    parser.add_argument("scenario", nargs="?", default="all", choices=[*SCENARIOS, "all"], help="default: all")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--small", dest="size", action="store_const", const="small", help="short run (default)")
    size.add_argument("--large", dest="size", action="store_const", const="large", help="long run")
    parser.set_defaults(size="small")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"directory of the JSON files ({RESULTS})")
    for name, module in SCENARIOS.items():
        module.add_arguments(parser.add_argument_group(name))
    return parser.parse_args(argv)


def services_reachable() -> list[str]:
    missing = []
    for name, port in (("RabbitMQ", 5672), ("Redis", 6379)):
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", port)) != 0:
                missing.append(f"{name} (127.0.0.1:{port})")
    return missing


def print_table(title: str, rows: list[tuple[str, str, str, str]]) -> None:
    header = ("metric", "node", "baseline", "node/baseline")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}\n{line}")
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    print(line)


def write_result(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


def print_targets(rows: list[tuple[str, str, str, str]]) -> None:
    """The final summary: every scenario's targets, what was measured and whether it was met."""
    header = ("scenario", "target", "measured", "met")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    met = sum(1 for r in rows if r[3] == "✓")
    judged = sum(1 for r in rows if r[3] in ("✓", "✗"))
    print(f"\ntargets: {met} of {judged} met\n{line}")
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(line)


def scenario_targets(module: Any, result: dict[str, Any]) -> list[dict[str, Any]] | None:
    """``module.targets(result)`` as JSON rows, or None if the scenario states no targets."""
    if not hasattr(module, "targets"):
        return None
    return [{"target": t, "measured": m, "met": bool(ok)} for t, m, ok in module.targets(result)]


def draw(module: Any, result: dict[str, Any], path: Path) -> Path | None:
    """``module.plot(result, png)`` if the scenario draws one; a failed plot never loses the results."""
    if not hasattr(module, "plot"):
        return None
    png = path.with_suffix(".png")
    try:
        module.plot(result, png)
    except Exception:
        print(f"plot failed (results kept):\n{traceback.format_exc()}", file=sys.stderr)
        return None
    return png


def shown(path: Path) -> Path:
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


async def run_scenario(name: str, args: argparse.Namespace) -> list[tuple[str, str, str, str]]:
    """Run one scenario, write its JSON (and PNG), print its table; return its rows of the final
    targets summary."""
    module = SCENARIOS[name]
    module.resolve(args, args.size)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.results / f"{name}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    machine = procstats.machine()
    print(f"{name} ({args.size}) on {machine['nproc']} × {machine['cpu_model']}, Python {machine['python']} …")
    result = await module.run(args, path)
    result = {
        "scenario": name,
        "size": args.size,
        "started_at": stamp,
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": {**machine, "loadavg_at_end": os.getloadavg()},
        **result,
    }
    write_result(path, result)  # first without the extras: a failing plot or target must not lose the run
    png = draw(module, result, path)
    if png is not None:
        result["plot"] = str(png)
    targets = None
    try:
        targets = scenario_targets(module, result)
    except Exception:
        print(f"targets of {name} failed:\n{traceback.format_exc()}", file=sys.stderr)
    if targets is not None:
        result["targets"] = targets
    write_result(path, result)
    print_table(f"{name} ({args.size}): {shown(path)}", module.table(result))
    if png is not None:
        print(f"plot: {shown(png)}")
    if targets is None:
        return [(name, "(no targets stated)", "", "")]
    return [(name, t["target"], t["measured"], "✓" if t["met"] else "✗") for t in targets]


async def main_async(args: argparse.Namespace) -> int:
    # SIGTERM cancels the run like Ctrl-C does, so the scenarios' cleanup (stop the node's processes,
    # delete its queues and keys, stop the sinks) runs instead of leaving processes behind.
    # A plain signal handler, as asyncio.Runner uses for Ctrl-C: with uvloop, a handler set by
    # loop.add_signal_handler was not called here, and the signal killed the process at loop close.
    task, loop = asyncio.current_task(), asyncio.get_running_loop()
    assert task is not None
    signal.signal(signal.SIGTERM, lambda signum, frame: loop.call_soon_threadsafe(task.cancel))
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    rows: list[tuple[str, str, str, str]] = []
    status = 0
    try:
        for name in names:
            try:
                rows += await run_scenario(name, args)
            except Exception:
                if len(names) == 1:
                    raise
                # one broken scenario does not stop `make bench` from running the others
                print(f"{name} failed:\n{traceback.format_exc()}", file=sys.stderr)
                rows.append((name, "(the run failed)", "", "✗"))
                status = 1
    except asyncio.CancelledError:
        print("stopped; node processes and sinks cleaned up", file=sys.stderr)
        if rows:
            print_targets(rows)
        return 143
    print_targets(rows)
    return status


def main() -> None:
    args = parse_args()
    missing = services_reachable()
    if missing:
        print(f"not reachable: {', '.join(missing)}; `make bench` starts them where installed", file=sys.stderr)
        sys.exit(2)
    import uvloop

    # The node's services run on uvloop; so do the sinks and the baseline, for a like-for-like loop.
    sys.exit(uvloop.run(main_async(args)))


if __name__ == "__main__":
    main()
