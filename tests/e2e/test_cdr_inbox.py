"""The EMP node's CDR inbox over its OICP face (a CPO peer pushing ChargeDetailRecord): exactly one
CDR per SessionID - a repeat is acknowledged again without a second record or billing event, a
different one is refused with 400 and the reason; CDRs of unknown sessions are kept and flagged; a
known session is closed in the ledger. Every answer is checked against Hubject's OpenAPI."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from shared.oicp.operations import OPERATIONS_BY_NAME
from tests.conftest import CPO_CALLS_EMP, CPO_ID, Pair
from tests.oicp_schema import validate_response
from tests.support.cdr_bodies import full_cdr
from tests.support.events import EventTap
from tests.support.nodes import wait_until
from tests.support.responders import BusResponder, always
from tests.support.sessions import command, oicp, own_evse, start_body

pytest_plugins = ("tests.support.session_fixtures",)
pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

PATH = OPERATIONS_BY_NAME["ChargeDetailRecord"].path.format(operatorID=CPO_ID)


async def push(http: aiohttp.ClientSession, pair: Pair, cdr: dict[str, Any]) -> dict[str, Any]:
    answer = await oicp(http, pair.emp, PATH, CPO_CALLS_EMP, cdr)
    validate_response(PATH, answer)
    return answer  # type: ignore[no-any-return]


async def internal(http: aiohttp.ClientSession, pair: Pair, path: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {pair.emp.internal_token}"}
    async with http.get(pair.emp.internal_url + path, headers=headers) as response:
        return response.status, await response.json()


def about(events: EventTap, session_id: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in events.events if e["type"] == kind and e["data"]["session_id"] == session_id]


async def test_one_cdr_per_session(pair: Pair, web_client: aiohttp.ClientSession) -> None:
    first = full_cdr()
    sid = first["SessionID"]
    async with EventTap(pair.emp.topology.events.name, "cdr.#") as events:
        answer = await push(web_client, pair, first)
        assert answer["Result"] is True and answer["StatusCode"]["Code"] == "000", answer
        assert answer["SessionID"] == sid and answer["CPOPartnerSessionID"] == "csms-0815"

        again = await push(web_client, pair, first)  # the CPO did not get our answer and sends again
        assert again["Result"] is True and again["StatusCode"]["Code"] == "000", again

        different = await push(web_client, pair, {**first, "ConsumedEnergy": 99.0})
        assert different["Result"] is False and different["StatusCode"]["Code"] == "400", different
        assert "only one CDR per SessionID" in different["StatusCode"]["AdditionalInfo"]

        # a later CDR's event marks the point by which a second event of the first would have come
        marker = full_cdr()
        await push(web_client, pair, marker)
        await wait_until(lambda: about(events, marker["SessionID"], "cdr.received"), what="the marker's event")
        assert len(about(events, sid, "cdr.received")) == 1, "billing must see the CDR exactly once"
        [received] = about(events, sid, "cdr.received")
        assert received["data"]["cdr"] == first and received["data"]["source"] == "push"

    status, view = await internal(web_client, pair, f"/cdrs/{sid}")
    assert status == 200 and view["in"]["cdr"] == first, "the first CDR stays, every field as sent"
    assert view["in"]["peer_id"] == CPO_ID


async def test_a_cdr_of_an_unknown_session_is_kept_and_flagged(pair: Pair, web_client: aiohttp.ClientSession) -> None:
    cdr = full_cdr()
    sid = cdr["SessionID"]
    async with EventTap(pair.emp.topology.events.name, "cdr.#") as events:
        answer = await push(web_client, pair, cdr)
        assert answer["Result"] is True, answer
        await wait_until(lambda: about(events, sid, "cdr.session.unknown"), what="cdr.session.unknown")
    assert about(events, sid, "cdr.received")[0]["data"]["session_known"] is False
    status, flagged = await internal(web_client, pair, "/cdrs/unknown-sessions?direction=in&size=2000")
    assert status == 200 and sid in {c["session_id"] for c in flagged["cdrs"]}
    assert flagged["total"] >= 1


async def test_a_cdr_closes_its_session(pair: Pair, web_client: aiohttp.ClientSession) -> None:
    evse = await own_evse(web_client, pair.cpo)
    async with BusResponder(pair.cpo, ["cpo.backend.#"], always({"accepted": True})):
        reply = await command(web_client, pair.emp, "emp.remote_start.request", start_body(evse))
    sid = reply["session_id"]
    answer = await push(web_client, pair, full_cdr(sid, evse_id=evse))
    assert answer["Result"] is True, answer
    status, session = await internal(web_client, pair, f"/sessions/{sid}")
    assert status == 200 and session["state"] == "cdr_received"
    status, view = await internal(web_client, pair, f"/cdrs/{sid}")
    assert view["in"]["session_known"] is True
    status, by_peer = await internal(web_client, pair, f"/cdrs?direction=in&peer={CPO_ID}&size=2000")
    assert status == 200 and sid in {c["session_id"] for c in by_peer["cdrs"]}


async def test_a_cdr_must_be_of_the_calling_operator(pair: Pair, web_client: aiohttp.ClientSession) -> None:
    answer = await push(web_client, pair, full_cdr(evse_id="DE*XYZ*E1*1"))
    assert answer["Result"] is False and answer["StatusCode"]["Code"] == "018", answer


async def test_a_cdr_with_too_many_signed_values_names_the_field(pair: Pair, web_client: aiohttp.ClientSession) -> None:
    cdr = full_cdr()
    cdr["SignedMeteringValues"] = cdr["SignedMeteringValues"] * 6  # 12, OICP allows 10
    answer = await push(web_client, pair, cdr)
    assert answer["Result"] is False and answer["StatusCode"]["Code"] == "022", answer
    assert "SignedMeteringValues" in answer["StatusCode"]["AdditionalInfo"]
