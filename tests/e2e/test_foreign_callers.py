"""Per-peer authorization on every OICP path (issue #6 point 2): a foreign peer is refused and nothing of
its request takes effect.

Two real nodes of their own: a CPO node (DE*GEF) whose EMP peers are the EMP node (DE-GDF) and a
foreign EMP peer DE-OTH played by the test; an EMP node (DE-GDF) whose CPO peers are the CPO node and a
foreign CPO peer DE*OTH played by the test. The foreign peers are registered, with valid credentials:
what they are refused is acting in the name of, or on the objects of, another peer.

1. Every operation (parametrized): the victim's ID in the path (017) and, where the body carries an
   ID, the foreign peer's own path with the victim's ID in the body (017; 018 for an EvseID of another
   operator). Nothing takes effect: no session, no CDR, no stored EVSE data/status/pricing/auth data,
   no backend request, and no node event about the request by the time a later marker's event came.
2. Every operation (parametrized) called with the legitimate peer's IDs and body but without valid
   credentials: none at all, a token this node never issued, the token this node itself uses towards
   the other node (valid there, not here), and the token the other node accepts from its foreign peer:
   017 "unknown caller", and nothing takes effect (as in 1).
3. Semantic ownership inside the workers: stops of another EMP's sessions (400), another EMP's CDRs
   and pricing (never shown), notifications and CDRs for another CPO's sessions (400/018), AuthorizeStop
   of another CPO's session (NotAuthorized 400), pushes of another operator's EVSEs (018), authentication
   data with another provider's EvcoIDs (019) - each next to the victim's own request succeeding, which
   shows the check looked where the effect would have been.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.oicp.operations import OPERATIONS, OPERATIONS_BY_NAME, ErrorShape, Face, Operation
from shared.oicp.types import Identification
from shared.stores.auth_data import AuthDataStore
from shared.stores.pricing import EvsePricingStore, PricingProductStore
from shared.stores.redis import KeySpace
from tests.oicp_schema import validate_response
from tests.support.bodies import evse_record
from tests.support.cdr_bodies import full_cdr
from tests.support.events import EventTap
from tests.support.nodes import REDIS_URL, RUN_ID, NodeProcesses, NodeSpec, cleanup, free_port, wait_until
from tests.support.responders import BusResponder, always
from tests.support.sessions import command, notification, own_evse, start_body

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

CPO_ID, EMP_ID = "DE*GEF", "DE-GDF"
OTH_CPO, OTH_EMP = "DE*OTH", "DE-OTH"
EMP_CALLS_CPO, CPO_CALLS_EMP = "f-emp-calls-cpo", "f-cpo-calls-emp"
OTH_EMP_CALLS_CPO, OTH_CPO_CALLS_EMP = "f-oth-emp-calls-cpo", "f-oth-cpo-calls-emp"
BACKEND = ["cpo.backend.#"]
ACCEPTED = {"accepted": True}
MARKER_TIMEOUT_SECONDS = 20  # a marker's event arrives within this (it takes well under a second)
ACKNOWLEDGEMENT_KEYS = {"Result", "StatusCode", "SessionID", "CPOPartnerSessionID", "EMPPartnerSessionID"}
AUTHORIZATION_KEYS = {"AuthorizationStatus", "StatusCode", "SessionID", "CPOPartnerSessionID", "EMPPartnerSessionID"}


@dataclass
class Foreign:
    cpo: NodeSpec
    emp: NodeSpec
    processes: NodeProcesses
    http: aiohttp.ClientSession
    redis: aioredis.Redis

    def keys(self, node: NodeSpec) -> KeySpace:
        return KeySpace(f"{RUN_ID}:{node.name}:")

    async def internal_get(self, node: NodeSpec, path: str) -> Any:
        headers = {"Authorization": f"Bearer {node.internal_token}"}
        async with self.http.get(node.internal_url + path, headers=headers) as response:
            assert response.status in (200, 404), (path, response.status, await response.text())
            return await response.json() if response.status == 200 else None

    async def session(self, node: NodeSpec, session_id: str) -> dict[str, Any] | None:
        return await self.internal_get(node, f"/sessions/{session_id}")  # type: ignore[no-any-return]

    async def cdr(self, node: NodeSpec, session_id: str) -> dict[str, Any] | None:
        return await self.internal_get(node, f"/cdrs/{session_id}")  # type: ignore[no-any-return]

    async def oicp(
        self, operation: Operation, path_id: str | None, body: dict[str, Any], token: str | None
    ) -> dict[str, Any]:
        """A peer's call (``token`` None: without credentials); the answer is checked against Hubject's
        OpenAPI."""
        node = self.cpo if operation.face is Face.CPO else self.emp
        param = operation.path_param
        path = operation.path.format(**{param: path_id}) if param else operation.path
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with self.http.post(node.oicp_url + path, json=body, headers=headers) as response:
            assert response.status == 200, await response.text()
            answer: dict[str, Any] = await response.json(content_type=None)
        validate_response(operation.path, answer, acknowledgement_ok=True)
        return answer


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def foreign(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Foreign]:
    cpo = NodeSpec("fcpo", operator_ids=[CPO_ID])
    emp = NodeSpec("femp", provider_ids=[EMP_ID])
    closed = f"http://127.0.0.1:{free_port()}"  # the foreign peers are played by the test: never called
    cpo.peers = [
        {
            "id": EMP_ID,
            "role": "emp",
            "base_url": emp.oicp_url,
            "inbound_token": EMP_CALLS_CPO,
            "outbound_token": CPO_CALLS_EMP,
        },
        {
            "id": OTH_EMP,
            "role": "emp",
            "base_url": closed,
            "inbound_token": OTH_EMP_CALLS_CPO,
            "outbound_token": "f-cpo-calls-oth",
        },
    ]
    emp.peers = [
        {
            "id": CPO_ID,
            "role": "cpo",
            "base_url": cpo.oicp_url,
            "inbound_token": CPO_CALLS_EMP,
            "outbound_token": EMP_CALLS_CPO,
        },
        {
            "id": OTH_CPO,
            "role": "cpo",
            "base_url": closed,
            "inbound_token": OTH_CPO_CALLS_EMP,
            "outbound_token": "f-emp-calls-oth",
        },
    ]
    processes = NodeProcesses([cpo, emp], tmp_path_factory.mktemp("foreign"))
    client = aioredis.from_url(REDIS_URL)
    try:
        await processes.start()
        async with aiohttp.ClientSession() as http:
            yield Foreign(cpo, emp, processes, http, client)
    finally:
        processes.stop()
        await client.aclose()
        await cleanup([cpo, emp])


# ---- bodies ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Marks:
    """The unique IDs of one request: nothing carrying them may appear anywhere after a refusal."""

    session_id: str
    evse_id: str  # an EVSE of the victim CPO DE*GEF
    uid: str  # an RFID UID
    product_id: str

    @classmethod
    def new(cls) -> Marks:
        tag = uuid.uuid4().hex[:10].upper()
        return cls(str(uuid.uuid4()), f"{CPO_ID}*E{tag}", tag[:8], f"P{tag}")

    @property
    def all(self) -> tuple[str, ...]:
        return (self.session_id, self.evse_id, self.uid, self.product_id)


def rfid(uid: str) -> dict[str, Any]:
    return {"RFIDMifareFamilyIdentification": {"UID": uid}}


def evco(provider_id: str, tag: str) -> str:
    return f"{provider_id}-C{tag[:8]}-X"


def products_data(operator_id: str, provider_id: str, product_id: str) -> dict[str, Any]:
    return {
        "OperatorID": operator_id,
        "OperatorName": "Foreign Callers",
        "ProviderID": provider_id,
        "PricingDefaultPrice": 0.49,
        "PricingDefaultPriceCurrency": "EUR",
        "PricingDefaultReferenceUnit": "KILOWATT_HOUR",
        "PricingProductDataRecords": [
            {
                "ProductID": product_id,
                "ReferenceUnit": "KILOWATT_HOUR",
                "ProductPriceCurrency": "EUR",
                "PricePerReferenceUnit": 0.39,
                "MaximumProductChargingPower": 22,
                "IsValid24hours": True,
                "ProductAvailabilityTimes": [{"Periods": [{"begin": "00:00", "end": "23:59"}], "on": "Everyday"}],
            }
        ],
    }


def window() -> tuple[str, str]:
    now = datetime.now(UTC)
    return (now - timedelta(hours=1)).isoformat(), (now + timedelta(hours=1)).isoformat()


def body_naming(name: str, party: str, marks: Marks) -> dict[str, Any]:
    """A body of the operation that names ``party`` (a ProviderID on the CPO face, an OperatorID on
    the EMP face) wherever the body carries the caller's ID, and that would change something if taken:
    inserts and full loads, not deletes. EVSEs are the victim CPO's (``marks.evse_id``)."""
    sid, evse, uid = marks.session_id, marks.evse_id, marks.uid
    remote = {"RemoteIdentification": {"EvcoID": evco(party, uid)}} if "-" in party else rfid(uid)
    t0, t1 = window()
    bodies: dict[str, dict[str, Any]] = {
        "AuthorizeRemoteStart": {"ProviderID": party, "EvseID": evse, "Identification": remote, "SessionID": sid},
        "AuthorizeRemoteStop": {"SessionID": sid, "ProviderID": party, "EvseID": evse},
        "AuthorizeRemoteReservationStart": {
            "ProviderID": party,
            "EvseID": evse,
            "Identification": remote,
            "SessionID": sid,
            "Duration": 10,
        },
        "AuthorizeRemoteReservationStop": {"SessionID": sid, "ProviderID": party, "EvseID": evse},
        "PullEvseData": {"ProviderID": party, "GeoCoordinatesResponseFormat": "DecimalDegree"},
        "PullEvseStatus": {"ProviderID": party},
        "PullEvseStatusById": {"ProviderID": party, "EvseID": [evse]},
        "PullEvseStatusByOperatorId": {"ProviderID": party, "OperatorID": [CPO_ID]},
        "PullPricingProductData": {"OperatorIDs": [CPO_ID]},
        "PullEVSEPricing": {"ProviderID": party, "OperatorIDs": [CPO_ID]},
        "GetChargeDetailRecords": {"ProviderID": party, "From": t0, "To": t1},
        "PushAuthenticationData": {
            "ActionType": "fullLoad",
            "ProviderAuthenticationData": {
                "ProviderID": party,
                "AuthenticationDataRecord": [{"Identification": rfid(uid)}],
            },
        },
        "AuthorizeStart": {"OperatorID": party, "Identification": rfid(uid), "EvseID": evse, "SessionID": sid},
        "AuthorizeStop": {"SessionID": sid, "OperatorID": party, "Identification": rfid(uid), "EvseID": evse},
        "ChargeDetailRecord": full_cdr(sid, evse_id=evse),
        "ChargingNotification": notification("Start", sid, evse, operator_id=party),
        "PushEvseData": {
            "ActionType": "insert",
            "OperatorEvseData": {"OperatorID": party, "OperatorName": "X", "EvseDataRecord": [evse_record(evse)]},
        },
        "PushEvseStatus": {
            "ActionType": "insert",
            "OperatorEvseStatus": {
                "OperatorID": party,
                "EvseStatusRecord": [{"EvseID": evse, "EvseStatus": "Occupied"}],
            },
        },
        "PushPricingProductData": {
            "ActionType": "fullLoad",
            "PricingProductData": products_data(party, "*", marks.product_id),
        },
        "PushEVSEPricing": {
            "ActionType": "fullLoad",
            "EVSEPricing": [{"EvseID": evse, "ProviderID": EMP_ID, "EvseIDProductList": [marks.product_id]}],
        },
    }
    return bodies[name]


# The code a foreign ID in the body gets (own path); absent: the body carries no caller ID.
BODY_CODE: dict[str, str] = {
    **{op.name: "017" for op in OPERATIONS},
    "ChargeDetailRecord": "018",  # no OperatorID in a CDR: its EvseID is another operator's
    "PushEVSEPricing": "018",  # no OperatorID in the body: its EvseIDs are another operator's
}
del BODY_CODE["PullPricingProductData"]  # OperatorIDs only: the ProviderID is the path's alone


def code_of(answer: dict[str, Any]) -> str:
    return str(answer["StatusCode"]["Code"])


def assert_refused(operation: Operation, answer: dict[str, Any], code: str) -> None:
    """A refusal with that code, and nothing but a refusal: no data of anybody's in it."""
    assert code_of(answer) == code, answer
    if operation.error_shape is ErrorShape.ACKNOWLEDGEMENT:
        assert answer["Result"] is False and set(answer) <= ACKNOWLEDGEMENT_KEYS, answer
    else:
        assert answer["AuthorizationStatus"] == "NotAuthorized" and set(answer) <= AUTHORIZATION_KEYS, answer


def mentions(events: list[dict[str, Any]], marks: tuple[str, ...]) -> list[dict[str, Any]]:
    return [e for e in events if any(m in json.dumps(e) for m in marks)]


async def marker_event(foreign: Foreign, node: NodeSpec, tap: EventTap) -> None:
    """A legitimate change whose event on ``node`` marks the time by which the refused request's
    events would have come (they would have been emitted before its answer)."""
    tag = uuid.uuid4().hex[:10].upper()
    evse = f"{CPO_ID}*E{tag}"
    if node is foreign.cpo:
        await command_202(
            foreign, foreign.cpo, "cpo.evse.status.set", {"records": [{"EvseID": evse, "EvseStatus": "Available"}]}
        )
    else:
        body = {
            "ActionType": "insert",
            "OperatorEvseStatus": {
                "OperatorID": CPO_ID,
                "EvseStatusRecord": [{"EvseID": evse, "EvseStatus": "Available"}],
            },
        }
        answer = await foreign.oicp(OPERATIONS_BY_NAME["PushEvseStatus"], CPO_ID, body, CPO_CALLS_EMP)
        assert code_of(answer) == "000", answer
    await wait_until(lambda: mentions(tap.events, (evse,)), timeout=MARKER_TIMEOUT_SECONDS, what="the marker's event")


async def command_202(foreign: Foreign, node: NodeSpec, name: str, body: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {node.internal_token}"}
    async with foreign.http.post(f"{node.internal_url}/commands/{name}", json=body, headers=headers) as response:
        assert response.status in (200, 202), await response.text()


# ---- what would have taken effect ------------------------------------------------------------------


async def assert_nothing_stored(foreign: Foreign, operation: Operation, marks: Marks) -> None:
    """Where the operation would have left something, it is not there."""
    name = operation.name
    sid, evse = marks.session_id, marks.evse_id
    if operation.face is Face.CPO:
        assert await foreign.session(foreign.cpo, sid) is None, f"{name}: a session at the CPO node"
        auth = AuthDataStore(foreign.redis, foreign.keys(foreign.cpo))
        identification = Identification.model_validate(rfid(marks.uid))
        assert await auth.lookup(identification) is None, f"{name}: authentication data stored"
        assert await auth.count(OTH_EMP) == 0, f"{name}: authentication data of the foreign peer"
        return
    assert await foreign.session(foreign.emp, sid) is None, f"{name}: a session at the EMP node"
    assert await foreign.cdr(foreign.emp, sid) is None, f"{name}: a CDR at the EMP node"
    assert await foreign.internal_get(foreign.emp, f"/evses/{evse}") is None, f"{name}: EVSE data or status stored"
    products = PricingProductStore(foreign.redis, foreign.keys(foreign.emp), "roaming")
    for operator_id in (CPO_ID, OTH_CPO):
        assert await products.provider_ids(operator_id) == [], f"{name}: pricing products of {operator_id} stored"
    evse_pricing = EvsePricingStore(foreign.redis, foreign.keys(foreign.emp), "roaming")
    assert (await evse_pricing.get_many([f"{evse}|{EMP_ID}"]))[f"{evse}|{EMP_ID}"] is None, f"{name}: EVSE pricing"


# ---- 1. every operation: the victim's ID in path or body ------------------------------------------


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda o: o.name)
async def test_a_foreign_peer_naming_another_peer_is_refused_and_nothing_takes_effect(
    foreign: Foreign, operation: Operation
) -> None:
    cpo_face = operation.face is Face.CPO
    node = foreign.cpo if cpo_face else foreign.emp
    victim, own, token = (EMP_ID, OTH_EMP, OTH_EMP_CALLS_CPO) if cpo_face else (CPO_ID, OTH_CPO, OTH_CPO_CALLS_EMP)
    marks = Marks.new()
    calls = 0
    async with (
        EventTap(node.topology.events.name, "#") as events,
        BusResponder(foreign.cpo, BACKEND, always(ACCEPTED)) as backend,
    ):
        if operation.path_param is not None:
            # the victim's ID in the path, the body naming the victim
            answer = await foreign.oicp(operation, victim, body_naming(operation.name, victim, marks), token)
            assert_refused(operation, answer, "017")
            assert "path" in answer["StatusCode"]["AdditionalInfo"], answer
            calls += 1
        if operation.name in BODY_CODE:
            # its own ID in the path, the victim's in the body
            answer = await foreign.oicp(operation, own, body_naming(operation.name, victim, marks), token)
            assert_refused(operation, answer, BODY_CODE[operation.name])
            calls += 1
        assert calls, f"{operation.name}: neither its path nor its body names the caller"

        await marker_event(foreign, node, events)
        assert mentions(events.events, marks.all) == [], "an event about the refused request"
        assert [body for _, body in backend.requests if any(m in json.dumps(body) for m in marks.all)] == []
    await assert_nothing_stored(foreign, operation, marks)


# ---- 2. every operation without valid credentials ---------------------------------------------------


def bad_credentials(cpo_face: bool) -> dict[str, str | None]:
    """Credentials the node must not take, by what they are."""
    own_outbound, foreign_at_other_node = (
        (CPO_CALLS_EMP, OTH_CPO_CALLS_EMP) if cpo_face else (EMP_CALLS_CPO, OTH_EMP_CALLS_CPO)
    )
    return {
        "none": None,
        "a token never issued": uuid.uuid4().hex,
        "the node's own token for the other node": own_outbound,
        "a token of the other node's foreign peer": foreign_at_other_node,
    }


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda o: o.name)
async def test_every_operation_without_valid_credentials_is_refused_and_nothing_takes_effect(
    foreign: Foreign, operation: Operation
) -> None:
    cpo_face = operation.face is Face.CPO
    node = foreign.cpo if cpo_face else foreign.emp
    legitimate = EMP_ID if cpo_face else CPO_ID
    marks = Marks.new()
    async with (
        EventTap(node.topology.events.name, "#") as events,
        BusResponder(foreign.cpo, BACKEND, always(ACCEPTED)) as backend,
    ):
        for what, token in bad_credentials(cpo_face).items():
            body = body_naming(operation.name, legitimate, marks)
            answer = await foreign.oicp(operation, legitimate, body, token)
            assert_refused(operation, answer, "017")
            assert "unknown caller" in answer["StatusCode"]["AdditionalInfo"], (what, answer)
        await marker_event(foreign, node, events)
        assert mentions(events.events, marks.all) == [], "an event about the refused request"
        assert [body for _, body in backend.requests if any(m in json.dumps(body) for m in marks.all)] == []
    await assert_nothing_stored(foreign, operation, marks)


# ---- 3. semantic ownership -----------------------------------------------------------------------------


async def remote_start(foreign: Foreign, evse: str, reservation: bool = False) -> str:
    """A session the real EMP node starts (or a reservation it makes) at the CPO node."""
    name, extra = (
        ("emp.reservation.start.request", {"Duration": 10}) if reservation else ("emp.remote_start.request", {})
    )
    reply = await command(foreign.http, foreign.emp, name, start_body(evse, **extra))
    assert reply["ok"], reply
    return str(reply["session_id"])


def asked(backend: BusResponder, key: str, session_id: str) -> int:
    return sum(1 for k, body in backend.requests if k == key and body["data"]["request"]["SessionID"] == session_id)


async def test_a_foreign_emp_cannot_stop_another_emps_session_or_reservation(foreign: Foreign) -> None:
    async with (
        BusResponder(foreign.cpo, BACKEND, always(ACCEPTED)) as backend,
        EventTap(foreign.cpo.topology.events.name, "session.#") as events,
    ):
        evse = await own_evse(foreign.http, foreign.cpo)
        session = await remote_start(foreign, evse)
        reservation = await remote_start(foreign, evse, reservation=True)
        before = {sid: await foreign.session(foreign.cpo, sid) for sid in (session, reservation)}
        assert before[session]["state"] == "started" and before[reservation]["state"] == "reserved", before

        for name, sid in (
            ("AuthorizeRemoteStop", session),
            ("AuthorizeRemoteReservationStop", reservation),
            ("AuthorizeRemoteReservationStop", session),
            ("AuthorizeRemoteStop", reservation),
        ):
            body = {"SessionID": sid, "ProviderID": OTH_EMP, "EvseID": evse}
            answer = await foreign.oicp(OPERATIONS_BY_NAME[name], OTH_EMP, body, OTH_EMP_CALLS_CPO)
            assert_refused(OPERATIONS_BY_NAME[name], answer, "400")

        after = {sid: await foreign.session(foreign.cpo, sid) for sid in (session, reservation)}
        assert after == before, "the sessions, their states and histories unchanged"
        assert asked(backend, "cpo.backend.remote_stop", session) == 0
        assert asked(backend, "cpo.backend.reservation_stop", reservation) == 0
        assert not [e for e in events.events if e["type"] in ("session.stopped", "session.reservation.ended")]

        # the owner's own stop goes through: the backend is asked, once
        reply = await command(foreign.http, foreign.emp, "emp.remote_stop.request", {"SessionID": session})
        assert reply["ok"], reply
        assert asked(backend, "cpo.backend.remote_stop", session) == 1
        assert backend.requests and all(k != "cpo.backend.reservation_stop" for k, _ in backend.requests)


async def test_a_foreign_emp_gets_none_of_another_emps_cdrs(foreign: Foreign) -> None:
    marks = Marks.new()
    cdr = full_cdr(evse_id=marks.evse_id)
    reply = await command(foreign.http, foreign.cpo, "cpo.cdr.submit", cdr)
    assert reply["ok"], reply
    sid = cdr["SessionID"]
    stored = await foreign.cdr(foreign.cpo, sid)
    assert stored is not None and stored["out"] is not None, stored

    operation = OPERATIONS_BY_NAME["GetChargeDetailRecords"]
    t0, t1 = window()
    everything = {"ProviderID": OTH_EMP, "From": t0, "To": t1}
    for body in (everything, {**everything, "SessionID": [sid]}, {**everything, "OperatorID": CPO_ID}):
        answer = await foreign.oicp(operation, OTH_EMP, body, OTH_EMP_CALLS_CPO)
        assert code_of(answer) == "000", answer
        assert answer["content"] == [] and answer["totalElements"] == 0, answer
        assert sid not in json.dumps(answer)
    # the owner sees it
    mine = await foreign.oicp(
        operation, EMP_ID, {**everything, "ProviderID": EMP_ID, "SessionID": [sid]}, EMP_CALLS_CPO
    )
    assert [c["SessionID"] for c in mine["content"]] == [sid], mine


async def test_a_foreign_emp_pulls_no_pricing_meant_for_another_emp(foreign: Foreign) -> None:
    marks = Marks.new()
    products = {"ActionType": "fullLoad", "PricingProductData": products_data(CPO_ID, EMP_ID, marks.product_id)}
    assert (await command(foreign.http, foreign.cpo, "cpo.pricing.products.set", products))["ok"]
    pricing = {
        "ActionType": "insert",
        "OperatorID": CPO_ID,
        "EVSEPricing": [{"EvseID": marks.evse_id, "ProviderID": EMP_ID, "EvseIDProductList": [marks.product_id]}],
    }
    assert (await command(foreign.http, foreign.cpo, "cpo.evse.pricing.set", pricing))["ok"]

    pull_products = OPERATIONS_BY_NAME["PullPricingProductData"]
    pull_pricing = OPERATIONS_BY_NAME["PullEVSEPricing"]
    theirs = await foreign.oicp(pull_products, OTH_EMP, {"OperatorIDs": [CPO_ID]}, OTH_EMP_CALLS_CPO)
    assert code_of(theirs) == "000" and theirs["PricingProductData"] == [], theirs
    theirs = await foreign.oicp(
        pull_pricing, OTH_EMP, {"ProviderID": OTH_EMP, "OperatorIDs": [CPO_ID]}, OTH_EMP_CALLS_CPO
    )
    assert code_of(theirs) == "000" and theirs["EVSEPricing"] == [], theirs

    # the provider it is meant for gets it
    mine = await foreign.oicp(pull_products, EMP_ID, {"OperatorIDs": [CPO_ID]}, EMP_CALLS_CPO)
    assert marks.product_id in json.dumps(mine["PricingProductData"]), mine
    mine = await foreign.oicp(pull_pricing, EMP_ID, {"ProviderID": EMP_ID, "OperatorIDs": [CPO_ID]}, EMP_CALLS_CPO)
    assert marks.evse_id in json.dumps(mine["EVSEPricing"]), mine


async def test_a_foreign_cpo_cannot_notify_or_bill_another_cpos_session(foreign: Foreign) -> None:
    notify = OPERATIONS_BY_NAME["ChargingNotification"]
    send_cdr = OPERATIONS_BY_NAME["ChargeDetailRecord"]
    async with (
        BusResponder(foreign.cpo, BACKEND, always(ACCEPTED)),
        EventTap(foreign.emp.topology.events.name, "#") as events,
    ):
        evse = await own_evse(foreign.http, foreign.cpo)
        sid = await remote_start(foreign, evse)
        before = await foreign.session(foreign.emp, sid)
        assert before is not None and before["state"] == "started", before

        for kind in ("Start", "Progress", "End", "Error"):
            for evse_id in (evse, f"{OTH_CPO}*E1FOREIGN"):
                body = notification(kind, sid, evse_id, operator_id=OTH_CPO)
                answer = await foreign.oicp(notify, None, body, OTH_CPO_CALLS_EMP)
                assert_refused(notify, answer, "400")
        # the EVSE of another operator: 018; its own EVSE but the other operator's session: 400
        answer = await foreign.oicp(send_cdr, OTH_CPO, full_cdr(sid, evse_id=evse), OTH_CPO_CALLS_EMP)
        assert_refused(send_cdr, answer, "018")
        answer = await foreign.oicp(send_cdr, OTH_CPO, full_cdr(sid, evse_id=f"{OTH_CPO}*E1FOREIGN"), OTH_CPO_CALLS_EMP)
        assert_refused(send_cdr, answer, "400")

        assert await foreign.session(foreign.emp, sid) == before, "the session, its state and history unchanged"
        assert await foreign.cdr(foreign.emp, sid) is None, "no CDR stored"
        unknown = await foreign.internal_get(foreign.emp, "/cdrs/unknown-sessions?direction=in&size=1000")
        assert sid not in json.dumps(unknown)

        # the session's own CPO is heard: its End arrives and is the only notification event
        sent = await command(
            foreign.http, foreign.cpo, "cpo.session.notify", {"notification": notification("End", sid, evse)}
        )
        assert sent["ok"], sent
        ended = await foreign.session(foreign.emp, sid)
        assert ended is not None and ended["state"] == "ended", ended
        await wait_until(
            lambda: [e for e in mentions(events.events, (sid,)) if e["type"] == "session.notification"],
            what="the own CPO's notification event",
        )
        about = mentions(events.events, (sid,))
        assert [e["type"] for e in about if e["type"].startswith(("session.notification", "cdr."))] == [
            "session.notification"
        ], about


async def test_a_foreign_cpo_cannot_stop_a_session_the_emp_authorized_for_another_cpo(foreign: Foreign) -> None:
    marks = Marks.new()
    tokens = {"action_type": "insert", "tokens": [{"Identification": rfid(marks.uid), "offline": False}]}
    assert (await command(foreign.http, foreign.emp, "emp.token.set", tokens))["ok"]
    start, stop = OPERATIONS_BY_NAME["AuthorizeStart"], OPERATIONS_BY_NAME["AuthorizeStop"]
    body = {"OperatorID": CPO_ID, "EvseID": marks.evse_id, "Identification": rfid(marks.uid)}
    authorized = await foreign.oicp(start, CPO_ID, body, CPO_CALLS_EMP)
    assert authorized["AuthorizationStatus"] == "Authorized", authorized
    sid = authorized["SessionID"]
    before = await foreign.session(foreign.emp, sid)
    assert before is not None, sid

    async with EventTap(foreign.emp.topology.events.name, "#") as events:
        for evse_id in (marks.evse_id, f"{OTH_CPO}*E1FOREIGN"):
            theirs = {"OperatorID": OTH_CPO, "SessionID": sid, "Identification": rfid(marks.uid), "EvseID": evse_id}
            answer = await foreign.oicp(stop, OTH_CPO, theirs, OTH_CPO_CALLS_EMP)
            assert_refused(stop, answer, "400")
        await marker_event(foreign, foreign.emp, events)
        assert await foreign.session(foreign.emp, sid) == before, "the session unchanged"
        # the refusals are on record as decisions (NotAuthorized, for DE*OTH), and nothing else happened
        about = mentions(events.events, (sid,))
        assert [e["type"] for e in about] == ["authorization.decided"] * 2, about
        assert all(
            (e["data"]["authorization_status"], e["data"]["code"], e["data"]["peer_id"])
            == ("NotAuthorized", "400", OTH_CPO)
            for e in about
        ), about

    # the CPO that started it may stop it
    mine = await foreign.oicp(stop, CPO_ID, {**body, "SessionID": sid}, CPO_CALLS_EMP)
    assert mine["AuthorizationStatus"] == "Authorized", mine


@pytest.mark.parametrize("name", ["PushEvseStatus", "PushEvseData"])
async def test_a_foreign_cpo_cannot_push_another_operators_evses(foreign: Foreign, name: str) -> None:
    operation = OPERATIONS_BY_NAME[name]
    marks = Marks.new()
    body = body_naming(name, OTH_CPO, marks)  # its own OperatorID, DE*GEF's EvseID
    async with EventTap(foreign.emp.topology.events.name, "#") as events:
        answer = await foreign.oicp(operation, OTH_CPO, body, OTH_CPO_CALLS_EMP)
        assert_refused(operation, answer, "018")
        assert marks.evse_id in answer["StatusCode"]["AdditionalInfo"], answer
        await marker_event(foreign, foreign.emp, events)
        assert mentions(events.events, marks.all) == []
    assert await foreign.internal_get(foreign.emp, f"/evses/{marks.evse_id}") is None
    # the operator itself may
    mine = body_naming(name, CPO_ID, marks)
    assert code_of(await foreign.oicp(operation, CPO_ID, mine, CPO_CALLS_EMP)) == "000"
    assert await foreign.internal_get(foreign.emp, f"/evses/{marks.evse_id}") is not None


async def test_a_foreign_emp_cannot_push_another_providers_authentication_data(foreign: Foreign) -> None:
    operation = OPERATIONS_BY_NAME["PushAuthenticationData"]
    marks = Marks.new()
    contract = {"PlugAndChargeIdentification": {"EvcoID": evco(EMP_ID, marks.uid)}}
    store = AuthDataStore(foreign.redis, foreign.keys(foreign.cpo))

    def push(provider_id: str) -> dict[str, Any]:
        return {
            "ActionType": "fullLoad",
            "ProviderAuthenticationData": {
                "ProviderID": provider_id,
                "AuthenticationDataRecord": [{"Identification": contract}, {"Identification": rfid(marks.uid)}],
            },
        }

    async with EventTap(foreign.cpo.topology.events.name, "#") as events:
        answer = await foreign.oicp(operation, OTH_EMP, push(OTH_EMP), OTH_EMP_CALLS_CPO)
        assert_refused(operation, answer, "019")
        answer = await foreign.oicp(operation, OTH_EMP, push(EMP_ID), OTH_EMP_CALLS_CPO)
        assert_refused(operation, answer, "017")
        await marker_event(foreign, foreign.cpo, events)
        assert [e for e in events.events if e["type"] == "authdata.received"] == []
    for identification in (contract, rfid(marks.uid)):
        assert await store.lookup(Identification.model_validate(identification)) is None
    assert await store.count(OTH_EMP) == 0 and await store.count(EMP_ID) == 0

    # the provider itself may
    assert code_of(await foreign.oicp(operation, EMP_ID, push(EMP_ID), EMP_CALLS_CPO)) == "000"
    found = await store.lookup(Identification.model_validate(contract))
    assert found is not None and found.provider_id == EMP_ID
