"""Rate limits without Redis: the sliding-window log on a fake clock (n calls in any 60 s, the
whole budget as burst, an exact Retry-After), which limit applies to which peer and operation, the
outbound wait and the inbound refusal, and the settings that configure them."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from services.gateway.oicp_face import Refusal
from services.gateway.ratelimit import check_inbound, retry_after_header
from shared.oicp.messages import (
    PullEvseStatusByIdRequest,
    PullEvseStatusByOperatorIdRequest,
    PullEvseStatusRequest,
)
from shared.oicp.operations import OPERATIONS, OPERATIONS_BY_NAME
from shared.peers.client import PeerCallError, PeerClient
from shared.ratelimit import (
    WINDOW_SECONDS,
    Decision,
    Direction,
    MemoryWindow,
    RateLimiter,
    RateLimitExceeded,
    limited_operation,
    operation_of_call,
)
from shared.settings import HUBJECT_RATE_LIMITS, ConfigError, PeerConfig, RateLimits, load_settings
from shared.stores.redis import KeySpace


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def emp_peer(**fields: Any) -> PeerConfig:
    return PeerConfig.model_validate({"id": "DE-GDF", "role": "emp", "base_url": "http://127.0.0.1:1", **fields})


def limiter(clock: FakeClock, settings: RateLimits | None = None) -> RateLimiter:
    return RateLimiter(MemoryWindow(clock), KeySpace("unit:"), settings or RateLimits(), clock.sleep, clock)


# ---- the window --------------------------------------------------------------------------------


async def test_the_whole_budget_may_come_at_once_then_retry_after_is_when_the_oldest_call_leaves() -> None:
    clock = FakeClock()
    window = MemoryWindow(clock)
    for _ in range(3):
        assert (await window.acquire("k", 3)).allowed
        clock.now += 5
    refused = await window.acquire("k", 3)
    assert not refused.allowed and refused.limit == 3
    # calls at 1000, 1005, 1010; now 1015: the first leaves the window at 1060
    assert refused.retry_after == pytest.approx(45.0)
    clock.now += refused.retry_after - 0.001
    assert not (await window.acquire("k", 3)).allowed
    clock.now += 0.001
    assert (await window.acquire("k", 3)).allowed


async def test_refused_calls_do_not_use_up_the_budget_and_keys_are_independent() -> None:
    clock = FakeClock()
    window = MemoryWindow(clock)
    assert (await window.acquire("a", 1)).allowed
    for _ in range(10):
        assert not (await window.acquire("a", 1)).allowed
    assert (await window.acquire("b", 1)).allowed
    clock.now += WINDOW_SECONDS
    assert (await window.acquire("a", 1)).allowed


async def test_a_lowered_limit_waits_until_enough_calls_left_the_window() -> None:
    clock = FakeClock()
    window = MemoryWindow(clock)
    for _ in range(4):
        assert (await window.acquire("k", 4)).allowed
        clock.now += 1
    # the limit drops to 2 (a configuration change): the 3rd oldest call (at 1002) must leave first
    assert (await window.acquire("k", 2)).retry_after == pytest.approx(1002 + WINDOW_SECONDS - 1004)


async def test_never_more_than_n_calls_in_any_60_second_window() -> None:
    clock = FakeClock()
    window = MemoryWindow(clock)
    rng = random.Random(3)
    allowed: list[float] = []
    for _ in range(3000):
        clock.now += rng.expovariate(1.0)  # about 60 attempts a minute against a limit of 20
        if (await window.acquire("k", 20)).allowed:
            allowed.append(clock.now)
    assert len(allowed) > 500
    for start, later in zip(allowed, allowed[20:], strict=False):
        assert later - start >= WINDOW_SECONDS  # the 21st call after any call is a full window later
    # and the budget is used: back to back bursts of 20 do occur
    assert any(b - a < 25 for a, b in zip(allowed, allowed[19:], strict=False))


# ---- which operation, which limit --------------------------------------------------------------


def test_the_status_pull_path_is_limited_by_the_variant_its_body_asks_for() -> None:
    by_id = PullEvseStatusByIdRequest.model_validate({"ProviderID": "DE-GDF", "EvseID": ["DE*GEF*E1"]})
    by_operator = PullEvseStatusByOperatorIdRequest.model_validate({"ProviderID": "DE-GDF", "OperatorID": ["DE*GEF"]})
    full = PullEvseStatusRequest.model_validate({"ProviderID": "DE-GDF"})
    assert limited_operation("PullEvseStatus", by_id) == "PullEvseStatusById"
    assert limited_operation("PullEvseStatus", by_operator) == "PullEvseStatusByOperatorId"
    assert limited_operation("PullEvseStatus", full) == "PullEvseStatus"
    assert limited_operation("PushEvseStatus", by_id) == "PushEvseStatus"
    path = OPERATIONS_BY_NAME["PullEvseStatus"].path.format(providerID="DE-GDF")
    assert operation_of_call(path, by_id) == "PullEvseStatusById"


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda o: o.name)
def test_every_catalogue_path_names_its_operation(operation: Any) -> None:
    path = operation.path.format(operatorID="DE*GEF", providerID="DE-GDF")
    assert operation_of_call(path, None) == operation.name
    assert operation.name in HUBJECT_RATE_LIMITS


def test_paths_outside_the_catalogue_are_not_limited() -> None:
    assert operation_of_call("/somewhere/else", None) is None
    assert operation_of_call("/api/oicp/evsepush/v21/operators/DE*GEF/status-records/more", None) is None


def test_the_peers_own_limit_wins_over_the_nodes_and_none_is_unlimited() -> None:
    clock = FakeClock()
    rate = limiter(clock, RateLimits(per_minute={"PushEvseData": 10}))
    peer = emp_peer(rate_limits={"PushEvseStatus": 3, "PushEVSEPricing": None})
    assert rate.limit_for(peer, "PushEvseStatus") == 3
    assert rate.limit_for(peer, "PushEvseData") == 10  # the node's setting
    assert rate.limit_for(peer, "PullEvseStatus") == 6  # Hubject's default
    assert rate.limit_for(peer, "PushEVSEPricing") is None
    assert rate.limit_for(peer, "NotAnOperation") is None
    off = limiter(clock, RateLimits(enabled=False))
    assert off.limit_for(peer, "PushEvseStatus") is None


async def test_directions_and_peers_have_separate_budgets() -> None:
    clock = FakeClock()
    rate = limiter(clock)
    one, other = emp_peer(rate_limits={"PushEvseStatus": 1}), emp_peer(id="DE-XYZ", rate_limits={"PushEvseStatus": 1})
    assert (await rate.check(Direction.OUTBOUND, one, "PushEvseStatus")).allowed
    assert not (await rate.check(Direction.OUTBOUND, one, "PushEvseStatus")).allowed
    assert (await rate.check(Direction.INBOUND, one, "PushEvseStatus")).allowed
    assert (await rate.check(Direction.OUTBOUND, other, "PushEvseStatus")).allowed
    assert (await rate.check(Direction.OUTBOUND, one, "PushEvseData")).allowed


# ---- outbound: wait, or give up with Retry-After -------------------------------------------------


async def test_outbound_waits_for_a_slot_within_its_budget() -> None:
    clock = FakeClock()
    rate = limiter(clock)
    peer = emp_peer(rate_limits={"PushEvseStatus": 2})
    assert await rate.wait_outbound(peer, "PushEvseStatus", 5) == 0
    clock.now += 56
    assert await rate.wait_outbound(peer, "PushEvseStatus", 5) == 0
    # both slots are taken until 1060: 4 s away, within the budget
    assert await rate.wait_outbound(peer, "PushEvseStatus", 5) == pytest.approx(4.0)
    assert clock.slept == [pytest.approx(4.0)]
    # the next slot frees at 1116, 56 s away: beyond the budget
    with pytest.raises(RateLimitExceeded) as info:
        await rate.wait_outbound(peer, "PushEvseStatus", 5)
    assert info.value.retry_after == pytest.approx(56.0) and info.value.limit == 2


async def test_the_peer_client_turns_a_wait_too_long_into_a_rate_limited_error() -> None:
    clock = FakeClock()
    client = PeerClient.create(limiter=limiter(clock))
    peer = emp_peer(rate_limits={"PushEvseStatus": 1}, timeout_seconds=4)
    assert await client._take_slot(peer, "PushEvseStatus") == 0
    with pytest.raises(PeerCallError) as info:
        await client._take_slot(peer, "PushEvseStatus")
    assert info.value.kind == "rate_limited" and info.value.retry_after == pytest.approx(60.0)
    assert await client._take_slot(peer, None) == 0  # not a catalogue call: not limited
    assert await PeerClient.create()._take_slot(peer, "PushEvseStatus") == 0  # no limiter


# ---- inbound: HTTP 429 with Retry-After ----------------------------------------------------------


def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one() -> None:
    assert [retry_after_header(s) for s in (0.0, 0.2, 1.0, 1.01, 59.5)] == [1, 1, 1, 2, 60]


async def test_inbound_refusal_is_429_with_retry_after_and_an_oicp_code() -> None:
    clock = FakeClock()
    ctx: Any = SimpleNamespace(rate_limiter=limiter(clock))
    caller = emp_peer(rate_limits={"PullEvseStatusById": 1})
    dispatching = OPERATIONS_BY_NAME["PullEvseStatus"]
    by_id = PullEvseStatusByIdRequest.model_validate({"ProviderID": "DE-GDF", "EvseID": ["DE*GEF*E1"]})
    # the dispatching path counts once, after its body is parsed, against the variant's limit
    await check_inbound(ctx, caller, dispatching)
    await check_inbound(ctx, caller, dispatching, by_id)
    await check_inbound(ctx, caller, dispatching)
    clock.now += 0.5
    with pytest.raises(Refusal) as info:
        await check_inbound(ctx, caller, dispatching, by_id)
    refusal = info.value
    assert refusal.http_status == 429 and refusal.retry_after == 60 and refusal.reason == "rate_limited"
    assert refusal.code.value == "021" and "PullEvseStatusById" in refusal.info
    # the snippet path of the same variant shares the budget; it counts before its body is read
    with pytest.raises(Refusal):
        await check_inbound(ctx, caller, OPERATIONS_BY_NAME["PullEvseStatusById"])
    await check_inbound(ctx, caller, OPERATIONS_BY_NAME["PullEvseStatusById"], by_id)  # counted already


async def test_inbound_fails_open_when_the_limiter_cannot_be_asked() -> None:
    class Broken:
        async def acquire(self, key: str, limit: int) -> Decision:
            raise ConnectionError("redis down")

    ctx: Any = SimpleNamespace(rate_limiter=RateLimiter(Broken(), KeySpace("unit:"), RateLimits()))
    await check_inbound(ctx, emp_peer(), OPERATIONS_BY_NAME["PushAuthenticationData"])


# ---- settings ----------------------------------------------------------------------------------


def node_config(**extra: Any) -> dict[str, Any]:
    return {
        "name": "unit-node",
        "operator_ids": ["DE*ABC"],
        "oicp": {"port": 7001},
        "internal": {"port": 7101, "token": "secret"},
        "peers": [{"id": "DE-GDF", "role": "emp", "base_url": "http://127.0.0.1:8001"}],
        **extra,
    }


def load(tmp_path: Path, data: dict[str, Any]) -> Any:
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_settings(path)


def test_the_defaults_are_hubjects_limits_for_every_catalogue_operation(tmp_path: Path) -> None:
    settings = load(tmp_path, node_config())
    assert settings.rate_limits.enabled
    assert settings.rate_limits.per_minute == HUBJECT_RATE_LIMITS
    assert set(HUBJECT_RATE_LIMITS) == {op.name for op in OPERATIONS}
    assert HUBJECT_RATE_LIMITS["AuthorizeRemoteReservationStart"] == HUBJECT_RATE_LIMITS["AuthorizeRemoteStart"]
    assert HUBJECT_RATE_LIMITS["AuthorizeRemoteReservationStop"] == HUBJECT_RATE_LIMITS["AuthorizeRemoteStop"]


def test_node_limits_merge_over_the_defaults_and_accept_hubjects_spelling(tmp_path: Path) -> None:
    settings = load(
        tmp_path, node_config(rate_limits={"per_minute": {"PullEVSEStatus": 12, "AuthorizationStart": None}})
    )
    per_minute = settings.rate_limits.per_minute
    assert per_minute["PullEvseStatus"] == 12 and per_minute["AuthorizeStart"] is None
    assert per_minute["PushEvseStatus"] == 2000 and "PullEVSEStatus" not in per_minute


def test_peer_limits_are_validated_and_kept_with_the_peer(tmp_path: Path) -> None:
    peer = {"id": "DE-GDF", "role": "emp", "base_url": "http://127.0.0.1:8001", "rate_limits": {"PushEVSEStatus": 5}}
    settings = load(tmp_path, node_config(peers=[peer]))
    assert settings.peers[0].rate_limits == {"PushEvseStatus": 5}
    assert settings.peers[0].storage_dict()["rate_limits"] == {"PushEvseStatus": 5}
    assert PeerConfig.model_validate(settings.peers[0].storage_dict()).rate_limits == {"PushEvseStatus": 5}


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ({"rate_limits": {"per_minute": {"PushEvseStatuz": 5}}}, "rate_limits.per_minute", "'PushEvseStatuz'"),
        (
            {"rate_limits": {"per_minute": {"PushEvseStatus": 0}}},
            "rate_limits.per_minute.PushEvseStatus",
            "greater than or equal to 1",
        ),
        ({"rate_limits": {"burst": 5}}, "rate_limits.burst", "Extra inputs"),
        (
            {"peers": [{"id": "DE-GDF", "role": "emp", "base_url": "http://a.example", "rate_limits": {"Foo": 1}}]},
            "peers.0.rate_limits",
            "'Foo' is not a rate-limited OICP operation",
        ),
    ],
)
def test_bad_limits_are_refused_with_the_key_named(tmp_path: Path, extra: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, node_config(**extra))
    message = str(info.value)
    assert f"{key}:" in message and words in message, message
