"""Rate limits per peer and operation on a real node (both roles), inbound and outbound.

Inbound: a peer over its limit gets HTTP 429 with Retry-After and an OICP answer, and nothing of the
refused request takes effect; the dispatching PullEvseStatus path counts by its variant; another peer
and another operation are unaffected. Outbound: the node never sends an EMP peer more PushEvseStatus
requests in a minute than that peer's limit; the changes that wait are coalesced and arrive later.

Timings are asserted as counts within windows and lower bounds with margins (the machine is noisy)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from shared.oicp.operations import OPERATIONS_BY_NAME
from shared.ratelimit import WINDOW_SECONDS
from tests.oicp_schema import validate_response
from tests.support.nodes import HttpSink, NodeProcesses, NodeSpec, cleanup, wait_until
from tests.support.sinks import OicpSink

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

OPERATOR, PROVIDER = "DE*RLC", "DE-RLP"
PULLER, OTHER_PULLER, PUSHING_CPO = "DE-RLA", "DE-RLB", "DE*RLX"
SINK = "DE-RLS"
PULL_LIMIT, PUSH_IN_LIMIT, PUSH_OUT_LIMIT = 2, 2, 3
ARRIVAL_SLACK = 3.0  # seconds: a request's arrival at the sink may lag its start by this much


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def code(self) -> str:
        return str(self.body.get("StatusCode", {"Code": "000"})["Code"])  # pulls may omit a success code


class Limited:
    def __init__(self, node: NodeSpec, sink: OicpSink, processes: NodeProcesses) -> None:
        self.node, self.sink, self.processes = node, sink, processes
        self.http = aiohttp.ClientSession()

    async def oicp(self, operation: str, token: str, body: dict[str, Any], **ids: str) -> Answer:
        url = self.node.oicp_url + OPERATIONS_BY_NAME[operation].path.format(**ids)
        async with self.http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
            return Answer(response.status, dict(response.headers), await response.json(content_type=None))

    async def internal(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.node.internal_token}"}
        async with self.http.request(method, self.node.internal_url + path, json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def limited(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Limited]:
    sink, nobody = OicpSink(SINK), HttpSink()
    await sink.start()
    await nobody.start()
    node = NodeSpec("ratelimits", operator_ids=[OPERATOR], provider_ids=[PROVIDER])
    node.peers = [
        {
            "id": PULLER,
            "role": "emp",
            "base_url": nobody.url,
            "inbound_token": "puller-token",
            "rate_limits": {"PullEvseStatus": PULL_LIMIT},
        },
        {"id": OTHER_PULLER, "role": "emp", "base_url": nobody.url, "inbound_token": "other-token"},
        {
            "id": PUSHING_CPO,
            "role": "cpo",
            "base_url": nobody.url,
            "inbound_token": "cpo-token",
            "rate_limits": {"PushEVSEStatus": PUSH_IN_LIMIT},  # Hubject's spelling is accepted
        },
        {
            "id": SINK,
            "role": "emp",
            "base_url": sink.url,
            "inbound_token": "sink-token",
            "push": ["PushEvseStatus"],
            "rate_limits": {"PushEvseStatus": PUSH_OUT_LIMIT},
        },
    ]
    node.extra = {
        "rate_limits": {"enabled": True},
        # a backoff cap above the minute, so the lane's retry follows the limiter's Retry-After
        "delivery": {"poll_interval_seconds": 0.5, "backoff_initial_seconds": 0.2, "backoff_max_seconds": 10},
    }
    processes = NodeProcesses([node], tmp_path_factory.mktemp("ratelimits"))
    limited = Limited(node, sink, processes)
    try:
        await processes.start()
        yield limited
    finally:
        await limited.http.close()
        processes.stop()
        await sink.stop()
        await nobody.stop()
        await cleanup([node])


async def test_inbound_pulls_over_the_limit_get_429_with_retry_after(limited: Limited) -> None:
    path = OPERATIONS_BY_NAME["PullEvseStatus"].path
    full_pull = {"ProviderID": PULLER}
    for _ in range(PULL_LIMIT):
        response = await limited.oicp("PullEvseStatus", "puller-token", full_pull, providerID=PULLER)
        assert (response.status, response.code) == (200, "000"), response
    refused = await limited.oicp("PullEvseStatus", "puller-token", full_pull, providerID=PULLER)
    assert refused.status == 429
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= WINDOW_SECONDS
    answer = refused.body
    assert answer["Result"] is False and answer["StatusCode"]["Code"] == "021", answer
    assert "PullEvseStatus" in answer["StatusCode"]["AdditionalInfo"]
    validate_response(path, answer, acknowledgement_ok=True)

    # the same path asking for another variant (ById: 300 a minute) is another operation
    by_id = {"ProviderID": PULLER, "EvseID": [f"{OPERATOR}*E1"]}
    response = await limited.oicp("PullEvseStatus", "puller-token", by_id, providerID=PULLER)
    assert (response.status, response.code) == (200, "000"), response
    # another peer has a budget of its own (Hubject's 6 a minute)
    for _ in range(PULL_LIMIT + 1):
        response = await limited.oicp(
            "PullEvseStatus", "other-token", {"ProviderID": OTHER_PULLER}, providerID=OTHER_PULLER
        )
        assert (response.status, response.code) == (200, "000"), response

    internal = {"Authorization": f"Bearer {limited.node.internal_token}"}
    async with limited.http.get(limited.node.internal_url + "/metrics", headers=internal) as response:
        metrics = await response.text()
    assert 'oicp_requests_rejected_total{reason="rate_limited"}' in metrics
    assert (
        f'oicp_rate_limited_total{{direction="in",operation="PullEvseStatus",outcome="refused",peer="{PULLER}"}}'
        in metrics
    )


def status_push(evse: str, status: str) -> dict[str, Any]:
    return {
        "ActionType": "insert",
        "OperatorEvseStatus": {
            "OperatorID": PUSHING_CPO,
            "OperatorName": "Pushing CPO",
            "EvseStatusRecord": [{"EvseID": evse, "EvseStatus": status}],
        },
    }


async def test_a_refused_push_takes_no_effect(limited: Limited) -> None:
    evses = [f"{PUSHING_CPO}*E{n}" for n in range(PUSH_IN_LIMIT + 1)]
    for evse in evses[:PUSH_IN_LIMIT]:
        response = await limited.oicp(
            "PushEvseStatus", "cpo-token", status_push(evse, "Available"), operatorID=PUSHING_CPO
        )
        assert (response.status, response.code) == (200, "000"), response
    refused = await limited.oicp(
        "PushEvseStatus", "cpo-token", status_push(evses[-1], "Occupied"), operatorID=PUSHING_CPO
    )
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.body["Result"] is False and refused.code == "021", refused

    async def accepted_ones_arrived() -> bool:
        codes = [(await limited.internal("GET", f"/evses/{e}/status"))[0] for e in evses[:PUSH_IN_LIMIT]]
        return codes == [200] * PUSH_IN_LIMIT

    await wait_until(accepted_ones_arrived, what="the accepted pushes reach the roaming store")
    status, answer = await limited.internal("GET", f"/evses/{evses[-1]}/status")
    assert status == 404, answer


@pytest.mark.timeout(WINDOW_SECONDS * 5)  # the held-back changes wait for the next minute
async def test_outbound_pushes_never_exceed_the_peers_limit_and_late_changes_are_coalesced(limited: Limited) -> None:
    sink = limited.sink
    evses = [f"{OPERATOR}*E{n:03d}" for n in range(8)]
    statuses: dict[str, str] = {}

    def pushes() -> list[tuple[float, dict[str, Any]]]:
        return [(t, body) for t, op, body in sink.requests if op == "PushEvseStatus"]

    for evse in evses:
        statuses[evse] = "Occupied"
        status, answer = await limited.internal(
            "POST", "/commands/cpo.evse.status.set", {"records": [{"EvseID": evse, "EvseStatus": "Occupied"}]}
        )
        assert status in (200, 202), answer
        # one request per change while the budget lasts; once it is used up, the rest queue at once
        await wait_until(
            lambda evse=evse: sink.statuses.get(evse) == "Occupied" or len(pushes()) >= PUSH_OUT_LIMIT,
            what=f"{evse} delivered or the budget used up",
        )
    await wait_until(lambda: sink.statuses == statuses, timeout=WINDOW_SECONDS * 2.5, what="every change at the peer")
    times = [t for t, _ in pushes()]
    assert len(times) > PUSH_OUT_LIMIT, "some changes must have waited for the next minute"
    # never more than the limit in any minute (measured at the sink, so with slack for arrival lag)
    for first, later in zip(times, times[PUSH_OUT_LIMIT:], strict=False):
        assert later - first >= WINDOW_SECONDS - ARRIVAL_SLACK, times
    # the changes that waited went out together, in fewer requests than there were changes
    late = [body for t, body in pushes() if t - times[0] >= WINDOW_SECONDS - ARRIVAL_SLACK]
    late_records = list(itertools.chain.from_iterable(b["OperatorEvseStatus"]["EvseStatusRecord"] for b in late))
    assert late and len(late) < len(late_records), [len(b["OperatorEvseStatus"]["EvseStatusRecord"]) for b in late]
    assert sink.refusals == 0
