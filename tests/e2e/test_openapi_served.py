"""A running gateway serves its OpenAPI documents on the internal API, without a token, exactly as
``python -m services.gateway.openapi`` generates them (docs/openapi/*.json)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from services.gateway.openapi import INTERNAL_DOCUMENT_PATH, OICP_DOCUMENT_PATH, internal_openapi, oicp_openapi
from tests.conftest import Pair

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


async def fetch(url: str) -> tuple[int, str, Any]:
    """GET without an Authorization header: (status, content type, JSON body)."""
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, response.content_type, json.loads(await response.read())


@pytest.mark.parametrize(
    ("path", "build"),
    [(OICP_DOCUMENT_PATH, oicp_openapi), (INTERNAL_DOCUMENT_PATH, internal_openapi)],
    ids=["oicp", "internal"],
)
async def test_documents_are_served_without_a_token(pair: Pair, path: str, build: Any) -> None:
    for node in (pair.cpo, pair.emp):
        status, content_type, document = await fetch(node.internal_url + path)
        assert status == 200, f"{node.name}: GET {path} answered {status}"
        assert content_type == "application/json"
        assert document == build()


async def test_the_oicp_port_does_not_serve_them(pair: Pair) -> None:
    """Peers see only OICP on the OICP port: the documents are on the internal API."""
    async with aiohttp.ClientSession() as http, http.get(pair.cpo.oicp_url + OICP_DOCUMENT_PATH) as response:
        assert response.status in (404, 405)
