"""``python -m bench [scenario|all] [--small|--large] [scenario options]``

Runs each scenario (the system under test and its baseline, one after the other, in this one run),
writes ``bench/results/<scenario>-<timestamp>.json`` and prints a summary table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import time
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


async def run_scenario(name: str, args: argparse.Namespace) -> Path:
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
    write_result(path, result)
    print_table(
        f"{name} ({args.size}): {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}",
        module.table(result),
    )
    return path


async def main_async(args: argparse.Namespace) -> int:
    # SIGTERM cancels the run like Ctrl-C does, so the scenarios' cleanup (stop the node's processes,
    # delete its queues and keys, stop the sinks) runs instead of leaving processes behind.
    # A plain signal handler, as asyncio.Runner uses for Ctrl-C: with uvloop, a handler set by
    # loop.add_signal_handler was not called here, and the signal killed the process at loop close.
    task, loop = asyncio.current_task(), asyncio.get_running_loop()
    assert task is not None
    signal.signal(signal.SIGTERM, lambda signum, frame: loop.call_soon_threadsafe(task.cancel))
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    try:
        for name in names:
            await run_scenario(name, args)
    except asyncio.CancelledError:
        print("stopped; node processes and sinks cleaned up", file=sys.stderr)
        return 143
    return 0


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
