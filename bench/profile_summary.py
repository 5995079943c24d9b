"""Summaries of py-spy's collapsed stacks (``py-spy record --format raw``): which functions the samples
were in (inclusive: anywhere on the stack; self: at the top), as shares of all samples.

``python -m bench.profile_summary FILE [--top N]`` prints both lists; the authorization scenario's
``--py-spy`` writes one such file per profiled process and puts the summary in its JSON result.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path
from typing import Any

# py-spy's "func (path/file.py:123)", or "func (path/file.py)" without a line number: the line is dropped
_FRAME = re.compile(r"(?P<name>.*) \((?P<location>[^()]*?)(?::\d+)?\)")


def frame_name(frame: str) -> str:
    """``authorize_start (services/authorization/emp.py:140)`` → ``authorize_start (authorization/emp.py)``:
    one name per function, not per line; the location shortened to its last two parts, or to the
    package path under ``site-packages``. A frame without a location stays as it is."""
    match = _FRAME.fullmatch(frame)
    if match is None:
        return frame
    location = match["location"]
    if "site-packages/" in location:
        short = location.split("site-packages/")[-1]
    else:
        short = "/".join(location.split("/")[-2:])
    return f"{match['name']} ({short})"


def summarise(path: Path, top: int = 25) -> dict[str, Any]:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        total += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)] if total else []

    return {"samples": total, "inclusive_pct": share(inclusive), "self_pct": share(own)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    summary = summarise(args.file, args.top)
    print(f"{summary['samples']} samples\n\ninclusive %")
    for name, pct in summary["inclusive_pct"]:
        print(f"{pct:6.1f}  {name}")
    print("\nself %")
    for name, pct in summary["self_pct"]:
        print(f"{pct:6.1f}  {name}")


if __name__ == "__main__":
    main()
