"""The status workload shared by a node run and its baseline: which EVSE changes to what and when,
an open-loop driver that issues it, and the tracing of each received record back to its change.

Change ``i`` sets EVSE ``i mod E`` (round robin) to the next status of a fixed cycle, at ``i / rate``
seconds into the run. Every EVSE is first primed with the cycle's first status, so every change is
a real change (the node ignores a status equal to the stored one). A change is identified by
(EvseID, status, send time): the same pair comes back only after ``len(STATUS_CYCLE) * E / rate``
seconds (the identification window), and a received record is attributed to the latest send of its
pair at or before the receipt.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

OPERATOR_ID = "DE*BEN"
STATUS_CYCLE = ("Available", "Occupied", "Reserved", "OutOfService", "Unknown")
START_DELAY_S = 0.2  # between planning and the first change, so the first one is not already late
#: the percentiles of a latency curve, kept in the JSON and drawn by ``bench.plots`` (dense at the tail)
PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 98, 99, 99.5, 99.9, 100)

Submit = Callable[[list[tuple[str, str]]], Awaitable[None]]


@dataclass(frozen=True)
class Plan:
    evse_count: int
    rate: float  # status changes per second
    duration: float  # seconds

    @property
    def evses(self) -> list[str]:
        return [f"{OPERATOR_ID}*E{i:06d}" for i in range(self.evse_count)]

    def __len__(self) -> int:
        return int(self.rate * self.duration)

    def change(self, i: int) -> tuple[str, str]:
        round_, evse = divmod(i, self.evse_count)
        return f"{OPERATOR_ID}*E{evse:06d}", STATUS_CYCLE[(round_ + 1) % len(STATUS_CYCLE)]

    def offset(self, i: int) -> float:
        return i / self.rate

    def initial(self) -> dict[str, str]:
        return dict.fromkeys(self.evses, STATUS_CYCLE[0])

    @property
    def identification_window_s(self) -> float:
        return len(STATUS_CYCLE) * self.evse_count / self.rate


@dataclass
class SendLog:
    """What the driver did: per change its send time and its command's acknowledgement time
    (``nan`` when the command failed), plus the lateness of every command against the plan."""

    plan: Plan
    sent_at: list[float] = field(default_factory=list)
    acked_at: list[float] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    commands: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0

    def final_state(self, initial: dict[str, str]) -> dict[str, str]:
        """The state every sink must end with: the last acknowledged change of each EVSE."""
        state = dict(initial)
        for i, acked in enumerate(self.acked_at):
            if not math.isnan(acked):
                evse, status = self.plan.change(i)
                state[evse] = status
        return state


async def drive(plan: Plan, submit: Submit, per_command: int, max_in_flight: int) -> SendLog:
    """Issue the plan open loop: a command is sent when its last change is due, whatever the
    system's answers, so a slow system shows as latency, not as a lower offered rate (at most
    ``max_in_flight`` commands wait for their answer; beyond that, sending is late and says so)."""
    total = len(plan)
    log = SendLog(plan, sent_at=[math.nan] * total, acked_at=[math.nan] * total)
    slots = asyncio.Semaphore(max_in_flight)
    pending: set[asyncio.Task[None]] = set()

    async def one(first: int, last: int, records: list[tuple[str, str]]) -> None:
        try:
            await submit(records)
        except Exception as exc:
            log.failures += 1
            if len(log.errors) < 10:
                log.errors.append(f"{type(exc).__name__}: {exc}"[:300])
        else:
            acked = time.monotonic()
            for i in range(first, last):
                log.acked_at[i] = acked
        finally:
            slots.release()

    start = time.monotonic() + START_DELAY_S
    log.started = start
    for first in range(0, total, per_command):
        last = min(total, first + per_command)
        due = start + plan.offset(last - 1)
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        now = time.monotonic()
        log.lateness.append(now - due)
        for i in range(first, last):
            log.sent_at[i] = now
        log.commands += 1
        task = asyncio.create_task(one(first, last, [plan.change(i) for i in range(first, last)]))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)
    log.finished = time.monotonic()
    return log


class Tracer:
    """Attributes a record (EvseID, status, time) to the change that caused it."""

    def __init__(self, log: SendLog) -> None:
        self._sends: dict[tuple[str, str], list[float]] = {}
        for i, sent in enumerate(log.sent_at):
            if not math.isnan(log.acked_at[i]):
                self._sends.setdefault(log.plan.change(i), []).append(sent)
        for times in self._sends.values():
            times.sort()

    def latency(self, evse: str, status: str, at: float) -> float | None:
        """Seconds since the latest send of (evse, status) at or before ``at``; None if none."""
        times = self._sends.get((evse, status))
        if not times:
            return None
        index = bisect.bisect_right(times, at) - 1
        return at - times[index] if index >= 0 else None

    def latencies(self, records: Iterable[tuple[str, str, float]]) -> tuple[list[float], int]:
        """Latencies of the attributable records and the number of records that were not."""
        found: list[float] = []
        unmatched = 0
        for evse, status, at in records:
            value = self.latency(evse, status, at)
            if value is None:
                unmatched += 1
            else:
                found.append(value)
        return found, unmatched


def percentiles(
    values: list[float], scale: float = 1000.0, quantiles: tuple[int, ...] = (50, 95, 99)
) -> dict[str, float | None]:
    """p<q> for each quantile, max and mean (nearest rank), in milliseconds by default."""
    keys = (*(f"p{q}" for q in quantiles), "max", "mean")
    if not values:
        return dict.fromkeys(keys)
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * scale, 2)

    return {
        **{f"p{q}": rank(q / 100) for q in quantiles},
        "max": round(ordered[-1] * scale, 2),
        "mean": round(sum(ordered) / len(ordered) * scale, 2),
    }


def curve(values: Iterable[float]) -> dict[str, float]:
    """Latency at each of ``PERCENTILES`` (nearest rank), in ms from seconds: ``{"p1": …, "p99.9": …}``."""
    ordered = sorted(values)
    if not ordered:
        return {}
    return {
        f"p{p:g}": round(ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))] * 1000, 2)
        for p in PERCENTILES
    }


def fmt(value: Any) -> str:
    """A figure for the summary tables: thousands separators, two decimals below 100, "-" for none."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def ratio(system: float | None, baseline: float | None) -> float | None:
    """system / baseline, None when either is missing or the baseline is 0."""
    return round(system / baseline, 2) if system is not None and baseline else None
