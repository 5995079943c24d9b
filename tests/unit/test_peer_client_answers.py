"""What the peer client takes for a peer's acknowledgement: only a real one. A lax ``Result`` ("yes",
1) or a redirect must never count as accepted: the delivery lanes would drop records the peer never
took. A small HTTP server on 127.0.0.1 plays the peer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from pydantic import ValidationError

from shared.oicp import Acknowledgement
from shared.oicp.messages import PushEvseStatusRequest
from shared.peers.client import PeerCallError, PeerClient
from shared.settings import PeerConfig

PATH = "/api/oicp/evsepush/v21/operators/DE*GEF/status-records"
SUCCESS = {"Result": True, "StatusCode": {"Code": "000"}}
ANSWERS: dict[str, Any] = {
    "success": SUCCESS,
    "result yes": {"Result": "yes", "StatusCode": {"Code": "000"}},
    "result 1": {"Result": 1, "StatusCode": {"Code": "000"}},
    "result 'true'": {"Result": "true", "StatusCode": {"Code": "000"}},
}


class Peer:
    def __init__(self) -> None:
        self.answer: str = "success"
        self.calls: list[str] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.calls.append(request.path)
        if self.answer == "redirect":
            raise web.HTTPTemporaryRedirect("/elsewhere")
        return web.json_response(ANSWERS[self.answer])

    async def elsewhere(self, request: web.Request) -> web.StreamResponse:
        self.calls.append(request.path)
        return web.json_response(SUCCESS)


@pytest_asyncio.fixture(loop_scope="session")
async def peer() -> AsyncIterator[Peer]:
    fake = Peer()
    app = web.Application()
    app.router.add_post(PATH, fake.handle)
    app.router.add_post("/elsewhere", fake.elsewhere)
    fake.runner = web.AppRunner(app, access_log=None)
    await fake.runner.setup()
    site = web.TCPSite(fake.runner, "127.0.0.1", 0)
    await site.start()
    fake.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield fake
    await fake.runner.cleanup()


def config(port: int) -> PeerConfig:
    return PeerConfig.model_validate(
        {"id": "DE-GDF", "role": "emp", "base_url": f"http://127.0.0.1:{port}", "outbound_token": "t"}
    )


def body() -> PushEvseStatusRequest:
    return PushEvseStatusRequest.model_validate(
        {
            "ActionType": "update",
            "OperatorEvseStatus": {
                "OperatorID": "DE*GEF",
                "EvseStatusRecord": [{"EvseID": "DE*GEF*E1", "EvseStatus": "Available"}],
            },
        }
    )


@pytest.mark.asyncio(loop_scope="session")
async def test_a_real_acknowledgement_is_taken(peer: Peer) -> None:
    client = PeerClient.create()
    try:
        answer = await client.call(config(peer.port), PATH, body(), Acknowledgement)
    finally:
        await client.close()
    assert answer.result is True and answer.status_code.is_success


@pytest.mark.parametrize("answer", ["result yes", "result 1", "result 'true'"])
@pytest.mark.asyncio(loop_scope="session")
async def test_a_result_that_is_not_a_json_boolean_is_an_invalid_answer(peer: Peer, answer: str) -> None:
    peer.answer = answer
    client = PeerClient.create()
    try:
        with pytest.raises(PeerCallError) as info:
            await client.call(config(peer.port), PATH, body(), Acknowledgement)
    finally:
        await client.close()
    assert info.value.kind == "invalid_response" and "Result" in str(info.value), info.value


@pytest.mark.asyncio(loop_scope="session")
async def test_a_redirect_is_an_error_and_is_not_followed(peer: Peer) -> None:
    peer.answer = "redirect"
    client = PeerClient.create()
    try:
        with pytest.raises(PeerCallError) as info:
            await client.call(config(peer.port), PATH, body(), Acknowledgement)
    finally:
        await client.close()
    assert info.value.kind == "http" and info.value.http_status == 307, info.value
    assert peer.calls == [PATH], "the body went to the redirect's target"


def test_oicp_booleans_are_json_booleans() -> None:
    """Every OICP boolean field is strict: "yes", 1 or "true" are refused with the field named."""
    for value in ("yes", 1, "true"):
        with pytest.raises(ValidationError) as info:
            Acknowledgement.model_validate({"Result": value, "StatusCode": {"Code": "000"}})
        assert info.value.errors()[0]["loc"] == ("Result",)
