"""Charging notifications from the charge point backend (cpo.session.notify) to the EMP that owns the
session, and straight from a CPO peer to the EMP face: unknown sessions refused (and not sent), the
5-minute rule for Progress on both sides, a missing field explained, and ended sessions without a CDR
reported once."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

from shared.oicp.operations import OPERATIONS_BY_NAME
from tests.conftest import CPO_CALLS_EMP, Pair
from tests.oicp_schema import validate_response
from tests.support.events import EventTap
from tests.support.nodes import NodeSpec, wait_until
from tests.support.responders import BusResponder, always
from tests.support.sessions import (
    Ledgers,
    QuickPair,
    command,
    events_about,
    new_session_id,
    notification,
    oicp,
    own_evse,
    start_body,
)

pytest_plugins = ("tests.support.session_fixtures",)
pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

BACKEND = ["cpo.backend.#"]
ACCEPTED = {"accepted": True}
PATH = OPERATIONS_BY_NAME["ChargingNotification"].path
TOO_EARLY = "Progress Notification can be sent only at interval of at least 5 min"
RECEIVED = re.compile(r'^oicp_requests_total\{[^}]*operation="ChargingNotification"[^}]*\} ([0-9.e+]+)$', re.M)


async def notifications_received(http: aiohttp.ClientSession, node: NodeSpec) -> float:
    """How many ChargingNotifications the node's OICP face has answered (its gateway's metric)."""
    async with http.get(f"{node.internal_url}/metrics", headers=node.monitoring_headers) as response:
        text = await response.text()
    return sum(float(n) for n in RECEIVED.findall(text))


async def started_session(http: aiohttp.ClientSession, pair: Pair) -> tuple[str, str]:
    """A session the EMP started remotely and the CPO's backend accepted: (SessionID, EvseID)."""
    evse = await own_evse(http, pair.cpo)
    async with BusResponder(pair.cpo, BACKEND, always(ACCEPTED)):
        reply = await command(http, pair.emp, "emp.remote_start.request", start_body(evse))
    assert reply["ok"], reply
    return reply["session_id"], evse


async def notify(http: aiohttp.ClientSession, cpo: NodeSpec, body: dict[str, Any]) -> dict[str, Any]:
    return await command(http, cpo, "cpo.session.notify", {"notification": body})


async def test_unknown_sessions_are_refused(pair: Pair, web_client: aiohttp.ClientSession) -> None:
    evse = await own_evse(web_client, pair.cpo)
    before = await notifications_received(web_client, pair.emp)
    reply = await notify(web_client, pair.cpo, notification("Start", new_session_id(), evse))
    assert not reply["ok"] and reply["code"] == "400", reply
    assert reply["answer"]["StatusCode"]["Code"] == "400"
    assert await notifications_received(web_client, pair.emp) == before  # refused without sending

    answer = await oicp(web_client, pair.emp, PATH, CPO_CALLS_EMP, notification("Start", new_session_id(), evse))
    validate_response(PATH, answer)
    assert answer["Result"] is False and answer["StatusCode"]["Code"] == "400"


async def test_notifications_move_both_ledgers(pair: Pair, ledgers: Ledgers, web_client: aiohttp.ClientSession) -> None:
    sid, evse = await started_session(web_client, pair)
    async with EventTap(pair.emp.topology.events.name, "session.#") as emp_events:
        for kind, state in (("Start", "started"), ("Progress", "charging"), ("Error", "charging"), ("End", "ended")):
            reply = await notify(web_client, pair.cpo, notification(kind, sid, evse))
            assert reply["ok"] and reply["answer"]["Result"] is True, (kind, reply)
            for node in (pair.cpo, pair.emp):
                session = await ledgers.get(node, sid)
                assert session is not None and session.state.value == state, (kind, node.name)
        received = await wait_until(
            lambda: len(events_about(emp_events.events, sid, "session.notification")) == 4 and emp_events.events,
            what="four session.notification events",
        )
        kinds = [e["data"]["notification"]["Type"] for e in events_about(received, sid, "session.notification")]
        assert kinds == ["Start", "Progress", "Error", "End"]
        assert events_about(received, sid, "session.stopped")  # the End moved it to ended
    history = [h["note"] for h in await ledgers.of(pair.emp).history(sid)]
    assert any("ConnectorError" in (note or "") for note in history)  # the error is noted, the state kept


async def test_progress_at_most_every_five_minutes_on_the_cpo_side(
    pair: Pair, web_client: aiohttp.ClientSession
) -> None:
    sid, evse = await started_session(web_client, pair)
    assert (await notify(web_client, pair.cpo, notification("Start", sid, evse)))["ok"]
    first = await notify(web_client, pair.cpo, notification("Progress", sid, evse))
    assert first["ok"], first
    sent = await notifications_received(web_client, pair.emp)
    second = await notify(web_client, pair.cpo, notification("Progress", sid, evse))
    assert not second["ok"] and second["code"] == "022", second
    assert second["info"] == TOO_EARLY and second["answer"]["StatusCode"]["AdditionalInfo"] == TOO_EARLY
    assert await notifications_received(web_client, pair.emp) == sent  # refused locally, never sent
    # other types are not limited
    assert (await notify(web_client, pair.cpo, notification("End", sid, evse)))["ok"]


async def test_progress_at_most_every_five_minutes_on_the_emp_side(
    pair: Pair, web_client: aiohttp.ClientSession
) -> None:
    sid, evse = await started_session(web_client, pair)
    first = await oicp(web_client, pair.emp, PATH, CPO_CALLS_EMP, notification("Progress", sid, evse))
    validate_response(PATH, first)
    assert first["Result"] is True, first
    second = await oicp(web_client, pair.emp, PATH, CPO_CALLS_EMP, notification("Progress", sid, evse))
    validate_response(PATH, second)
    assert second["Result"] is False and second["StatusCode"]["Code"] == "022"
    assert second["StatusCode"]["AdditionalInfo"] == TOO_EARLY


@pytest.mark.parametrize(
    ("kind", "missing", "text"),
    [
        ("Start", "ChargingStart", "Please provide Charging Start"),
        ("End", "ChargingEnd", "Please provide Charging End"),
        ("Error", "ErrorType", "Please provide ErrorType"),
        ("Progress", "EventOccurred", "Please provide Event Occurred"),
        ("Progress", "ChargingDuration", "Please provide either ChargingDuration or ConsumedEnergyProgress or both"),
    ],
)
async def test_a_refused_notification_has_hubjects_text_and_names_the_field(
    pair: Pair, web_client: aiohttp.ClientSession, kind: str, missing: str, text: str
) -> None:
    sid, evse = await started_session(web_client, pair)
    body = notification(kind, sid, evse)
    del body[missing]
    if missing == "ChargingDuration":  # neither of the two amounts
        del body["ConsumedEnergyProgress"]
    answer = await oicp(web_client, pair.emp, PATH, CPO_CALLS_EMP, body)
    validate_response(PATH, answer)
    assert answer["Result"] is False and answer["StatusCode"]["Code"] == "022"
    info = answer["StatusCode"]["AdditionalInfo"]
    assert info.startswith(text), info
    if missing != "ChargingDuration":
        assert f"{missing}: Field required" in info, info


async def test_an_invalid_evse_id_gets_hubjects_text(pair: Pair, web_client: aiohttp.ClientSession) -> None:
    sid, evse = await started_session(web_client, pair)
    answer = await oicp(web_client, pair.emp, PATH, CPO_CALLS_EMP, {**notification("Start", sid, evse), "EvseID": "x"})
    validate_response(PATH, answer)
    assert answer["StatusCode"]["AdditionalInfo"].startswith("Please add valid EVSEID"), answer


async def test_missing_cdrs_are_reported_once(
    quick_pair: QuickPair, ledgers: Ledgers, web_client: aiohttp.ClientSession
) -> None:
    cpo, emp = quick_pair.cpo, quick_pair.emp
    async with (
        BusResponder(cpo, BACKEND, always(ACCEPTED)),
        EventTap(cpo.topology.events.name, "session.cdr.missing") as cpo_events,
        EventTap(emp.topology.events.name, "session.cdr.missing") as emp_events,
    ):
        sessions = []
        for evse in ("DE*GEF*E7201", "DE*GEF*E7202"):
            reply = await command(web_client, emp, "emp.remote_start.request", start_body(evse))
            assert reply["ok"], reply
            sid = reply["session_id"]
            assert (await notify(web_client, cpo, notification("End", sid, evse)))["ok"]
            for node, events in ((cpo, cpo_events), (emp, emp_events)):
                await wait_until(ledgers.in_state(node, sid, "ended"), what="ended")
                await wait_until(
                    lambda ev=events, s=sid: events_about(ev.events, s), what=f"cdr.missing on {node.name}"
                )
            sessions.append(sid)
        # the second one was reported rounds after the first: the first was reported once all along
        first = sessions[0]
        assert len(events_about(cpo_events.events, first)) == 1 and len(events_about(emp_events.events, first)) == 1
        [event] = events_about(cpo_events.events, first)
        assert event["data"]["session"]["state"] == "ended"
