"""Both OICP faces and the internal API of real gateways: caller identity, ID ownership (017/018),
validation errors naming the field (022), requests that are not OICP (4xx with an acknowledgement) -
every answer checked against Hubject's OpenAPI files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from shared.oicp.operations import OPERATIONS, Face, Operation
from tests.conftest import CPO_CALLS_EMP, CPO_ID, EMP_CALLS_CPO, EMP_ID, SINK_CALLS_CPO, Pair
from tests.oicp_schema import validate_response
from tests.support.bodies import valid_body
from tests.support.nodes import HttpSink, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def url_of(pair: Pair, operation: Operation) -> str:
    node, path_id = (pair.cpo, EMP_ID) if operation.face is Face.CPO else (pair.emp, CPO_ID)
    param = operation.path_param
    return node.oicp_url + (operation.path.format(**{param: path_id}) if param else operation.path)


def token_for(operation: Operation) -> str:
    return EMP_CALLS_CPO if operation.face is Face.CPO else CPO_CALLS_EMP


async def call(
    http: aiohttp.ClientSession, url: str, body: Any, token: str | None, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))
    async with http.post(url, json=body, headers=headers, **kwargs) as response:
        return response.status, await response.json(content_type=None)


def code_of(answer: dict[str, Any]) -> str:
    return answer["StatusCode"]["Code"]


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda o: o.name)
async def test_unknown_caller_gets_017(pair: Pair, http: aiohttp.ClientSession, operation: Operation) -> None:
    for token in (None, "not-a-registered-token"):
        status, answer = await call(http, url_of(pair, operation), valid_body(operation.name), token)
        assert status == 200 and code_of(answer) == "017", answer
        validate_response(operation.path, answer, acknowledgement_ok=True)


async def test_a_peer_calling_the_wrong_face_gets_017(pair: Pair, http: aiohttp.ClientSession) -> None:
    # The CPO node's token for calling the EMP face is no EMP peer of the CPO node.
    push = next(op for op in OPERATIONS if op.name == "PullEvseStatus")
    _, answer = await call(http, url_of(pair, push), valid_body("PullEvseStatus"), CPO_CALLS_EMP)
    assert code_of(answer) == "017"


async def test_ids_that_are_not_the_callers(pair: Pair, http: aiohttp.ClientSession) -> None:
    push = next(op for op in OPERATIONS if op.name == "PushEvseStatus")
    body = valid_body("PushEvseStatus")
    # {operatorID} in the path is someone else's
    foreign_path = pair.emp.oicp_url + push.path.format(operatorID="DE*XYZ")
    _, answer = await call(http, foreign_path, body, CPO_CALLS_EMP)
    assert code_of(answer) == "017" and "path" in answer["StatusCode"]["AdditionalInfo"]
    # OperatorID in the body is someone else's
    foreign_body = {**body, "OperatorEvseStatus": {**body["OperatorEvseStatus"], "OperatorID": "DE*XYZ"}}
    _, answer = await call(http, url_of(pair, push), foreign_body, CPO_CALLS_EMP)
    assert code_of(answer) == "017" and "OperatorID" in answer["StatusCode"]["AdditionalInfo"]
    # an EvseID of another operator
    foreign_evse = {
        **body,
        "OperatorEvseStatus": {
            "OperatorID": CPO_ID,
            "EvseStatusRecord": [{"EvseID": "DE*XYZ*E1", "EvseStatus": "Available"}],
        },
    }
    _, answer = await call(http, url_of(pair, push), foreign_evse, CPO_CALLS_EMP)
    assert code_of(answer) == "018" and "DE*XYZ*E1" in answer["StatusCode"]["AdditionalInfo"]
    validate_response(push.path, answer)
    # ProviderID in a pull body is someone else's
    pull = next(op for op in OPERATIONS if op.name == "PullEvseStatus")
    _, answer = await call(http, url_of(pair, pull), {"ProviderID": "DE-XYZ"}, EMP_CALLS_CPO)
    assert code_of(answer) == "017" and "ProviderID" in answer["StatusCode"]["AdditionalInfo"]


async def test_invalid_body_gets_022_naming_the_field(pair: Pair, http: aiohttp.ClientSession) -> None:
    push = next(op for op in OPERATIONS if op.name == "PushEvseStatus")
    body = valid_body("PushEvseStatus")
    body["OperatorEvseStatus"]["EvseStatusRecord"][0]["EvseStatus"] = "Sleeping"
    status, answer = await call(http, url_of(pair, push), body, CPO_CALLS_EMP)
    assert status == 200 and code_of(answer) == "022" and answer["Result"] is False
    assert "OperatorEvseStatus.EvseStatusRecord[0].EvseStatus" in answer["StatusCode"]["AdditionalInfo"]
    validate_response(push.path, answer)
    _, answer = await call(http, url_of(pair, push), {"ActionType": "update"}, CPO_CALLS_EMP)
    assert code_of(answer) == "022" and "OperatorEvseStatus" in answer["StatusCode"]["AdditionalInfo"]


async def test_requests_that_are_not_oicp_get_4xx_with_an_acknowledgement(
    pair: Pair, http: aiohttp.ClientSession
) -> None:
    push = next(op for op in OPERATIONS if op.name == "PushEvseStatus")
    url, auth = url_of(pair, push), {"Authorization": f"Bearer {CPO_CALLS_EMP}"}
    cases = [
        (415, {"data": b"{}", "headers": {**auth, "Content-Type": "text/plain"}}),
        (400, {"data": b"{not json", "headers": {**auth, "Content-Type": "application/json"}}),
        (400, {"data": b'{"a": "\xff\xfe"}', "headers": {**auth, "Content-Type": "application/json"}}),
        (400, {"data": b"[1, 2]", "headers": {**auth, "Content-Type": "application/json"}}),
        (
            413,
            {"data": b"{" + b" " * (5 * 1024 * 1024) + b"}", "headers": {**auth, "Content-Type": "application/json"}},
        ),
        # nested deeper than oicp.max_json_depth (32)
        (400, {"data": b'{"a":' * 40 + b"1" + b"}" * 40, "headers": {**auth, "Content-Type": "application/json"}}),
        # request headers beyond oicp.max_header_bytes (16 KiB)
        (
            431,
            {"data": b"{}", "headers": {**auth, "Content-Type": "application/json", "X-Padding": "x" * 20_000}},
        ),
    ]
    for expected, kwargs in cases:
        async with http.post(url, **kwargs) as response:
            answer = await response.json(content_type=None)
        assert response.status == expected, (expected, answer)
        assert answer["Result"] is False and code_of(answer) == "022" and answer["StatusCode"]["AdditionalInfo"]
        validate_response(push.path, answer)
    async with http.post(pair.emp.oicp_url + "/api/oicp/nothing/here", json={}) as response:
        assert response.status == 404 and (await response.json())["Result"] is False
    async with http.get(url) as response:
        assert response.status == 405 and (await response.json())["Result"] is False


async def test_each_node_serves_only_the_face_of_its_role(pair: Pair, http: aiohttp.ClientSession) -> None:
    push = next(op for op in OPERATIONS if op.name == "PushEvseStatus")
    async with http.post(pair.cpo.oicp_url + push.path.format(operatorID=CPO_ID), json={}) as response:
        assert response.status == 404


async def test_internal_api_requires_its_token(pair: Pair, http: aiohttp.ClientSession) -> None:
    for token in (None, "wrong"):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with http.get(f"{pair.cpo.internal_url}/peers", headers=headers) as response:
            assert response.status == 401
    async with http.get(pair.cpo.internal_url + "/healthz") as response:
        assert response.status == 200, "the liveness probe needs no token"
    commands = {"Authorization": f"Bearer {pair.cpo.internal_token}"}
    for path in ("/readyz", "/metrics"):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with http.get(pair.cpo.internal_url + path, headers=headers) as response:
                assert response.status == 401, path
        for headers in (commands, pair.cpo.monitoring_headers):
            async with http.get(pair.cpo.internal_url + path, headers=headers) as response:
                assert response.status == 200, path
    async with http.get(pair.cpo.internal_url + "/metrics", headers=pair.cpo.monitoring_headers) as response:
        assert "oicp_requests_total" in await response.text()
    # the monitoring token reads, it cannot act
    async with http.get(f"{pair.cpo.internal_url}/peers", headers=pair.cpo.monitoring_headers) as response:
        assert response.status == 401


async def test_internal_api_answers_carry_security_headers(pair: Pair, http: aiohttp.ClientSession) -> None:
    for path, headers in (("/healthz", {}), ("/peers", {"Authorization": f"Bearer {pair.cpo.internal_token}"})):
        async with http.get(pair.cpo.internal_url + path, headers={**headers, "Origin": "https://evil.example"}) as r:
            assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Cache-Control"] == "no-store"
            assert (
                r.headers["X-Frame-Options"] == "DENY" and "default-src 'none'" in r.headers["Content-Security-Policy"]
            )
            assert "Access-Control-Allow-Origin" not in r.headers, "CORS stays off"


async def test_internal_command_is_validated(pair: Pair, http: aiohttp.ClientSession) -> None:
    headers = {"Authorization": f"Bearer {pair.cpo.internal_token}"}
    url = f"{pair.cpo.internal_url}/commands/cpo.evse.status.set"
    async with http.post(
        url, json={"records": [{"EvseID": "DE*GEF*E1", "EvseStatus": "Dozing"}]}, headers=headers
    ) as r:
        assert r.status == 422 and "records.0.EvseStatus" in (await r.json())["error"]
    async with http.post(
        url, json={"records": [{"EvseID": "DE*XYZ*E1", "EvseStatus": "Available"}]}, headers=headers
    ) as r:
        assert r.status == 422 and "DE*XYZ*E1" in (await r.json())["error"]
    async with http.post(f"{pair.cpo.internal_url}/commands/emp.evse.status.ingest", json={}, headers=headers) as r:
        assert r.status == 404


async def test_a_command_of_the_other_role_is_refused_at_once(pair: Pair, http: aiohttp.ClientSession) -> None:
    """No worker of a CPO node takes an emp.* command: 404 at once, not a wait for a reply that cannot
    come (found by fuzzing the internal API: 503 after the reply deadline)."""
    headers = {"Authorization": f"Bearer {pair.cpo.internal_token}"}
    body = {"EvseID": "DE*GEF*E1", "Identification": {"RemoteIdentification": {"EvcoID": "DE-GDF-C12345678-X"}}}
    async with http.post(f"{pair.cpo.internal_url}/commands/emp.remote_start.request", json=body, headers=headers) as r:
        assert r.status == 404
        assert "EMP role" in (await r.json())["error"]


async def test_peers_registered_through_the_internal_api(pair: Pair, http: aiohttp.ClientSession) -> None:
    """RegisterProvider's P2P counterpart: a new EMP peer gets pushes and can call; removing it stops both."""
    headers = {"Authorization": f"Bearer {pair.cpo.internal_token}"}
    sink = HttpSink()
    await sink.start()
    try:
        peer = {
            "id": "DE-NEW",
            "role": "emp",
            "base_url": sink.url,
            "inbound_token": "new-peer-token",
            "outbound_token": "cpo-calls-new",
            "push": ["PushEvseStatus"],
        }
        async with http.post(f"{pair.cpo.internal_url}/peers", json={**peer, "id": "not an id"}, headers=headers) as r:
            assert r.status == 422 and "id" in (await r.json())["error"]
        async with http.post(f"{pair.cpo.internal_url}/peers", json=peer, headers=headers) as r:
            assert r.status == 201, await r.text()
            shown = await r.json()
            assert "new-peer-token" not in str(shown) and "cpo-calls-new" not in str(shown)
        async with http.post(f"{pair.cpo.internal_url}/peers", json=peer, headers=headers) as r:
            assert r.status == 409
        async with http.get(f"{pair.cpo.internal_url}/peers", headers=headers) as r:
            assert {"DE-GDF", "DE-SNK", "DE-NEW"} <= {p["id"] for p in await r.json()}
        async with http.delete(f"{pair.cpo.internal_url}/peers/emp/DE-GDF", headers=headers) as r:
            assert r.status == 409  # configured in the file

        # the new peer can call the CPO face with its token ...
        pull = next(op for op in OPERATIONS if op.name == "PullEvseStatus")
        url = pair.cpo.oicp_url + pull.path.format(providerID="DE-NEW")
        _, answer = await call(http, url, {"ProviderID": "DE-NEW"}, "new-peer-token")
        assert code_of(answer) == "000"
        # ... and gets the next status change pushed, with the token we present to it.
        evse_id = "DE*GEF*E777NEW"
        async with http.post(
            f"{pair.cpo.internal_url}/commands/cpo.evse.status.set",
            json={"records": [{"EvseID": evse_id, "EvseStatus": "Occupied"}]},
            headers=headers,
        ) as r:
            assert r.status == 202
        await wait_until(lambda: any(evse_id in str(q.body) for q in sink.requests), what="push to the new peer")
        assert sink.requests[-1].headers["Authorization"] == "Bearer cpo-calls-new"

        async with http.delete(f"{pair.cpo.internal_url}/peers/emp/DE-NEW", headers=headers) as r:
            assert r.status == 204
        _, answer = await call(http, url, {"ProviderID": "DE-NEW"}, "new-peer-token")
        assert code_of(answer) == "017"
    finally:
        await sink.stop()


async def test_sink_peer_token_works_for_pulls(pair: Pair, http: aiohttp.ClientSession) -> None:
    pull = next(op for op in OPERATIONS if op.name == "PullEvseStatus")
    _, answer = await call(
        http, pair.cpo.oicp_url + pull.path.format(providerID="DE-SNK"), {"ProviderID": "DE-SNK"}, SINK_CALLS_CPO
    )
    assert code_of(answer) == "000"
    # a peer cannot pull in another peer's name
    _, answer = await call(
        http, pair.cpo.oicp_url + pull.path.format(providerID=EMP_ID), {"ProviderID": EMP_ID}, SINK_CALLS_CPO
    )
    assert code_of(answer) == "017"
