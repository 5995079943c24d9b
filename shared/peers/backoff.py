"""Retry timing of the delivery lanes, shared by every service that delivers to peers."""

from __future__ import annotations

import random
from typing import Protocol


class BackoffSettings(Protocol):
    """What the backoff needs of a settings section (``delivery``, ``cdr``)."""

    @property
    def backoff_initial_seconds(self) -> float: ...

    @property
    def backoff_max_seconds(self) -> float: ...


def backoff_delay(failures: int, settings: BackoffSettings, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter between 50 % and 100 %; never shorter than Retry-After.

    The jitter spreads the retries of many lanes (or many CDRs) that failed together, so a peer that
    comes back is not hit by all of them at once. A hostile Retry-After is capped at ten times the
    maximum backoff."""
    base = min(settings.backoff_max_seconds, settings.backoff_initial_seconds * 2 ** max(0, failures - 1))
    delay = base * random.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.backoff_max_seconds * 10))
    return delay
