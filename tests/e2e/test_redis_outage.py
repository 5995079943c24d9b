"""With Redis gone, an OICP push is answered with an OICP error, never a false success, and the
node's readiness says why; when Redis comes back the same processes store pushes again, without a
restart. Redis is cut for this node only, by a TCP proxy between the node and the shared server."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import CPO_CALLS_EMP, CPO_ID, EMP_ID
from tests.support.nodes import RUN_ID, NodeProcesses, NodeSpec, cleanup, wait_until
from tests.support.outage import StatusPusher
from tests.support.proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


async def test_no_false_success_while_redis_is_down(tmp_path: object) -> None:
    proxy = TcpProxy(6379)
    await proxy.start()
    emp = NodeSpec("emp-redis-outage", provider_ids=[EMP_ID])
    emp.extra = {"redis": {"url": f"redis://127.0.0.1:{proxy.port}/0", "key_prefix": f"{RUN_ID}:{emp.name}:"}}
    emp.peers = [{"id": CPO_ID, "role": "cpo", "base_url": "http://127.0.0.1:9", "inbound_token": CPO_CALLS_EMP}]
    nodes = NodeProcesses([emp], tmp_path)  # type: ignore[arg-type]
    try:
        await nodes.start()
        async with aiohttp.ClientSession() as http:
            node = StatusPusher(http, emp, CPO_CALLS_EMP)
            assert await node.code("DE*GEF*E100") == "000"
            await wait_until(lambda: node.stored("DE*GEF*E100"), what="the first push stored")

            await proxy.cut()
            for i in range(3):
                answer = await node.push(f"DE*GEF*E20{i}")
                code, result = answer["StatusCode"]["Code"], answer["Result"]
                info = answer["StatusCode"].get("AdditionalInfo", "")
                assert code != "000" and result is False, "a push must not be acknowledged without Redis"
                said = "unavailable" in info.lower() or "without storage" in info
                assert said, f"the refusal should say what is missing: {code} {info!r}"
            async with http.get(f"{emp.internal_url}/readyz", headers=emp.monitoring_headers) as r:
                assert r.status == 503 and (await r.json())["checks"]["redis"] is False

            await proxy.restore()
            accepted = await node.first_accepted("pushes accepted after Redis returned")
            assert await node.stored(accepted)  # acknowledged means stored
    finally:
        nodes.stop()
        await proxy.cut()
        await cleanup([emp])
