"""Pushing PushEvseStatus at a node through an outage (broker or Redis cut by a proxy): the push, the
check that it was stored, and the wait for the first push accepted after the outage."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.conftest import CPO_ID
from tests.support.nodes import NodeSpec, wait_until

PUSH_PATH = f"/api/oicp/evsepush/v21/operators/{CPO_ID}/status-records"


def push_body(evse_id: str) -> dict[str, object]:
    return {
        "ActionType": "insert",  # every push names a new EVSE
        "OperatorEvseStatus": {
            "OperatorID": CPO_ID,
            "EvseStatusRecord": [{"EvseID": evse_id, "EvseStatus": "Occupied"}],
        },
    }


class StatusPusher:
    """A CPO peer pushing statuses at an EMP node, and reading back what the node stored."""

    def __init__(self, http: aiohttp.ClientSession, node: NodeSpec, token: str) -> None:
        self.http, self.node = http, node
        self.headers = {"Authorization": f"Bearer {token}"}
        self.internal = {"Authorization": f"Bearer {node.internal_token}"}

    async def push(self, evse_id: str) -> dict[str, Any]:
        """The node's eRoamingAcknowledgement (always HTTP 200)."""
        async with self.http.post(self.node.oicp_url + PUSH_PATH, json=push_body(evse_id), headers=self.headers) as r:
            assert r.status == 200, await r.text()
            return dict(await r.json())

    async def code(self, evse_id: str) -> str:
        return str((await self.push(evse_id))["StatusCode"]["Code"])

    async def stored(self, evse_id: str) -> bool:
        async with self.http.get(f"{self.node.internal_url}/evses/{evse_id}/status", headers=self.internal) as r:
            return r.status == 200

    async def first_accepted(self, what: str) -> str:
        """Push new EVSEs once a second until one is acknowledged (000); its EvseID."""
        attempts = iter(range(300, 400))
        accepted: list[str] = []

        async def accepted_again() -> bool:
            evse_id = f"{CPO_ID}*E{next(attempts)}"
            if await self.code(evse_id) == "000":
                accepted.append(evse_id)
            return bool(accepted)

        await wait_until(accepted_again, timeout=60, interval=1, what=what)
        return accepted[0]
