"""Authorization end to end (issue #4), over HTTP against real node processes, RabbitMQ and Redis.

EMP role (the pair's EMP node, called on its OICP face as the CPO peer): decisions from the token store
(known RFID authorized with SessionID, ProviderID and AuthorizationStopIdentifications; unknown 102;
blocked EvcoID 200; QR wrong PIN 101; RFIDIdentification refused 022), AuthorizeStop of its own session
vs. unknown/foreign sessions (400), emp.token.set semantics (009/017/019), the events.

PushAuthenticationData: the EMP node pushes its offline tokens to the pair's CPO node, which then
authorizes offline (no call to the EMP) and forgets blocked tokens; the CPO face's ingest refuses
insert/update conflicts (009) and foreign EvcoIDs (019).

CPO role (the pair's CPO node, internal API): an EvcoID routed to its EMP, and the AuthorizeStop reaching
it. A second node ("mix", both roles) proves the RFID broadcast to three EMP peers — one refuses, one is
down, one authorizes — and the case where none authorizes within the deadline, plus the EMP's internal
decider: answering, silent (fallback after the deadline), and not bound (fallback at once).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.oicp import Identification
from shared.oicp.operations import OPERATIONS_BY_NAME
from shared.stores.auth_data import AuthDataStore
from shared.stores.redis import KeySpace
from shared.stores.sessions import Session, SessionLedger, SessionState
from tests.conftest import CPO_CALLS_EMP, CPO_ID, EMP_CALLS_CPO, EMP_ID, Pair
from tests.oicp_schema import validate_response
from tests.support.emp_peers import FakeEmp
from tests.support.events import EventTap
from tests.support.nodes import REDIS_URL, RUN_ID, NodeProcesses, NodeSpec, cleanup, wait_until
from tests.support.responders import SILENT, BusResponder, always

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

START = OPERATIONS_BY_NAME["AuthorizeStart"].path
STOP = OPERATIONS_BY_NAME["AuthorizeStop"].path
PUSH_AUTH = OPERATIONS_BY_NAME["PushAuthenticationData"].path
EVSE = "DE*GEF*E1"
PUSH_DEADLINE = 30  # seconds for a token change to reach the CPO node
# The mixed node's timing: short enough for the test, long enough for a loaded 2-core machine.
BROADCAST_TIMEOUT_SECONDS = 3.0
SLOW_PEER_DELAY_SECONDS = 20.0  # never answers within the broadcast deadline
DECIDER_TIMEOUT_SECONDS = 1.5


def uid() -> str:
    return secrets.token_hex(4).upper()


def evco(provider: str = "DE-GDF") -> str:
    return f"{provider}-C{secrets.token_hex(4).upper()}-1"


def rfid(value: str) -> dict[str, Any]:
    return {"RFIDMifareFamilyIdentification": {"UID": value}}


def code_of(answer: dict[str, Any]) -> str:
    return str(answer["StatusCode"]["Code"])


class Api:
    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    async def command(self, node: NodeSpec, name: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {node.internal_token}"}
        async with self.http.post(f"{node.internal_url}/commands/{name}", json=body, headers=headers) as response:
            return response.status, await response.json()

    async def tokens(self, node: NodeSpec, action: str, tokens: list[dict[str, Any]]) -> dict[str, Any]:
        status, reply = await self.command(node, "emp.token.set", {"action_type": action, "tokens": tokens})
        assert status == 200 and reply["ok"], reply
        return reply

    async def oicp(self, url: str, body: dict[str, Any], token: str) -> dict[str, Any]:
        async with self.http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
            return await response.json()

    async def emp_start(self, pair: Pair, identification: dict[str, Any], **extra: Any) -> dict[str, Any]:
        body = {"OperatorID": CPO_ID, "EvseID": EVSE, "Identification": identification, **extra}
        answer = await self.oicp(pair.emp.oicp_url + START.format(operatorID=CPO_ID), body, CPO_CALLS_EMP)
        validate_response(START, answer)
        return answer

    async def emp_stop(self, pair: Pair, session_id: str, identification: dict[str, Any]) -> dict[str, Any]:
        body = {"OperatorID": CPO_ID, "SessionID": session_id, "Identification": identification, "EvseID": EVSE}
        answer = await self.oicp(pair.emp.oicp_url + STOP.format(operatorID=CPO_ID), body, CPO_CALLS_EMP)
        validate_response(STOP, answer)
        return answer


@pytest_asyncio.fixture(loop_scope="session")
async def api() -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        yield Api(http)


@pytest_asyncio.fixture(loop_scope="session")
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(REDIS_URL)
    yield client
    await client.aclose()


def ledger_of(redis: aioredis.Redis, node: NodeSpec) -> SessionLedger:
    return SessionLedger(redis, KeySpace(f"{RUN_ID}:{node.name}:"))


def decisions(tap: EventTap, session_or_kind: str) -> list[dict[str, Any]]:
    return [
        e["data"]
        for e in tap.events
        if e["type"] == "authorization.decided"
        and session_or_kind in (e["data"].get("session_id"), e["data"].get("identification_kind"))
    ]


# ---- EMP role: decisions from the token store -------------------------------------------------


async def test_emp_decides_from_its_token_store(pair: Pair, api: Api, redis: aioredis.Redis) -> None:
    card, blocked_contract, qr_contract = uid(), evco(), evco()
    stop_card = uid()
    async with EventTap(pair.emp.topology.events.name, "#") as tap:
        reply = await api.tokens(
            pair.emp,
            "insert",
            [
                {"Identification": rfid(card), "AuthorizationStopIdentifications": [rfid(stop_card)]},
                {"Identification": {"PlugAndChargeIdentification": {"EvcoID": blocked_contract}}, "blocked": True},
                {"Identification": {"QRCodeIdentification": {"EvcoID": qr_contract, "PIN": "4711"}}},
            ],
        )
        assert reply["changed"] == 3

        authorized = await api.emp_start(pair, rfid(card.lower().upper()), CPOPartnerSessionID="cpo-42")
        assert authorized["AuthorizationStatus"] == "Authorized" and code_of(authorized) == "000"
        assert authorized["ProviderID"] == EMP_ID and authorized["CPOPartnerSessionID"] == "cpo-42"
        assert authorized["AuthorizationStopIdentifications"] == [rfid(stop_card)]
        session_id = authorized["SessionID"]
        session = await ledger_of(redis, pair.emp).get(session_id)
        assert session is not None and session.state is SessionState.AUTHORIZED
        assert (session.role, session.kind, session.peer_id, session.evse_id) == ("emp", "authorize", CPO_ID, EVSE)

        # the SessionID the CPO sends is kept
        given = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
        assert (await api.emp_start(pair, rfid(card), SessionID=given))["SessionID"] == given

        unknown = await api.emp_start(pair, rfid(uid()))
        assert (unknown["AuthorizationStatus"], code_of(unknown)) == ("NotAuthorized", "102")
        assert "SessionID" not in unknown
        locked = await api.emp_start(pair, {"PlugAndChargeIdentification": {"EvcoID": blocked_contract}})
        assert (locked["AuthorizationStatus"], code_of(locked)) == ("NotAuthorized", "200")
        wrong_pin = await api.emp_start(pair, {"QRCodeIdentification": {"EvcoID": qr_contract, "PIN": "0000"}})
        assert (wrong_pin["AuthorizationStatus"], code_of(wrong_pin)) == ("NotAuthorized", "101")
        right_pin = await api.emp_start(pair, {"QRCodeIdentification": {"EvcoID": qr_contract, "PIN": "4711"}})
        assert right_pin["AuthorizationStatus"] == "Authorized"
        # the stop list never echoes the PIN
        assert right_pin["AuthorizationStopIdentifications"] == [{"QRCodeIdentification": {"EvcoID": qr_contract}}]
        not_allowed = await api.emp_start(pair, {"RFIDIdentification": {"UID": card, "RFID": "mifareCls"}})
        assert (not_allowed["AuthorizationStatus"], code_of(not_allowed)) == ("NotAuthorized", "022")
        assert "RFIDMifareFamilyIdentification" in not_allowed["StatusCode"]["AdditionalInfo"]

        await wait_until(lambda: decisions(tap, session_id), what="authorization.decided of the session")
        event = decisions(tap, session_id)[0]
        assert (event["role"], event["decided_by"], event["authorization_status"]) == ("emp", "tokens", "Authorized")
        assert event["peer_id"] == CPO_ID and event["identification_kind"] == "RFIDMifareFamilyIdentification"
        await wait_until(
            lambda: any(
                e["type"] == "session.authorized" and e["data"]["session"]["session_id"] == session_id
                for e in tap.events
            ),
            what="session.authorized",
        )
        await wait_until(lambda: any(e["type"] == "tokens.changed" for e in tap.events), what="tokens.changed")
        refusals = [e["data"]["code"] for e in tap.events if e["type"] == "authorization.decided"]
        await wait_until(
            lambda: (
                {"102", "200", "101", "022"}
                <= {e["data"]["code"] for e in tap.events if e["type"] == "authorization.decided"}
            ),
            what=f"an event for every refusal (have {refusals})",
        )

        # AuthorizeStop: the session's own stop medium, another medium, an unknown session, a foreign one
        stopped = await api.emp_stop(pair, session_id, rfid(stop_card))
        assert (stopped["AuthorizationStatus"], stopped["SessionID"]) == ("Authorized", session_id)
        assert stopped["ProviderID"] == EMP_ID
        own_card = await api.emp_stop(pair, session_id, rfid(card))
        assert own_card["AuthorizationStatus"] == "Authorized"
        other_card = await api.emp_stop(pair, session_id, rfid(uid()))
        assert (other_card["AuthorizationStatus"], code_of(other_card)) == ("NotAuthorized", "102")
        unknown_session = await api.emp_stop(pair, "00000000-0000-0000-0000-000000000001", rfid(card))
        assert (unknown_session["AuthorizationStatus"], code_of(unknown_session)) == ("NotAuthorized", "400")
        foreign = Session(
            session_id="00000000-0000-0000-0000-0000000000f0",
            role="emp",
            state=SessionState.AUTHORIZED,
            kind="authorize",
            peer_id="DE*XYZ",
            provider_id=EMP_ID,
            identification=rfid(card),
        )
        await ledger_of(redis, pair.emp).create(foreign)
        not_yours = await api.emp_stop(pair, foreign.session_id, rfid(card))
        assert (not_yours["AuthorizationStatus"], code_of(not_yours)) == ("NotAuthorized", "400")
        await wait_until(
            lambda: (
                {"Authorized", "NotAuthorized"}
                <= {
                    e["authorization_status"]
                    for e in decisions(tap, "RFIDMifareFamilyIdentification")
                    if e["operation"] == "AuthorizeStop"
                }
            ),
            what="authorization.decided of the stops",
        )


async def test_token_set_semantics_over_the_internal_api(pair: Pair, api: Api) -> None:
    card = uid()
    await api.tokens(pair.emp, "insert", [{"Identification": rfid(card)}])
    status, clash = await api.command(
        pair.emp, "emp.token.set", {"action_type": "insert", "tokens": [{"Identification": rfid(card)}]}
    )
    assert status == 409 and clash["code"] == "009" and card in clash["info"]
    missing = uid()
    status, reply = await api.command(
        pair.emp, "emp.token.set", {"action_type": "update", "tokens": [{"Identification": rfid(missing)}]}
    )
    assert status == 409 and reply["code"] == "009" and missing in reply["info"]
    foreign_evco = evco("DE-OTH")
    status, reply = await api.command(
        pair.emp,
        "emp.token.set",
        {"action_type": "insert", "tokens": [{"Identification": {"RemoteIdentification": {"EvcoID": foreign_evco}}}]},
    )
    assert status == 422 and reply["code"] == "019" and foreign_evco in reply["info"]
    status, reply = await api.command(
        pair.emp,
        "emp.token.set",
        {"action_type": "insert", "tokens": [{"Identification": rfid(uid()), "provider_id": "DE-OTH"}]},
    )
    assert status == 422 and reply["code"] == "017"
    deleted = await api.tokens(pair.emp, "delete", [{"Identification": rfid(card)}])
    assert deleted["deleted"] == 1
    gone = await api.emp_start(pair, rfid(card))
    assert code_of(gone) == "102"


# ---- PushAuthenticationData: EMP node → CPO node, then offline decisions -----------------------


async def test_offline_tokens_reach_the_cpo_which_authorizes_offline(
    pair: Pair, api: Api, redis: aioredis.Redis
) -> None:
    cpo_auth = AuthDataStore(redis, KeySpace(f"{RUN_ID}:{pair.cpo.name}:"))
    card, online_only, qr_contract = uid(), uid(), evco()
    await api.tokens(
        pair.emp,
        "insert",
        [
            {"Identification": rfid(card)},
            {"Identification": rfid(online_only), "offline": False},
            {"Identification": {"QRCodeIdentification": {"EvcoID": qr_contract, "PIN": "2468"}}},
        ],
    )
    await wait_until(
        lambda: cpo_auth.lookup(Identification.rfid_mifare(card)), timeout=PUSH_DEADLINE, what="card at the CPO"
    )
    pushed_qr = await wait_until(
        lambda: cpo_auth.lookup(Identification.qr_code(qr_contract, pin="2468")), timeout=PUSH_DEADLINE, what="QR"
    )
    # the CPO keeps only a bcrypt hash of the PIN
    stored_qr = pushed_qr.identification.qr_code_identification
    assert stored_qr.pin is None and stored_qr.hashed_pin.value.startswith("$2b$")
    assert await cpo_auth.lookup(Identification.rfid_mifare(online_only)) is None

    async with EventTap(pair.cpo.topology.events.name, "authorization.decided") as tap:
        status, reply = await api.command(
            pair.cpo, "cpo.authorize.start", {"EvseID": EVSE, "Identification": rfid(card)}
        )
        assert status == 200 and reply["ok"], reply
        answer = reply["answer"]
        validate_response(START, answer)
        assert answer["AuthorizationStatus"] == "Authorized" and answer["ProviderID"] == EMP_ID
        session = await ledger_of(redis, pair.cpo).get(answer["SessionID"])
        assert session is not None and session.role == "cpo" and session.peer_id is None
        assert session.details["decided_by"] == "auth_data" and session.operator_id == CPO_ID
        await wait_until(lambda: decisions(tap, answer["SessionID"]), what="the CPO's decision event")
        assert decisions(tap, answer["SessionID"])[0]["decided_by"] == "auth_data"

        # QR with the right PIN: offline; with a wrong PIN: online at the EMP, which refuses (101)
        _, good = await api.command(
            pair.cpo,
            "cpo.authorize.start",
            {"EvseID": EVSE, "Identification": {"QRCodeIdentification": {"EvcoID": qr_contract, "PIN": "2468"}}},
        )
        assert good["answer"]["AuthorizationStatus"] == "Authorized"
        assert (await ledger_of(redis, pair.cpo).get(good["session_id"])).peer_id is None  # type: ignore[union-attr]
        _, bad = await api.command(
            pair.cpo,
            "cpo.authorize.start",
            {"EvseID": EVSE, "Identification": {"QRCodeIdentification": {"EvcoID": qr_contract, "PIN": "1111"}}},
        )
        assert (bad["answer"]["AuthorizationStatus"], code_of(bad["answer"])) == ("NotAuthorized", "101")

        # a session authorized offline is stopped locally, only with the same medium
        _, other = await api.command(
            pair.cpo, "cpo.authorize.stop", {"SessionID": answer["SessionID"], "Identification": rfid(uid())}
        )
        assert (other["answer"]["AuthorizationStatus"], code_of(other["answer"])) == ("NotAuthorized", "102")
        _, same = await api.command(
            pair.cpo, "cpo.authorize.stop", {"SessionID": answer["SessionID"], "Identification": rfid(card)}
        )
        assert same["answer"]["AuthorizationStatus"] == "Authorized"
        validate_response(STOP, same["answer"])

    # blocking or deleting a token removes it at the CPO
    await api.tokens(pair.emp, "update", [{"Identification": rfid(card), "blocked": True}])
    await api.tokens(pair.emp, "delete", [{"Identification": {"QRCodeIdentification": {"EvcoID": qr_contract}}}])

    async def forgotten() -> bool:
        return (
            await cpo_auth.lookup(Identification.rfid_mifare(card)) is None
            and await cpo_auth.lookup(Identification.plug_and_charge(qr_contract)) is None
        )

    await wait_until(forgotten, timeout=PUSH_DEADLINE, what="blocked and deleted tokens gone at the CPO")


async def test_cpo_face_ingest_semantics(pair: Pair, api: Api) -> None:
    url = pair.cpo.oicp_url + PUSH_AUTH.format(providerID=EMP_ID)

    def body(action: str, *identifications: dict[str, Any]) -> dict[str, Any]:
        return {
            "ActionType": action,
            "ProviderAuthenticationData": {
                "ProviderID": EMP_ID,
                "AuthenticationDataRecord": [{"Identification": i} for i in identifications],
            },
        }

    card = uid()
    inserted = await api.oicp(url, body("insert", rfid(card)), EMP_CALLS_CPO)
    assert inserted["Result"] is True, inserted
    validate_response(PUSH_AUTH, inserted)
    again = await api.oicp(url, body("insert", rfid(uid()), rfid(card)), EMP_CALLS_CPO)
    assert again["Result"] is False and code_of(again) == "009" and card in again["StatusCode"]["AdditionalInfo"]
    validate_response(PUSH_AUTH, again)
    missing = uid()
    update = await api.oicp(url, body("update", rfid(missing)), EMP_CALLS_CPO)
    assert code_of(update) == "009" and missing in update["StatusCode"]["AdditionalInfo"]
    foreign = evco("DE-OTH")
    wrong = await api.oicp(url, body("insert", {"PlugAndChargeIdentification": {"EvcoID": foreign}}), EMP_CALLS_CPO)
    assert wrong["Result"] is False and code_of(wrong) == "019" and foreign in wrong["StatusCode"]["AdditionalInfo"]
    deleted = await api.oicp(url, body("delete", rfid(card)), EMP_CALLS_CPO)
    assert deleted["Result"] is True


# ---- CPO role against the pair's EMP node: EvcoID routing and AuthorizeStop ----------------------


async def test_evco_id_is_routed_to_its_emp_and_the_stop_reaches_it(
    pair: Pair, api: Api, redis: aioredis.Redis
) -> None:
    contract = evco()
    # online only: the decision must come from the EMP node, not from pushed data
    await api.tokens(
        pair.emp,
        "insert",
        [{"Identification": {"PlugAndChargeIdentification": {"EvcoID": contract}}, "offline": False}],
    )
    async with EventTap(pair.emp.topology.events.name, "authorization.decided") as emp_tap:
        status, reply = await api.command(
            pair.cpo,
            "cpo.authorize.start",
            {"EvseID": EVSE, "Identification": {"PlugAndChargeIdentification": {"EvcoID": contract}}},
        )
        assert status == 200 and reply["answer"]["AuthorizationStatus"] == "Authorized", reply
        session_id = reply["answer"]["SessionID"]
        cpo_session = await ledger_of(redis, pair.cpo).get(session_id)
        assert cpo_session is not None and cpo_session.peer_id == EMP_ID
        assert cpo_session.details["decided_by"] == "peer"
        # the EMP node decided it, under the SessionID the CPO issued
        emp_session = await ledger_of(redis, pair.emp).get(session_id)
        assert emp_session is not None and emp_session.peer_id == CPO_ID

        status, stopped = await api.command(
            pair.cpo,
            "cpo.authorize.stop",
            {"SessionID": session_id, "Identification": {"PlugAndChargeIdentification": {"EvcoID": contract}}},
        )
        assert status == 200 and stopped["answer"]["AuthorizationStatus"] == "Authorized", stopped
        await wait_until(
            lambda: any(e["operation"] == "AuthorizeStop" for e in decisions(emp_tap, session_id)),
            what="the EMP node decided the AuthorizeStop",
        )
    unknown = await api.command(
        pair.cpo,
        "cpo.authorize.stop",
        {"SessionID": "00000000-0000-0000-0000-00000000abcd", "Identification": rfid(uid())},
    )
    assert code_of(unknown[1]["answer"]) == "400"
    # an EvcoID of a provider that is no peer
    _, nobody = await api.command(
        pair.cpo,
        "cpo.authorize.start",
        {"EvseID": EVSE, "Identification": {"RemoteIdentification": {"EvcoID": evco("DE-NOP")}}},
    )
    assert code_of(nobody["answer"]) == "300"


# ---- a node with both roles: RFID broadcast to fake EMP peers, and the EMP's decider ------------


class Mix:
    def __init__(self, node: NodeSpec, refuses: FakeEmp, down: FakeEmp, authorizes: FakeEmp, slow: FakeEmp) -> None:
        self.node, self.refuses, self.down, self.authorizes, self.slow = node, refuses, down, authorizes, slow


MIX_OPERATOR = "DE*MIX"
MIX_PROVIDER = "DE-MIX"
CALLER = "DE*CAL"
CALLER_TOKEN = "cal-calls-mix-token"


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def mix(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mix]:
    refuses = FakeEmp("DE-RFS", authorize=False, refusal_code="200")
    down = FakeEmp("DE-DWN")  # never started: connection refused
    authorizes = FakeEmp("DE-AUT")
    slow = FakeEmp("DE-SLO", authorize=False, delay=SLOW_PEER_DELAY_SECONDS)
    for peer in (refuses, authorizes, slow):
        await peer.start()
    node = NodeSpec("mix", operator_ids=[MIX_OPERATOR], provider_ids=[MIX_PROVIDER])
    node.peers = [
        {
            "id": p.provider_id,
            "role": "emp",
            "base_url": p.url,
            "inbound_token": f"{p.provider_id}-token",
            "timeout_seconds": SLOW_PEER_DELAY_SECONDS * 2,
        }
        for p in (refuses, down, authorizes, slow)
    ]
    node.peers.append({"id": CALLER, "role": "cpo", "base_url": "http://127.0.0.1:9", "inbound_token": CALLER_TOKEN})
    node.extra = {
        "authorization": {
            "broadcast_timeout_seconds": BROADCAST_TIMEOUT_SECONDS,
            "use_decider": True,
            "decider_timeout_seconds": DECIDER_TIMEOUT_SECONDS,
            "fallback": "not_authorized",
        }
    }
    processes = NodeProcesses([node], tmp_path_factory.mktemp("mix"))
    try:
        await processes.start()
        yield Mix(node, refuses, down, authorizes, slow)
    finally:
        processes.stop()
        for peer in (refuses, authorizes, slow):
            await peer.stop()
        await cleanup([node])


async def test_rfid_broadcast_first_authorized_wins(mix: Mix, api: Api, redis: aioredis.Redis) -> None:
    card = uid()
    mix.authorizes.authorize = True
    status, reply = await api.command(
        mix.node, "cpo.authorize.start", {"EvseID": "DE*MIX*E1", "Identification": rfid(card)}
    )
    assert status == 200, reply
    answer = reply["answer"]
    validate_response(START, answer)
    assert (answer["AuthorizationStatus"], answer["ProviderID"]) == ("Authorized", "DE-AUT"), answer
    session_id = answer["SessionID"]
    # every reachable peer was asked with the SessionID this node issued
    for peer in (mix.refuses, mix.authorizes, mix.slow):
        await wait_until(lambda p=peer: p.starts_of(session_id), what=f"AuthorizeStart at {peer.provider_id}")
        assert [b["OperatorID"] for b in peer.starts_of(session_id)] == [MIX_OPERATOR], peer.provider_id
    session = await ledger_of(redis, mix.node).get(session_id)
    assert session is not None and session.peer_id == "DE-AUT" and session.details["decided_by"] == "broadcast"

    # the stop goes to the EMP that authorized, and only there
    status, stopped = await api.command(
        mix.node, "cpo.authorize.stop", {"SessionID": session_id, "Identification": rfid(card)}
    )
    assert stopped["answer"]["AuthorizationStatus"] == "Authorized", stopped
    assert [b["SessionID"] for b in mix.authorizes.stops] == [session_id]
    assert not mix.refuses.stops and not mix.slow.stops


async def test_rfid_broadcast_nobody_authorizes_within_the_deadline(mix: Mix, api: Api) -> None:
    mix.authorizes.authorize = False
    mix.authorizes.refusal_code = "102"
    try:
        status, reply = await api.command(mix.node, "cpo.authorize.start", {"Identification": rfid(uid())})
    finally:
        mix.authorizes.authorize = True
    answer = reply["answer"]
    validate_response(START, answer)
    assert status == 200 and answer["AuthorizationStatus"] == "NotAuthorized" and "SessionID" not in answer
    # the most specific refusal wins over "invalid UID"; the slow peer was cut off at the deadline
    assert code_of(answer) == "200", answer
    info = answer["StatusCode"]["AdditionalInfo"]
    assert "DE-DWN: 310" in info and "DE-AUT: 102" in info and "no answer in time from DE-SLO" in info


async def test_emp_decider_answers_or_the_fallback_applies(mix: Mix, api: Api) -> None:
    url = mix.node.oicp_url + START.format(operatorID=CALLER)

    async def start(card: str) -> dict[str, Any]:
        body = {"OperatorID": CALLER, "Identification": rfid(card)}
        answer = await api.oicp(url, body, CALLER_TOKEN)
        validate_response(START, answer)
        return answer

    decider = "emp.decider.authorize_start"
    async with EventTap(mix.node.topology.events.name, "authorization.decided") as tap:
        # nobody bound: the fallback (not_authorized → 106) at once, without waiting for the deadline
        unbound = await start(uid())
        assert (unbound["AuthorizationStatus"], code_of(unbound)) == ("NotAuthorized", "106")
        assert "no authorization decider is bound" in unbound["StatusCode"]["AdditionalInfo"]

        yes = {"authorized": True, "AuthorizationStopIdentifications": [rfid("0000FFFF")]}
        async with BusResponder(mix.node, [decider], always(yes)) as responder:
            card = uid()
            answer = await start(card)
            assert answer["AuthorizationStatus"] == "Authorized" and answer["ProviderID"] == MIX_PROVIDER
            assert answer["AuthorizationStopIdentifications"] == [rfid("0000FFFF")]
            # the decider got the envelope with the CPO's request
            ((_, asked),) = responder.requests
            assert asked["data"]["request"]["Identification"] == rfid(card) and asked["data"]["peer_id"] == CALLER

        no = {"authorized": False, "code": "210", "info": "contract ended"}
        async with BusResponder(mix.node, [decider], always(no)):
            refused = await start(uid())
            assert (code_of(refused), refused["StatusCode"]["AdditionalInfo"]) == ("210", "contract ended")

        async with BusResponder(mix.node, [decider], always(SILENT)) as silent:
            late = await start(uid())
            assert (late["AuthorizationStatus"], code_of(late)) == ("NotAuthorized", "106")
            assert "did not answer within" in late["StatusCode"]["AdditionalInfo"]
            assert len(silent.requests) == 1

        await wait_until(
            lambda: [e["data"]["decided_by"] for e in tap.events] == ["fallback", "decider", "decider", "fallback"],
            what="one authorization.decided per decision",
        )
