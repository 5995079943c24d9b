"""Compatibility profiles on the wire: one real node (CPO and EMP role) whose peers are recording fake
peers, each with a profile (issue #10 point 2).

* ``custom-emp`` (an EMP peer): pushed statuses and CDRs go to the profile's paths, with the ID
  percent-encoded, ``EvseID`` renamed everywhere, date-times in New York time with milliseconds, and
  status pushes of at most 2 records;
* ``wwcp`` (a CPO peer): the reservation goes to the reference implementation's
  ``…/authorize-remote-reservation/start`` with the ProviderID without separators and
  ``EMPPartnerSessionId``; its own status push arrives at its inbound path with its field name
  ``Status`` and is taken; a strict peer finds nothing at that path;
* ``hubject`` as an EMP peer gets ``ChargingStationId`` in PushEvseData; as a CPO peer it may
  forward CDRs to the ``v21`` path, which a strict peer may not.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.support.bodies import evse_record
from tests.support.cdrs import cdr_body
from tests.support.nodes import HttpSink, NodeProcesses, NodeSpec, cleanup, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

OPERATOR, PROVIDER = "DE*CMP", "DE-CMP"
CUSTOM_EMP, HUB_EMP = "DE-WWE", "DE-HUB"
WWCP_CPO, HUB_CPO, STRICT_CPO = "DE*WWC", "DE*HUB", "DE*STR"
BATCH_LIMIT = 2
STATUS_EVSES = [f"{OPERATOR}*E{n}" for n in range(1, 6)]
V21_CDR = "/api/oicp/cdrmgmt/v21/operators/{operator}/charge-detail-record"
WWCP_STATUS = "/wwcp/evse-status/{operatorID}"
WWCP_RESERVATION_START = "/api/oicp/charging/v21/providers/{providerID}/authorize-remote-reservation/start"

PROFILES = {
    "custom-emp": {
        "description": "an EMP backend with its own paths and dialect",
        "paths": {
            "PushEvseStatus": "/custom/evse-status/{operatorID}",
            "ChargeDetailRecord": "/custom/cdr/{operatorID}",
        },
        "id_segment": "url_encoded",
        "field_names": {"*": {"EvseID": "EvseId"}},
        "datetime": {"format": "iso_millis_offset", "timezone": "America/New_York"},
        "batch_limits": {"PushEvseStatus": BATCH_LIMIT},
    },
    "wwcp": {
        "description": "paths of a third-party OICP implementation (DIGEST §11.1 item 5)",
        "paths": {"AuthorizeRemoteReservationStart": WWCP_RESERVATION_START},
        "id_segment": "without_separators",
        "field_names": {
            "AuthorizeRemoteReservationStart": {"EMPPartnerSessionID": "EMPPartnerSessionId"},
            "PushEvseStatus": {"EvseStatus": "Status"},
        },
        "inbound_paths": {"PushEvseStatus": [WWCP_STATUS]},
    },
}


@dataclass
class World:
    node: NodeSpec
    peers: dict[str, HttpSink]
    http: aiohttp.ClientSession

    async def command(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.node.internal_token}"}
        async with self.http.post(f"{self.node.internal_url}/commands/{name}", json=body, headers=headers) as response:
            answer = await response.json()
            assert response.status in (200, 202), answer
            return answer

    async def oicp(self, path: str, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.http.post(f"{self.node.oicp_url}{path}", json=body, headers=headers) as response:
            return response.status, await response.json()


def token(peer_id: str) -> str:
    return f"compat-{peer_id}"


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    recorders = {name: HttpSink() for name in (CUSTOM_EMP, HUB_EMP, WWCP_CPO, HUB_CPO, STRICT_CPO)}
    for recorder in recorders.values():
        await recorder.start()
    node = NodeSpec("compat", operator_ids=[OPERATOR], provider_ids=[PROVIDER])

    def peer(peer_id: str, role: str, profile: str | None, **extra: Any) -> dict[str, Any]:
        entry = {"id": peer_id, "role": role, "base_url": recorders[peer_id].url, "inbound_token": token(peer_id)}
        return {**entry, **({"profile": profile} if profile else {}), **extra}

    node.peers = [
        peer(CUSTOM_EMP, "emp", "custom-emp", push=["PushEvseStatus"]),
        peer(HUB_EMP, "emp", "hubject", push=["PushEvseData"]),
        peer(WWCP_CPO, "cpo", "wwcp"),
        peer(HUB_CPO, "cpo", "hubject"),
        peer(STRICT_CPO, "cpo", None),
    ]
    node.extra = {"profiles": PROFILES}
    processes = NodeProcesses([node], tmp_path_factory.mktemp("compat"))
    try:
        await processes.start()
        async with aiohttp.ClientSession() as http:
            yield World(node, recorders, http)
    finally:
        processes.stop()
        for recorder in recorders.values():
            await recorder.stop()
        await cleanup([node])


async def test_custom_emp_profile_status_pushes(world: World) -> None:
    """Path override, percent-encoded ID, renamed field and batches within the profile's limit."""
    peer = world.peers[CUSTOM_EMP]
    await world.command(
        "cpo.evse.status.set", {"records": [{"EvseID": e, "EvseStatus": "Occupied"} for e in STATUS_EVSES]}
    )

    def pushed() -> list[dict[str, Any]]:
        return [r for body in peer.at("/custom/evse-status/") for r in body["OperatorEvseStatus"]["EvseStatusRecord"]]

    await wait_until(lambda: len(pushed()) >= len(STATUS_EVSES), what="statuses at the custom path")
    paths = {r.raw_path for r in peer.requests if r.raw_path.startswith("/custom/evse-status/")}
    assert paths == {"/custom/evse-status/DE%2ACMP"}
    bodies = peer.at("/custom/evse-status/")
    assert all(len(b["OperatorEvseStatus"]["EvseStatusRecord"]) <= BATCH_LIMIT for b in bodies), bodies
    assert len(bodies) >= len(STATUS_EVSES) / BATCH_LIMIT
    assert sorted(r["EvseId"] for r in pushed()) == STATUS_EVSES and not any("EvseID" in r for r in pushed())
    assert not peer.at("/api/oicp/evsepush/")  # nothing at the catalogue path


async def test_custom_emp_profile_cdr(world: World) -> None:
    """The CDR at the profile's path, date-times in the profile's zone and format, EvseID renamed."""
    peer = world.peers[CUSTOM_EMP]
    session_id = str(uuid.uuid4())
    reply = await world.command(
        "cpo.cdr.submit", cdr_body(session_id, f"{OPERATOR}*E1", evco_id="DE-WWE-C12345678-X", offset="+02:00")
    )
    assert reply.get("ok", True), reply
    await wait_until(lambda: peer.at("/custom/cdr/DE%2ACMP"), what="the CDR at the custom path")
    [cdr] = peer.at("/custom/cdr/DE%2ACMP")
    assert cdr["SessionID"] == session_id and cdr["EvseId"] == f"{OPERATOR}*E1" and "EvseID" not in cdr
    # 01:58:00+02:00 on 29 March 2026 is 23:58 UTC on the 28th, 19:58 in New York (EDT, -04:00)
    assert cdr["SessionStart"] == "2026-03-28T19:58:00.000-04:00"
    assert cdr["ChargingStart"] == "2026-03-28T19:59:30.250-04:00"


async def test_wwcp_profile_reservation_path_id_and_field_name(world: World) -> None:
    peer = world.peers[WWCP_CPO]
    reply = await world.command(
        "emp.reservation.start.request",
        {
            "EvseID": f"{WWCP_CPO}*E1",
            "Identification": {"RemoteIdentification": {"EvcoID": "DE-CMP-C12345678-X"}},
            "EMPPartnerSessionID": "emp-4711",
            "Duration": 5,
        },
    )
    assert reply["ok"], reply
    [request] = peer.requests
    path, body = request.raw_path, request.body
    assert path == "/api/oicp/charging/v21/providers/DECMP/authorize-remote-reservation/start"
    assert body["EMPPartnerSessionId"] == "emp-4711" and "EMPPartnerSessionID" not in body
    assert body["ProviderID"] == PROVIDER and body["SessionID"] == reply["session_id"]


def wwcp_status_push(evse_id: str, status: str, name: str = "Status") -> dict[str, Any]:
    return {
        "ActionType": "fullLoad",
        "OperatorEvseStatus": {"OperatorID": WWCP_CPO, "EvseStatusRecord": [{"EvseID": evse_id, name: status}]},
    }


async def test_wwcp_profile_inbound_path_and_field_names(world: World) -> None:
    evse = f"{WWCP_CPO}*E7"
    status, answer = await world.oicp(
        WWCP_STATUS.format(operatorID=WWCP_CPO), token(WWCP_CPO), wwcp_status_push(evse, "Occupied")
    )
    assert status == 200 and answer["StatusCode"]["Code"] == "000", answer
    headers = {"Authorization": f"Bearer {world.node.internal_token}"}

    async def stored() -> str | None:
        async with world.http.get(f"{world.node.internal_url}/evses/{evse}/status", headers=headers) as response:
            return (await response.json()).get("EvseStatus") if response.status == 200 else None

    assert await wait_until(stored, what="the status pushed in the peer's dialect") == "Occupied"
    # the catalogue path still works for it, with its field names too
    catalogue = f"/api/oicp/evsepush/v21/operators/{WWCP_CPO}/status-records"
    status, answer = await world.oicp(catalogue, token(WWCP_CPO), wwcp_status_push(evse, "Available"))
    assert answer["StatusCode"]["Code"] == "000", answer
    # a strict peer finds no operation at the profile's path, and its own field names are the spec's
    strict_path = WWCP_STATUS.format(operatorID=STRICT_CPO)
    status, answer = await world.oicp(strict_path, token(STRICT_CPO), wwcp_status_push(f"{STRICT_CPO}*E1", "Occupied"))
    assert status == 404, answer
    status, answer = await world.oicp(
        f"/api/oicp/evsepush/v21/operators/{STRICT_CPO}/status-records",
        token(STRICT_CPO),
        wwcp_status_push(f"{STRICT_CPO}*E1", "Occupied"),
    )
    assert answer["StatusCode"]["Code"] != "000", answer  # "Status" is no EvseStatusRecord field


async def test_hubject_profile_push_evse_data_spelling(world: World) -> None:
    hub = world.peers[HUB_EMP]
    record = {**evse_record(f"{OPERATOR}*E9"), "ChargingStationID": "station-9"}
    await world.command(
        "cpo.evse.data.set",
        {
            "ActionType": "insert",
            "OperatorEvseData": {"OperatorID": OPERATOR, "OperatorName": "CMP", "EvseDataRecord": [record]},
        },
    )

    def records() -> list[dict[str, Any]]:
        return [r for body in hub.at("/api/oicp/evsepush/v23/") for r in body["OperatorEvseData"]["EvseDataRecord"]]

    await wait_until(lambda: any(r["EvseID"] == f"{OPERATOR}*E9" for r in records()), what="EVSE data at the hub")
    [pushed] = [r for r in records() if r["EvseID"] == f"{OPERATOR}*E9"]
    assert pushed["ChargingStationId"] == "station-9" and "ChargingStationID" not in pushed
    assert {r.raw_path for r in hub.requests} == {f"/api/oicp/evsepush/v23/operators/{OPERATOR}/data-records"}


async def test_hubject_profile_v21_cdr_path_inbound(world: World) -> None:
    body = cdr_body(str(uuid.uuid4()), f"{HUB_CPO}*E1", evco_id="DE-CMP-C12345678-X")
    status, answer = await world.oicp(V21_CDR.format(operator=HUB_CPO), token(HUB_CPO), body)
    assert status == 200 and answer["StatusCode"]["Code"] == "000", answer
    strict = cdr_body(str(uuid.uuid4()), f"{STRICT_CPO}*E1", evco_id="DE-CMP-C12345678-X")
    status, answer = await world.oicp(V21_CDR.format(operator=STRICT_CPO), token(STRICT_CPO), strict)
    assert status == 404, answer


async def test_peers_registered_through_the_api_name_known_profiles(world: World) -> None:
    headers = {"Authorization": f"Bearer {world.node.internal_token}"}
    peer = {"id": "DE-API", "role": "emp", "base_url": "http://127.0.0.1:1"}
    async with world.http.post(
        f"{world.node.internal_url}/peers", json={**peer, "profile": "nope"}, headers=headers
    ) as response:
        answer = await response.json()
        assert response.status == 422 and "'nope'" in answer["error"], answer
    async with world.http.post(
        f"{world.node.internal_url}/peers", json={**peer, "profile": "custom-emp"}, headers=headers
    ) as response:
        answer = await response.json()
        assert response.status == 201 and answer["profile"] == "custom-emp", answer
    async with world.http.delete(f"{world.node.internal_url}/peers/emp/DE-API", headers=headers) as response:
        assert response.status in (200, 204)
