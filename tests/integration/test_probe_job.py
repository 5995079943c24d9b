"""The periodic peer probes against the real Redis: one process of the node probes (the lease), the
results land in the probe store for every gateway, results of removed peers are dropped, and another
process takes over once the holder stops."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from services.sessions.app import SessionsDeps
from services.sessions.probes import ProbeJob
from shared.settings import NodeSettings
from tests.support.nodes import REDIS_URL, RUN_ID, free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")

DOWN, QUIET, OFF = "DE-PDN", "DE-PQT", "DE-POF"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("OICP_P2P_"):
            monkeypatch.delenv(name)


def settings(prefix: str) -> NodeSettings:
    def peer(peer_id: str, **extra: object) -> dict[str, object]:
        return {"id": peer_id, "role": "emp", "base_url": f"http://127.0.0.1:{free_port()}", **extra}

    return NodeSettings(
        name="probe-job",
        operator_ids=["DE*PJB"],
        oicp={"port": free_port()},
        internal={"port": free_port(), "token": "t"},
        redis={"url": REDIS_URL, "key_prefix": prefix},
        probes={"interval_seconds": 60},
        peers=[
            peer(DOWN, timeout_seconds=1),
            peer(QUIET, probe={"operation": "none"}, enabled=False),  # disabled: not probed
            peer(OFF, probe={"enabled": False}),  # its periodic probe is off
        ],
    )


@pytest_asyncio.fixture(loop_scope="session")
async def jobs() -> AsyncIterator[tuple[ProbeJob, ProbeJob]]:
    prefix = f"{RUN_ID}:probejob-{uuid.uuid4().hex[:6]}:"
    first, second = SessionsDeps.build(settings(prefix)), SessionsDeps.build(settings(prefix))
    yield ProbeJob(first), ProbeJob(second)
    keys = [k async for k in first.redis.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await first.redis.delete(*keys)
    for deps in (first, second):
        await deps.client.close()
        await deps.redis.aclose()


async def test_one_process_probes_and_every_result_is_stored(jobs: tuple[ProbeJob, ProbeJob]) -> None:
    holder, other = jobs
    await holder.store.save("emp", "DEGONE", {"peer_id": "DE-GON", "ok": True})  # a peer removed since
    results = await holder.round()
    assert [r.peer_id for r in results] == [DOWN]
    assert results[0].failed_step == "tcp"
    assert await other.round() == []  # the lease is the holder's
    stored = await other.store.all()
    assert set(stored) == {"emp:DEPDN"}
    assert stored["emp:DEPDN"]["reason"].startswith("tcp: connection failed")

    await holder.stop()  # releases the lease
    assert [r.peer_id for r in await other.round()] == [DOWN]
    assert await holder.round() == []
