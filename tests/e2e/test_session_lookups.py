"""The internal API's views of the session ledger and the token store, and the session gauges on
/metrics, on real nodes: what an operations team looks at."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.conftest import Pair
from tests.support.nodes import NodeSpec
from tests.support.responders import BusResponder, always
from tests.support.sessions import command, notification, own_evse, start_body

pytest_plugins = ("tests.support.session_fixtures",)
pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

BACKEND = ["cpo.backend.#"]


async def get(http: aiohttp.ClientSession, node: NodeSpec, path: str, token: str | None = "") -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {node.internal_token if token == '' else token}"} if token is not None else {}
    async with http.get(node.internal_url + path, headers=headers) as response:
        text = await response.text()
        return response.status, (await response.json(content_type=None)) if text.startswith(("{", "[")) else text


async def ended_session(http: aiohttp.ClientSession, pair: Pair) -> tuple[str, str]:
    """A remote start accepted by the backend, then Start and End notifications: an ended session."""
    evse = await own_evse(http, pair.cpo)
    async with BusResponder(pair.cpo, BACKEND, always({"accepted": True})):
        reply = await command(http, pair.emp, "emp.remote_start.request", start_body(evse))
    assert reply["ok"], reply
    sid = reply["session_id"]
    for kind in ("Start", "End"):
        sent = await command(http, pair.cpo, "cpo.session.notify", {"notification": notification(kind, sid, evse)})
        assert sent["ok"], sent
    return sid, evse


async def test_a_session_its_history_and_the_indexes(pair: Pair, web_client: aiohttp.ClientSession) -> None:
    sid, evse = await ended_session(web_client, pair)
    for node in (pair.cpo, pair.emp):
        status, session = await get(web_client, node, f"/sessions/{sid}")
        assert status == 200, session
        assert session["state"] == "ended" and session["evse_id"] == evse
        assert [h["state"] for h in session["history"]][:2] == ["requested", "started"]
        assert session["history"][-1]["state"] == "ended"

        status, by_state = await get(web_client, node, "/sessions?state=ended&limit=2000")
        assert status == 200 and sid in {s["session_id"] for s in by_state["sessions"]}
        status, by_evse = await get(web_client, node, f"/sessions?evse={evse}")
        assert status == 200 and [s["session_id"] for s in by_evse["sessions"]] == [sid]
        status, waiting = await get(web_client, node, "/sessions/without-cdr?older_than=0&limit=2000")
        assert status == 200 and sid in {s["session_id"] for s in waiting["sessions"]}
        status, counts = await get(web_client, node, "/sessions")
        assert status == 200 and counts["counts"]["ended"] >= 1

        # the gauges are read from the ledger when /metrics is scraped
        status, metrics = await get(web_client, node, "/metrics", token=node.monitoring_token)
        assert status == 200
        ended = next(line for line in metrics.splitlines() if line.startswith('oicp_sessions{state="ended"}'))
        assert float(ended.split()[-1]) >= 1
        assert "oicp_sessions_without_cdr " in metrics


async def test_session_lookups_refuse_what_they_cannot_answer(pair: Pair, web_client: aiohttp.ClientSession) -> None:
    assert (await get(web_client, pair.cpo, "/sessions/no-such-session"))[0] == 404
    status, problem = await get(web_client, pair.cpo, "/sessions?state=charged")
    assert status == 400 and "state must be one of" in problem["error"]
    assert (await get(web_client, pair.cpo, "/sessions/without-cdr?older_than=soon"))[0] == 400
    assert (await get(web_client, pair.cpo, "/sessions", token=None))[0] == 401
    assert (await get(web_client, pair.cpo, "/sessions", token="wrong"))[0] == 401


async def test_tokens_are_shown_without_their_pins(pair: Pair, web_client: aiohttp.ClientSession) -> None:
    tokens = [
        {"Identification": {"RFIDMifareFamilyIdentification": {"UID": "0A0B0C0D"}}, "evco_id": "DE-GDF-C00000042-1"},
        {"Identification": {"QRCodeIdentification": {"EvcoID": "DE-GDF-C00000043-2", "PIN": "9876"}}},
    ]
    reply = await command(web_client, pair.emp, "emp.token.set", {"action_type": "insert", "tokens": tokens})
    assert reply["ok"], reply

    status, card = await get(web_client, pair.emp, "/tokens/0a0b0c0d")  # any case
    assert status == 200 and card["key"] == "0A0B0C0D" and card["evco_id"] == "DE-GDF-C00000042-1"
    status, qr = await get(web_client, pair.emp, "/tokens/DE-GDF-C00000043-2")  # any separators
    assert status == 200 and qr["has_pin"] is True
    assert "9876" not in str(qr) and "PIN" not in qr["Identification"]["QRCodeIdentification"]

    status, page = await get(web_client, pair.emp, "/tokens?size=2000")
    assert status == 200 and page["total"] >= 2
    assert {"0A0B0C0D", "DEGDFC000000432"} <= {t["key"] for t in page["tokens"]}
    assert "9876" not in str(page)
    assert (await get(web_client, pair.emp, "/tokens/FFFFFFFF"))[0] == 404
    assert (await get(web_client, pair.emp, "/tokens?size=2001"))[0] == 400
