"""Remote start and stop between a CPO node and an EMP node, the charge point backend played on the CPO
node's bus: accepted, refused (the backend's code passed through), unknown EVSE, foreign ProviderID,
stops of one's own and of others' sessions; never sent twice; and the timeout case - the charge point
confirms after the EMP was told it failed, and the session still lives on both nodes, takes its
notifications and waits for its CDR."""

from __future__ import annotations

import aiohttp
import pytest

from shared.oicp.operations import OPERATIONS_BY_NAME
from tests.conftest import EMP_CALLS_CPO, EMP_ID, SINK_CALLS_CPO, SINK_ID, Pair
from tests.oicp_schema import validate_response
from tests.support.cdr_bodies import full_cdr
from tests.support.events import EventTap
from tests.support.nodes import wait_until
from tests.support.responders import HOLD, BusResponder, always
from tests.support.sessions import (
    DOWN_OPERATOR,
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
START = "cpo.backend.remote_start"
STOP = "cpo.backend.remote_stop"
REMOTE_START_PATH = OPERATIONS_BY_NAME["AuthorizeRemoteStart"].path
REMOTE_STOP_PATH = OPERATIONS_BY_NAME["AuthorizeRemoteStop"].path


def asked(responder: BusResponder, key: str, session_id: str) -> int:
    """How often the backend was asked ``key`` about this session."""
    return sum(1 for k, body in responder.requests if k == key and body["data"]["request"]["SessionID"] == session_id)


async def test_remote_start_accepted_is_recorded_on_both_nodes(
    pair: Pair, ledgers: Ledgers, web_client: aiohttp.ClientSession
) -> None:
    evse = await own_evse(web_client, pair.cpo)
    async with (
        BusResponder(pair.cpo, BACKEND, always(ACCEPTED)) as backend,
        EventTap(pair.cpo.topology.events.name, "session.#") as cpo_events,
        EventTap(pair.emp.topology.events.name, "session.#") as emp_events,
    ):
        reply = await command(web_client, pair.emp, "emp.remote_start.request", start_body(evse))
        assert reply["ok"] and reply["code"] == "000", reply
        sid = reply["session_id"]
        assert reply["answer"]["Result"] is True and reply["answer"]["SessionID"] == sid
        # the EMP issued the SessionID and the CPO's backend was asked with it, once
        assert asked(backend, START, sid) == 1
        [(_, request)] = [(k, b) for k, b in backend.requests if b["data"]["request"]["SessionID"] == sid]
        assert request["data"]["peer_id"] == EMP_ID and request["data"]["request"]["EvseID"] == evse

        cpo_session = await ledgers.get(pair.cpo, sid)
        emp_session = await ledgers.get(pair.emp, sid)
        assert cpo_session is not None and cpo_session.state.value == "started" and cpo_session.role == "cpo"
        assert cpo_session.peer_id == EMP_ID and cpo_session.evse_id == evse
        assert emp_session is not None and emp_session.state.value == "started" and emp_session.role == "emp"
        assert [h["state"] for h in await ledgers.of(pair.cpo).history(sid)] == ["requested", "started"]

        for events in (cpo_events, emp_events):
            await wait_until(lambda ev=events: events_about(ev.events, sid, "session.started"), what="session.started")
            assert events_about(events.events, sid, "session.requested")


async def test_the_backends_partner_session_id_reaches_the_emp(
    pair: Pair, ledgers: Ledgers, web_client: aiohttp.ClientSession
) -> None:
    evse = await own_evse(web_client, pair.cpo)
    answer = {**ACCEPTED, "CPOPartnerSessionID": "csms-4711"}
    async with BusResponder(pair.cpo, BACKEND, always(answer)):
        reply = await command(web_client, pair.emp, "emp.remote_start.request", start_body(evse))
    assert reply["ok"], reply
    assert reply["answer"]["CPOPartnerSessionID"] == "csms-4711"
    for node in (pair.cpo, pair.emp):
        session = await ledgers.get(node, reply["session_id"])
        assert session is not None and session.cpo_partner_session_id == "csms-4711", node.name


async def test_refused_start_passes_the_backend_code_through(
    pair: Pair, ledgers: Ledgers, web_client: aiohttp.ClientSession
) -> None:
    evse = await own_evse(web_client, pair.cpo)
    in_use = {"accepted": False, "code": "602", "info": "a car is charging there"}
    async with BusResponder(pair.cpo, BACKEND, always(in_use)) as backend:
        reply = await command(web_client, pair.emp, "emp.remote_start.request", start_body(evse))
        sid = reply["session_id"]
        assert not reply["ok"] and reply["code"] == "602", reply
        assert reply["answer"]["Result"] is False and reply["answer"]["StatusCode"]["Code"] == "602"
        for node in (pair.cpo, pair.emp):
            session = await ledgers.get(node, sid)
            assert session is not None and session.state.value == "refused"
        # asking again with the same SessionID answers from the ledger: not sent, not asked again
        again = await command(web_client, pair.emp, "emp.remote_start.request", start_body(evse, sid))
        assert again["code"] == "602" and again["session_id"] == sid
        assert asked(backend, START, sid) == 1


async def test_unknown_evse_is_603_once_own_evse_data_exists(
    pair: Pair, ledgers: Ledgers, web_client: aiohttp.ClientSession
) -> None:
    await own_evse(web_client, pair.cpo)  # the node has EVSE data now
    unknown = f"DE*GEF*E{new_session_id()[:8].upper()}"
    async with BusResponder(pair.cpo, BACKEND, always(ACCEPTED)) as backend:
        reply = await command(web_client, pair.emp, "emp.remote_start.request", start_body(unknown))
        assert not reply["ok"] and reply["code"] == "603", reply
        assert backend.requests == []
        assert await ledgers.get(pair.cpo, reply["session_id"]) is None


async def test_a_foreign_provider_id_is_017(pair: Pair, ledgers: Ledgers, web_client: aiohttp.ClientSession) -> None:
    evse = await own_evse(web_client, pair.cpo)
    sid = new_session_id()
    body = {
        "ProviderID": "DE-XYZ",
        "EvseID": evse,
        "Identification": start_body(evse)["Identification"],
        "SessionID": sid,
    }
    async with BusResponder(pair.cpo, BACKEND, always(ACCEPTED)) as backend:
        path = REMOTE_START_PATH.format(providerID=EMP_ID)
        answer = await oicp(web_client, pair.cpo, path, EMP_CALLS_CPO, body)
        validate_response(path, answer, spec="emp")
        assert answer["Result"] is False and answer["StatusCode"]["Code"] == "017"
        assert backend.requests == [] and await ledgers.get(pair.cpo, sid) is None


async def test_remote_stop_own_session_only(pair: Pair, ledgers: Ledgers, web_client: aiohttp.ClientSession) -> None:
    evse = await own_evse(web_client, pair.cpo)
    async with (
        BusResponder(pair.cpo, BACKEND, always(ACCEPTED)) as backend,
        EventTap(pair.cpo.topology.events.name, "session.#") as cpo_events,
    ):
        sid = (await command(web_client, pair.emp, "emp.remote_start.request", start_body(evse)))["session_id"]

        # another EMP peer (the sink) may not stop it, nor may anyone stop an unknown session
        path = REMOTE_STOP_PATH.format(providerID=SINK_ID)
        foreign = await oicp(
            web_client, pair.cpo, path, SINK_CALLS_CPO, {"SessionID": sid, "ProviderID": SINK_ID, "EvseID": evse}
        )
        validate_response(path, foreign, spec="emp")
        assert foreign["Result"] is False and foreign["StatusCode"]["Code"] == "400"
        path = REMOTE_STOP_PATH.format(providerID=EMP_ID)
        unknown = await oicp(
            web_client,
            pair.cpo,
            path,
            EMP_CALLS_CPO,
            {"SessionID": new_session_id(), "ProviderID": EMP_ID, "EvseID": evse},
        )
        assert unknown["StatusCode"]["Code"] == "400"
        refused = await command(web_client, pair.emp, "emp.remote_stop.request", {"SessionID": new_session_id()})
        assert not refused["ok"] and refused["code"] == "400"
        assert asked(backend, STOP, sid) == 0

        # the owner may: EvseID and ProviderID default to the session's
        reply = await command(web_client, pair.emp, "emp.remote_stop.request", {"SessionID": sid})
        assert reply["ok"] and reply["answer"]["Result"] is True, reply
        assert asked(backend, STOP, sid) == 1
        for node in (pair.cpo, pair.emp):
            session = await ledgers.get(node, sid)
            assert session is not None and session.state.value == "ended"
        await wait_until(lambda: events_about(cpo_events.events, sid, "session.stopped"), what="session.stopped")


async def test_a_broken_cpo_is_asked_once(
    quick_pair: QuickPair, ledgers: Ledgers, web_client: aiohttp.ClientSession
) -> None:
    """The CPO answers HTTP 503: the EMP reports the failure, keeps the session in error and never
    sends again - not on its own, not when the same command comes again."""
    evse = f"{DOWN_OPERATOR}*E1"
    sid = new_session_id()
    reply = await command(web_client, quick_pair.emp, "emp.remote_start.request", start_body(evse, sid))
    assert not reply["ok"] and reply["code"] == "310", reply
    session = await ledgers.get(quick_pair.emp, sid)
    assert session is not None and session.state.value == "error"
    again = await command(web_client, quick_pair.emp, "emp.remote_start.request", start_body(evse, sid))
    assert again["code"] == "310" and again["session_id"] == sid
    assert len(quick_pair.down.paths) == 1  # one call, from the first command only


async def test_the_timeout_case_keeps_the_session_on_both_nodes(
    quick_pair: QuickPair, ledgers: Ledgers, web_client: aiohttp.ClientSession
) -> None:
    """The charge point confirms only after the EMP was told the start failed. Both nodes keep the
    session; the CPO adopts the late confirmation; the notifications that follow are accepted by the
    EMP and move both ledgers to ended, where the session waits for its CDR."""
    cpo, emp = quick_pair.cpo, quick_pair.emp
    evse = "DE*GEF*E7001"
    async with (
        BusResponder(cpo, BACKEND, lambda key, body: HOLD) as backend,
        EventTap(cpo.topology.events.name, "session.#") as cpo_events,
        EventTap(emp.topology.events.name, "session.#") as emp_events,
    ):
        reply = await command(web_client, emp, "emp.remote_start.request", start_body(evse))
        sid = reply["session_id"]
        assert not reply["ok"] and reply["code"] == "310", reply
        assert (await ledgers.get(emp, sid)).state.value == "error"  # type: ignore[union-attr]
        await wait_until(lambda: events_about(emp_events.events, sid, "session.failed"), what="session.failed")
        # the CPO gives up on its backend as well, and keeps the session
        await wait_until(ledgers.in_state(cpo, sid, "error"), what="the CPO's session in error")

        assert await backend.release(ACCEPTED) == 1
        await wait_until(ledgers.in_state(cpo, sid, "started"), what="the late confirmation adopted")
        await wait_until(lambda: events_about(cpo_events.events, sid, "session.started"), what="session.started")
        assert (await ledgers.get(emp, sid)).state.value == "error"  # type: ignore[union-attr]

        for kind, state in (("Start", "started"), ("Progress", "charging"), ("End", "ended")):
            sent = await command(web_client, cpo, "cpo.session.notify", {"notification": notification(kind, sid, evse)})
            assert sent["ok"] and sent["code"] == "000", (kind, sent)
            for node in (cpo, emp):
                session = await ledgers.get(node, sid)
                assert session is not None and session.state.value == state, (kind, node.name, session)
        assert events_about(emp_events.events, sid, "session.notification")

        # the ledgers keep it for its CDR (issue #5)
        for node in (cpo, emp):
            assert sid in {s.session_id for s in await ledgers.of(node).without_cdr(older_than_seconds=0)}
        # and the charge point was asked exactly once, the EMP's command never repeated
        assert asked(backend, START, sid) == 1

    # its CDR finds the session on both nodes: delivered, accepted, and the session closed on each side
    cdr = full_cdr(sid, evse_id=evse)
    submitted = await command(web_client, cpo, "cpo.cdr.submit", cdr)
    assert submitted["ok"] and submitted["session_id"] == sid, submitted
    await wait_until(ledgers.in_state(emp, sid, "cdr_received"), what="the EMP's session closed by its CDR")
    await wait_until(ledgers.in_state(cpo, sid, "cdr_sent"), what="the CPO's session closed by the acknowledgement")
    headers = {"Authorization": f"Bearer {emp.internal_token}"}
    async with web_client.get(f"{emp.internal_url}/cdrs/{sid}", headers=headers) as response:
        received = (await response.json())["in"]
    assert received["cdr"] == cdr and received["session_known"] is True
