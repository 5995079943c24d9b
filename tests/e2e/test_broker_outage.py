"""With the broker gone, an OICP push is answered with an OICP error, never a false success; when it
comes back the gateway accepts pushes again and the workers store them, without a restart."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import CPO_CALLS_EMP, CPO_ID, EMP_ID
from tests.support.nodes import NodeProcesses, NodeSpec, cleanup, wait_until
from tests.support.outage import StatusPusher
from tests.support.proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


async def test_no_false_success_while_the_broker_is_down(tmp_path: object) -> None:
    proxy = TcpProxy(5672)
    await proxy.start()
    emp = NodeSpec("emp-outage", provider_ids=[EMP_ID], amqp_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/")
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
                assert await node.code(f"DE*GEF*E20{i}") == "021", "a push must not be acknowledged without the broker"
            async with http.get(f"{emp.internal_url}/readyz", headers=emp.monitoring_headers) as r:
                assert r.status == 503 and (await r.json())["checks"]["rabbitmq"] is False

            await proxy.restore()
            accepted = await node.first_accepted("pushes accepted after the broker returned")
            # acknowledged means stored: the worker consumed and applied it before the answer
            assert await node.stored(accepted)
    finally:
        nodes.stop()
        await proxy.cut()
        await cleanup([emp])
