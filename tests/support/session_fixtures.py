"""Session-scoped fixtures of the session tests, loaded as a plugin by the test modules that use them
(``pytest_plugins = ("tests.support.session_fixtures",)``): defined once, so the quick pair of nodes
starts once per run however many modules use it. Helpers and constants: ``tests.support.sessions``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from tests.support.nodes import REDIS_URL, NodeProcesses, NodeSpec, cleanup
from tests.support.sessions import (
    CPO_CALLS_EMP,
    CPO_ID,
    DOWN_OPERATOR,
    EMP_CALLS_CPO,
    EMP_GIVES_UP_SECONDS,
    EMP_ID,
    FailingCpo,
    Ledgers,
    QuickPair,
    quick_settings,
)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def quick_pair(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[QuickPair]:
    down = FailingCpo()
    await down.start()
    cpo = NodeSpec("qcpo", operator_ids=[CPO_ID], extra=quick_settings())
    emp = NodeSpec("qemp", provider_ids=[EMP_ID], extra=quick_settings())
    cpo.peers = [
        {
            "id": EMP_ID,
            "role": "emp",
            "base_url": emp.oicp_url,
            "inbound_token": EMP_CALLS_CPO,
            "outbound_token": CPO_CALLS_EMP,
        }
    ]
    emp.peers = [
        {
            "id": CPO_ID,
            "role": "cpo",
            "base_url": cpo.oicp_url,
            "inbound_token": CPO_CALLS_EMP,
            "outbound_token": EMP_CALLS_CPO,
            "timeout_seconds": EMP_GIVES_UP_SECONDS,
        },
        {"id": DOWN_OPERATOR, "role": "cpo", "base_url": down.url, "outbound_token": "to-the-down-cpo"},
    ]
    processes = NodeProcesses([cpo, emp], tmp_path_factory.mktemp("quick"))
    try:
        await processes.start()
        yield QuickPair(cpo, emp, down, processes)
    finally:
        processes.stop()
        await down.stop()
        await cleanup([cpo, emp])


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def ledgers() -> AsyncIterator[Ledgers]:
    client = aioredis.from_url(REDIS_URL)
    try:
        yield Ledgers(client)
    finally:
        await client.aclose()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def web_client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
