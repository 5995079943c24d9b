"""The delivery lanes' timing policy: exponential backoff with jitter that honours Retry-After, and the
per-peer rate limit (a minimum interval between two requests of a lane)."""

from __future__ import annotations

import random
import time

import pytest

from services.evse_push.delivery import RateLimiter, backoff_delay
from shared.settings import DeliverySettings

SETTINGS = DeliverySettings(backoff_initial_seconds=0.5, backoff_max_seconds=60)


@pytest.mark.parametrize("failures", [1, 2, 3, 5, 8, 20])
def test_backoff_doubles_up_to_the_maximum_with_jitter(failures: int) -> None:
    base = min(60, 0.5 * 2 ** (failures - 1))
    delays = [backoff_delay(failures, SETTINGS) for _ in range(200)]
    assert all(base * 0.5 <= d <= base for d in delays)
    assert len({round(d, 6) for d in delays}) > 100, "jitter spreads the retries of many lanes"


def test_backoff_never_retries_before_retry_after() -> None:
    random.seed(1)
    assert all(backoff_delay(1, SETTINGS, retry_after=30) >= 30 for _ in range(100))
    # a hostile Retry-After is capped (ten times the maximum backoff)
    assert backoff_delay(1, SETTINGS, retry_after=10**9) == 600


async def test_rate_limit_spaces_requests() -> None:
    limiter = RateLimiter(20.0)  # 20 requests per second: 50 ms apart
    started = time.monotonic()
    for _ in range(6):
        await limiter.wait()
    # five intervals between six requests; sleeping never ends early, so this bound holds on any machine
    assert time.monotonic() - started >= 5 * 0.05 - 0.005


async def test_no_rate_limit_never_waits() -> None:
    limiter = RateLimiter(None)
    assert limiter.interval == 0.0
    for _ in range(1000):
        await limiter.wait()
