"""The rate limiter's Lua script against the real Redis: n calls per window and not one more, the
whole budget as burst, a Retry-After that is right, one budget shared by clients on separate
connections (replicas), atomic under concurrency, and keys that expire when idle."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.ratelimit import WINDOW_SECONDS, Direction, RateLimiter, RateLimitExceeded, RedisWindow
from shared.settings import PeerConfig, RateLimits
from shared.stores.redis import KeySpace
from tests.support.nodes import REDIS_URL, RUN_ID

pytestmark = pytest.mark.asyncio(loop_scope="session")

SHORT_WINDOW = 1.5  # seconds: lets a test see a window pass without waiting a minute


@pytest_asyncio.fixture(loop_scope="session")
async def prefix() -> AsyncIterator[str]:
    prefix = f"{RUN_ID}:ratelimit-{uuid.uuid4().hex[:6]}:"
    yield prefix
    async with aioredis.from_url(REDIS_URL) as redis:
        keys = [k async for k in redis.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await redis.delete(*keys)


@pytest_asyncio.fixture(loop_scope="session")
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(REDIS_URL)
    yield client
    await client.aclose()


async def test_n_calls_in_a_burst_then_refused_with_the_time_until_the_first_leaves(
    redis: aioredis.Redis, prefix: str
) -> None:
    window = RedisWindow(redis)
    key = prefix + "burst"
    started = time.monotonic()
    for _ in range(5):
        assert (await window.acquire(key, 5)).allowed
    refused = await window.acquire(key, 5)
    elapsed = time.monotonic() - started
    assert not refused.allowed and refused.limit == 5
    assert WINDOW_SECONDS - elapsed - 0.5 <= refused.retry_after <= WINDOW_SECONDS
    assert await redis.zcard(key) == 5  # the refused call was not recorded
    assert 0 < await redis.pttl(key) <= WINDOW_SECONDS * 1000  # an idle key goes away


async def test_after_retry_after_a_slot_is_free_and_not_before(redis: aioredis.Redis, prefix: str) -> None:
    window = RedisWindow(redis, window=SHORT_WINDOW)
    key = prefix + "short"
    for _ in range(2):
        assert (await window.acquire(key, 2)).allowed
    refused = await window.acquire(key, 2)
    assert not refused.allowed and 0 < refused.retry_after <= SHORT_WINDOW
    await asyncio.sleep(refused.retry_after / 2)
    assert not (await window.acquire(key, 2)).allowed
    await asyncio.sleep(refused.retry_after / 2 + 0.01)
    assert (await window.acquire(key, 2)).allowed


async def test_one_budget_for_clients_on_separate_connections(prefix: str) -> None:
    """Two replicas (two connection pools, two limiters) share one peer's limit."""
    peer = PeerConfig.model_validate(
        {"id": "DE-GDF", "role": "emp", "base_url": "http://127.0.0.1:1", "rate_limits": {"PushEvseStatus": 7}}
    )
    first, second = aioredis.from_url(REDIS_URL), aioredis.from_url(REDIS_URL)
    try:
        limiters = [RateLimiter.for_redis(r, KeySpace(prefix), RateLimits()) for r in (first, second)]
        outcomes = [
            (await limiters[n % 2].check(Direction.OUTBOUND, peer, "PushEvseStatus")).allowed for n in range(12)
        ]
        assert outcomes == [True] * 7 + [False] * 5
        # the other direction and another operation have budgets of their own
        assert (await limiters[1].check(Direction.INBOUND, peer, "PushEvseStatus")).allowed
        assert (await limiters[0].check(Direction.OUTBOUND, peer, "PushEvseData")).allowed
        # an outbound call that would wait about a minute gives up at once with Retry-After
        with pytest.raises(RateLimitExceeded) as info:
            await limiters[0].wait_outbound(peer, "PushEvseStatus", budget=5)
        assert info.value.retry_after > 5
    finally:
        await first.aclose()
        await second.aclose()


async def test_concurrent_calls_never_get_more_than_the_limit(prefix: str) -> None:
    clients = [aioredis.from_url(REDIS_URL) for _ in range(4)]
    try:
        windows = [RedisWindow(c) for c in clients]
        key = prefix + "concurrent"
        decisions = await asyncio.gather(*(windows[n % 4].acquire(key, 25) for n in range(200)))
        assert sum(d.allowed for d in decisions) == 25
        assert all(d.retry_after > 0 for d in decisions if not d.allowed)
    finally:
        for client in clients:
            await client.aclose()


async def test_outbound_waits_for_a_slot_that_frees_within_its_budget(redis: aioredis.Redis, prefix: str) -> None:
    peer = PeerConfig.model_validate(
        {"id": "DE-GDF", "role": "emp", "base_url": "http://127.0.0.1:1", "rate_limits": {"PushEvseStatus": 1}}
    )
    limiter = RateLimiter(RedisWindow(redis, window=SHORT_WINDOW), KeySpace(prefix), RateLimits())
    assert await limiter.wait_outbound(peer, "PushEvseStatus", budget=5) == 0
    started = time.monotonic()
    waited = await limiter.wait_outbound(peer, "PushEvseStatus", budget=5)
    assert SHORT_WINDOW * 0.8 <= waited <= time.monotonic() - started + 0.01
