"""With the broker gone, an OICP push is answered with an OICP error, never a false success; when it
comes back the gateway accepts pushes again and the workers store them, without a restart."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import CPO_CALLS_EMP, CPO_ID, EMP_ID
from tests.support.nodes import NodeProcesses, NodeSpec, cleanup, wait_until
from tests.support.proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

PUSH_PATH = "/api/oicp/evsepush/v21/operators/DE*GEF/status-records"


def push_body(evse_id: str) -> dict[str, object]:
    return {
        "ActionType": "insert",  # every push names a new EVSE
        "OperatorEvseStatus": {
            "OperatorID": CPO_ID,
            "EvseStatusRecord": [{"EvseID": evse_id, "EvseStatus": "Occupied"}],
        },
    }


async def test_no_false_success_while_the_broker_is_down(tmp_path: object) -> None:
    proxy = TcpProxy(5672)
    await proxy.start()
    emp = NodeSpec("emp-outage", provider_ids=[EMP_ID], amqp_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/")
    emp.peers = [{"id": CPO_ID, "role": "cpo", "base_url": "http://127.0.0.1:9", "inbound_token": CPO_CALLS_EMP}]
    nodes = NodeProcesses([emp], tmp_path)  # type: ignore[arg-type]
    headers = {"Authorization": f"Bearer {CPO_CALLS_EMP}"}
    internal = {"Authorization": f"Bearer {emp.internal_token}"}
    try:
        await nodes.start()
        async with aiohttp.ClientSession() as http:

            async def push(evse_id: str) -> str:
                async with http.post(emp.oicp_url + PUSH_PATH, json=push_body(evse_id), headers=headers) as r:
                    assert r.status == 200
                    return (await r.json())["StatusCode"]["Code"]

            async def stored(evse_id: str) -> bool:
                async with http.get(f"{emp.internal_url}/evses/{evse_id}/status", headers=internal) as r:
                    return r.status == 200

            assert await push("DE*GEF*E100") == "000"
            await wait_until(lambda: stored("DE*GEF*E100"), what="the first push stored")

            await proxy.cut()
            for i in range(3):
                assert await push(f"DE*GEF*E20{i}") == "021", "a push must not be acknowledged without the broker"
            async with http.get(f"{emp.internal_url}/readyz", headers=emp.monitoring_headers) as r:
                assert r.status == 503 and (await r.json())["checks"]["rabbitmq"] is False

            await proxy.restore()

            attempts = iter(range(300, 400))
            accepted: list[str] = []

            async def accepted_again() -> bool:
                evse_id = f"DE*GEF*E{next(attempts)}"
                if await push(evse_id) == "000":
                    accepted.append(evse_id)
                return bool(accepted)

            await wait_until(accepted_again, timeout=60, interval=1, what="pushes accepted after the broker returned")
            # acknowledged means stored: the worker consumed and applied it before the answer
            assert await stored(accepted[0])
    finally:
        nodes.stop()
        await proxy.cut()
        await cleanup([emp])
