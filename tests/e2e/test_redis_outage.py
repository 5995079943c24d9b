"""With Redis gone, an OICP push is answered with an OICP error, never a false success, and the
node's readiness says why; when Redis comes back the same processes store pushes again, without a
restart. Redis is cut for this node only, by a TCP proxy between the node and the shared server."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import CPO_CALLS_EMP, CPO_ID, EMP_ID
from tests.e2e.test_broker_outage import PUSH_PATH, push_body
from tests.support.nodes import RUN_ID, NodeProcesses, NodeSpec, cleanup, wait_until
from tests.support.proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


async def test_no_false_success_while_redis_is_down(tmp_path: object) -> None:
    proxy = TcpProxy(6379)
    await proxy.start()
    emp = NodeSpec("emp-redis-outage", provider_ids=[EMP_ID])
    emp.extra = {"redis": {"url": f"redis://127.0.0.1:{proxy.port}/0", "key_prefix": f"{RUN_ID}:{emp.name}:"}}
    emp.peers = [{"id": CPO_ID, "role": "cpo", "base_url": "http://127.0.0.1:9", "inbound_token": CPO_CALLS_EMP}]
    nodes = NodeProcesses([emp], tmp_path)  # type: ignore[arg-type]
    headers = {"Authorization": f"Bearer {CPO_CALLS_EMP}"}
    internal = {"Authorization": f"Bearer {emp.internal_token}"}
    try:
        await nodes.start()
        async with aiohttp.ClientSession() as http:

            async def push(evse_id: str) -> tuple[str, bool, str]:
                async with http.post(emp.oicp_url + PUSH_PATH, json=push_body(evse_id), headers=headers) as r:
                    assert r.status == 200, await r.text()
                    body = await r.json()
                    return body["StatusCode"]["Code"], body["Result"], body["StatusCode"].get("AdditionalInfo", "")

            async def stored(evse_id: str) -> bool:
                async with http.get(f"{emp.internal_url}/evses/{evse_id}/status", headers=internal) as r:
                    return r.status == 200

            assert (await push("DE*GEF*E100"))[0] == "000"
            await wait_until(lambda: stored("DE*GEF*E100"), what="the first push stored")

            await proxy.cut()
            for i in range(3):
                code, result, info = await push(f"DE*GEF*E20{i}")
                assert code != "000" and result is False, "a push must not be acknowledged without Redis"
                said = "unavailable" in info.lower() or "without storage" in info
                assert said, f"the refusal should say what is missing: {code} {info!r}"
            async with http.get(f"{emp.internal_url}/readyz", headers=emp.monitoring_headers) as r:
                assert r.status == 503 and (await r.json())["checks"]["redis"] is False

            await proxy.restore()

            attempts = iter(range(300, 400))
            accepted: list[str] = []

            async def accepted_again() -> bool:
                evse_id = f"DE*GEF*E{next(attempts)}"
                if (await push(evse_id))[0] == "000":
                    accepted.append(evse_id)
                return bool(accepted)

            await wait_until(accepted_again, timeout=60, interval=1, what="pushes accepted after Redis returned")
            assert await stored(accepted[0])  # acknowledged means stored
    finally:
        nodes.stop()
        await proxy.cut()
        await cleanup([emp])
