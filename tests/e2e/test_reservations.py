"""Reservations between a CPO node and an EMP node, the charge point backend played on the CPO node's
bus: a reservation with a Duration, its stop (the reservation ends, its CDR is due), a stop of what is
not a reservation of the caller, and expiry when the reservation time is over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from tests.conftest import Pair
from tests.support.events import EventTap
from tests.support.nodes import wait_until
from tests.support.responders import BusResponder, always
from tests.support.sessions import Ledgers, QuickPair, command, events_about, new_session_id, own_evse, start_body

pytest_plugins = ("tests.support.session_fixtures",)
pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

BACKEND = ["cpo.backend.#"]
ACCEPTED = {"accepted": True}
DURATION_MINUTES = 10
#: How far the reservation end is moved into the past to let it expire (time passing, simulated).
EXPIRED_AGO = timedelta(seconds=1)


async def test_reservation_start_and_stop(pair: Pair, ledgers: Ledgers, web_client: aiohttp.ClientSession) -> None:
    evse = await own_evse(web_client, pair.cpo)
    async with (
        BusResponder(pair.cpo, BACKEND, always(ACCEPTED)) as backend,
        EventTap(pair.cpo.topology.events.name, "session.#") as cpo_events,
        EventTap(pair.emp.topology.events.name, "session.#") as emp_events,
    ):
        before = datetime.now(UTC)
        reply = await command(
            web_client, pair.emp, "emp.reservation.start.request", start_body(evse, Duration=DURATION_MINUTES)
        )
        after = datetime.now(UTC)
        assert reply["ok"] and reply["answer"]["Result"] is True, reply
        sid = reply["session_id"]
        [(key, request)] = backend.requests
        assert key == "cpo.backend.reservation_start"
        assert (
            request["data"]["request"]["Duration"] == DURATION_MINUTES
            and request["data"]["request"]["SessionID"] == sid
        )
        for node in (pair.cpo, pair.emp):
            session = await ledgers.get(node, sid)
            assert session is not None and session.state.value == "reserved" and session.kind == "reservation"
            assert session.reservation_until is not None
            until = datetime.fromisoformat(session.reservation_until)
            assert before + timedelta(minutes=DURATION_MINUTES) <= until <= after + timedelta(minutes=DURATION_MINUTES)
        await wait_until(lambda: events_about(emp_events.events, sid, "session.reserved"), what="session.reserved")

        # a remote stop is not how a reservation ends, and an unknown reservation cannot be stopped
        wrong = await command(web_client, pair.emp, "emp.remote_stop.request", {"SessionID": sid})
        assert not wrong["ok"] and wrong["code"] == "400"
        unknown = await command(web_client, pair.emp, "emp.reservation.stop.request", {"SessionID": new_session_id()})
        assert not unknown["ok"] and unknown["code"] == "400"

        stop = await command(web_client, pair.emp, "emp.reservation.stop.request", {"SessionID": sid})
        assert stop["ok"], stop
        assert [k for k, _ in backend.requests] == ["cpo.backend.reservation_start", "cpo.backend.reservation_stop"]
        for node in (pair.cpo, pair.emp):
            session = await ledgers.get(node, sid)
            assert session is not None and session.state.value == "ended"  # its CDR is due now
        [ended] = await wait_until(
            lambda: events_about(cpo_events.events, sid, "session.reservation.ended"), what="reservation.ended"
        )
        assert "CDR" in ended["data"]["info"]
        assert sid in {s.session_id for s in await ledgers.of(pair.cpo).without_cdr(older_than_seconds=0)}


async def test_a_reservation_expires(
    quick_pair: QuickPair, ledgers: Ledgers, web_client: aiohttp.ClientSession
) -> None:
    cpo, emp = quick_pair.cpo, quick_pair.emp
    evse = "DE*GEF*E7101"
    async with (
        BusResponder(cpo, BACKEND, always(ACCEPTED)),
        EventTap(cpo.topology.events.name, "session.#") as cpo_events,
    ):
        reply = await command(web_client, emp, "emp.reservation.start.request", start_body(evse, Duration=1))
        assert reply["ok"], reply
        sid = reply["session_id"]
        # A minute is the shortest reservation OICP allows: move its end into the past instead of waiting.
        for node in (cpo, emp):
            await ledgers.of(node).reschedule_reservation(sid, datetime.now(UTC) - EXPIRED_AGO, note="test: time over")
        for node in (cpo, emp):
            await wait_until(ledgers.in_state(node, sid, "expired"), what=f"expired on {node.name}")
        await wait_until(lambda: events_about(cpo_events.events, sid, "session.expired"), what="session.expired")
        await wait_until(
            lambda: events_about(cpo_events.events, sid, "session.reservation.ended"), what="reservation.ended"
        )
        # an expired reservation is over: it cannot be stopped any more
        stop = await command(web_client, emp, "emp.reservation.stop.request", {"SessionID": sid})
        assert not stop["ok"] and stop["code"] == "400", stop
