"""The OICP port's limits on what a request may cost before it is refused: nesting depth of the JSON
body, and the time a client may take to send it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request

from services.gateway.oicp_face import Refusal, json_depth_exceeds, read_json_body

#: A read timeout short enough for a unit test; the default is 30 s.
SHORT_TIMEOUT = 0.05


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": [value]}
    return value


def test_depth_is_measured_over_containers_only() -> None:
    assert not json_depth_exceeds({"a": 1, "b": [1, 2, {"c": "d"}]}, 3)
    assert json_depth_exceeds({"a": 1, "b": [1, 2, {"c": {"d": 1}}]}, 3)
    assert not json_depth_exceeds({"records": [{"x": i} for i in range(10_000)]}, 3)
    assert json_depth_exceeds(nested(100_000), 32), "no recursion: a hostile depth cannot blow the stack"


def request_with(chunks: list[bytes], stall: bool = False) -> Request:
    async def receive() -> dict[str, Any]:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks) or stall}
        await asyncio.Event().wait()  # a client that never sends the rest
        raise AssertionError("unreachable")

    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", b"application/json")]}
    return Request(scope, receive)


@pytest.mark.asyncio
async def test_a_body_that_does_not_arrive_in_time_gets_408() -> None:
    with pytest.raises(Refusal) as refused:
        await read_json_body(request_with([b'{"a":'], stall=True), 1024, timeout=SHORT_TIMEOUT)
    assert refused.value.http_status == 408 and "not received" in refused.value.info


@pytest.mark.asyncio
async def test_a_body_too_deep_gets_400_and_a_normal_one_passes() -> None:
    with pytest.raises(Refusal) as refused:
        await read_json_body(request_with([b'{"a":' * 40 + b"1" + b"}" * 40]), 4096, max_depth=32)
    assert refused.value.http_status == 400 and "deeper than 32" in refused.value.info
    assert await read_json_body(request_with([b'{"a": [1, {"b": 2}]}']), 4096) == {"a": [1, {"b": 2}]}
