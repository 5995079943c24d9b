"""PNG plots of benchmark results, one file per scenario run (matplotlib on the Agg backend: no display).

A scenario's ``plot(result, path)`` draws its own figure with these helpers, so every plot of the suite
looks alike: latency as percentile curves (node and baseline on one axis), rates and backlogs as
timelines, and a row of bars for single figures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # (after the backend is chosen)
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bench.workload import PERCENTILES  # the percentiles drawn on a latency curve (dense at the tail)


def figure(title: str, panels: int = 1, width: float = 6.0, height: float = 4.0) -> tuple[Figure, list[Axes]]:
    """One row of ``panels`` axes under a common title."""
    fig, axes = plt.subplots(1, panels, figsize=(width * panels, height), squeeze=False)
    fig.suptitle(title)
    return fig, list(axes[0])


def percentile_curve(ax: Axes, label: str, values_ms: Sequence[float]) -> None:
    """Latency by percentile (x: percentile, y: milliseconds)."""
    if not values_ms:
        return
    ordered = sorted(values_ms)
    ys = [ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] for p in PERCENTILES]
    ax.plot([str(p) for p in PERCENTILES], ys, marker="o", label=label)
    ax.set_xlabel("percentile")
    ax.set_ylabel("ms")
    ax.grid(True, alpha=0.3)
    ax.legend()


def percentile_points(ax: Axes, label: str, percentiles_ms: dict[str, float | None]) -> None:
    """A latency curve from already computed percentiles (``{"p50": …, "p99": …}``)."""
    points = [(k, v) for k, v in percentiles_ms.items() if v is not None and k.startswith("p")]
    if not points:
        return
    ax.plot([k for k, _ in points], [v for _, v in points], marker="o", label=label)
    ax.set_xlabel("percentile")
    ax.set_ylabel("ms")
    ax.grid(True, alpha=0.3)
    ax.legend()


def timeline(ax: Axes, label: str, t: Sequence[float], values: Sequence[float], ylabel: str) -> None:
    ax.plot(list(t), list(values), label=label)
    ax.set_xlabel("s")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()


def bars(ax: Axes, values: dict[str, float], ylabel: str, target: float | None = None) -> None:
    """One bar per label; ``target`` draws the goal as a dashed line."""
    ax.bar(list(values), list(values.values()))
    if target is not None:
        ax.axhline(target, linestyle="--", color="red", label=f"target {target:g}")
        ax.legend()
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)


def save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def describe(result: dict[str, Any]) -> str:
    """A short subtitle: scenario, size and machine."""
    machine = result.get("machine", {})
    return f"{result.get('scenario', '')} ({result.get('size', '')}) — {machine.get('nproc', '?')} cores"
