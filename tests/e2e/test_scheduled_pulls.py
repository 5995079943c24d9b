"""Scheduled pulls from a CPO peer that does not push (EMP role; DIGEST §9.2, §9.3, §9.5): two real nodes,
a CPO node that pushes nothing to its EMP peer and an EMP node that pulls the CPO's EVSE data (LastCall
deltas, several pages) and statuses on a short schedule.

What is proven: while the CPO refuses the EMP's pulls (it does not know the EMP yet) the pulls fail, are
retried and set no cursor; the first successful data pull is a full pull over several pages and applied
as one fullLoad; later inserts, updates and deletes at the CPO arrive as deltas (the CPO serves them with
their deltaType) and are applied as insert/update/delete; statuses arrive; a pull with nothing changed
applies nothing; the pull state shows what happened; every change is published as the same events a
push produces. Against a scripted hub (in this process): invalid records are skipped without failing the
pull, and an operator the hub no longer returns is emptied.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp import web
from pydantic import ValidationError

from services.evse_push.pulls import PullScheduler
from shared.oicp import EvseDataRecord
from shared.oicp.base import format_oicp_datetime
from shared.oicp.ids import normalize_id
from shared.oicp.operations import OPERATIONS_BY_NAME
from shared.peers.client import PeerClient
from shared.peers.registry import PeerRegistry
from shared.settings import NodeSettings, PeerConfig
from shared.stores.delivery import DeliveryStore
from shared.stores.evse_data import EvseDataStore
from shared.stores.evse_status import EvseStatusStore
from shared.stores.pull_state import PULL_EVSE_DATA, PULL_EVSE_STATUS, PullStateStore
from shared.stores.redis import KeySpace
from tests.support.bodies import evse_record
from tests.support.events import EventTap
from tests.support.nodes import REDIS_URL, RUN_ID, NodeProcesses, NodeSpec, cleanup, free_port, wait_until

pytestmark = [pytest.mark.e2e]

OPERATOR = "DE*PLL"
OPERATOR_NAME = "Pull CPO"
PROVIDER = "DE-PLL"
EMP_CALLS_CPO = "pemp-calls-pcpo-token"
PAGE_SIZE = 7
EVSES = [f"DE*PLL*E{n:04d}" for n in range(20)]  # three pages of at most PAGE_SIZE
DATA_INTERVAL_SECONDS = 2
STATUS_INTERVAL_SECONDS = 1
CONVERGE_SECONDS = 30  # a few pull intervals plus backoff, with room for a loaded machine
PULL_DATA = OPERATIONS_BY_NAME["PullEvseData"]
T = datetime(2024, 6, 1, 10, 0, tzinfo=UTC)


class PullNet:
    """The CPO node, the EMP node that pulls it, and views into the EMP node's state."""

    def __init__(self, cpo: NodeSpec, emp: NodeSpec, redis: aioredis.Redis, tap: EventTap) -> None:
        self.cpo, self.emp, self.tap = cpo, emp, tap
        keys = KeySpace(f"{RUN_ID}:{emp.name}:")
        self.roaming_data = EvseDataStore(redis, keys, "roaming")
        self.roaming_status = EvseStatusStore(redis, keys, "roaming")
        self.pulls = PullStateStore(redis, keys)
        self.peer = PeerConfig.model_validate(emp.peers[0])
        self.http = aiohttp.ClientSession()

    async def cpo_command(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.cpo.internal_token}"}
        async with self.http.post(f"{self.cpo.internal_url}/commands/{name}", json=body, headers=headers) as response:
            answer: dict[str, Any] = await response.json()
            assert response.status in (200, 202), answer
            return answer

    async def set_data(self, action: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        body = {
            "ActionType": action,
            "OperatorEvseData": {"OperatorID": OPERATOR, "OperatorName": OPERATOR_NAME, "EvseDataRecord": records},
        }
        answer = await self.cpo_command("cpo.evse.data.set", body)
        assert answer["ok"], answer
        return answer

    async def set_statuses(self, statuses: dict[str, str]) -> None:
        records = [{"EvseID": e, "EvseStatus": s} for e, s in statuses.items()]
        await self.cpo_command("cpo.evse.status.set", {"records": records})

    async def pull_cpo(self, last_call: datetime | None = None, page: int = 0) -> dict[str, Any]:
        """PullEvseData at the CPO node as the EMP calls it: what the CPO serves."""
        body: dict[str, Any] = {"ProviderID": PROVIDER, "GeoCoordinatesResponseFormat": "DecimalDegree"}
        if last_call is not None:
            body["LastCall"] = format_oicp_datetime(last_call)
        url = self.cpo.oicp_url + PULL_DATA.path.format(providerID=PROVIDER)
        headers = {"Authorization": f"Bearer {EMP_CALLS_CPO}"}
        params = {"page": page, "size": PAGE_SIZE}
        async with self.http.post(url, json=body, headers=headers, params=params) as response:
            answer: dict[str, Any] = await response.json(content_type=None)
            assert response.status == 200 and answer["StatusCode"]["Code"] == "000", answer
            return answer

    async def emp_evse(self, evse_id: str) -> dict[str, Any] | None:
        """The EMP node's internal view of one EVSE (data and status), None if it knows nothing of it."""
        headers = {"Authorization": f"Bearer {self.emp.internal_token}"}
        async with self.http.get(f"{self.emp.internal_url}/evses/{evse_id}", headers=headers) as response:
            if response.status == 404:
                return None
            assert response.status == 200, await response.text()
            answer: dict[str, Any] = await response.json()
            return answer

    async def state(self) -> dict[str, Any]:
        """The pull state as the EMP node's internal API shows it (GET /pulls)."""
        headers = {"Authorization": f"Bearer {self.emp.internal_token}"}
        async with self.http.get(f"{self.emp.internal_url}/pulls", headers=headers) as response:
            assert response.status == 200, await response.text()
            (state,) = [s for s in await response.json() if s["peer_id"] == self.peer.id]
            return state

    async def names(self) -> dict[str, str]:
        """EvseID -> ChargingStationName of the operator's live records in the EMP's roaming model."""
        ids = await self.roaming_data.evse_ids_of_operator(OPERATOR)
        found = await self.roaming_data.get_many(ids)
        return {e: s.record["ChargingStationNames"][0]["value"] for e, s in found.items() if s is not None}

    def data_events(self) -> list[dict[str, Any]]:
        return [e["data"] for e in self.tap.events if e["type"] == "evse.data.received"]

    def status_events(self) -> list[dict[str, Any]]:
        return [e["data"] for e in self.tap.events if e["type"] == "evse.status.received"]

    async def next_success(self, operation: str, after: float) -> dict[str, Any]:
        """The operation's pull state once a pull that started after ``after`` (epoch) succeeded."""

        async def newer() -> dict[str, Any] | None:
            entry = (await self.state())[operation]
            started = entry["last_success_started"]
            return entry if started and datetime.fromisoformat(started).timestamp() > after else None

        return await wait_until(newer, timeout=CONVERGE_SECONDS, what=f"a {operation} pull after {after}")


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def net(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PullNet]:
    cpo = NodeSpec("pcpo", operator_ids=[OPERATOR])
    emp = NodeSpec("pemp", provider_ids=[PROVIDER])
    # The CPO node does not know the EMP at first (it is registered by a test): until then it refuses
    # the EMP's pulls, and the data is in place before the first pull succeeds.
    emp.peers = [
        {
            "id": OPERATOR,
            "role": "cpo",
            "base_url": cpo.oicp_url,
            "outbound_token": EMP_CALLS_CPO,
            "pull": {
                "evse_data_interval_seconds": DATA_INTERVAL_SECONDS,
                "evse_status_interval_seconds": STATUS_INTERVAL_SECONDS,
                "page_size": PAGE_SIZE,
            },
        }
    ]
    processes = NodeProcesses([cpo, emp], tmp_path_factory.mktemp("pulls"))
    redis = aioredis.from_url(REDIS_URL)
    try:
        await processes.start()
        async with EventTap(emp.topology.events.name, "evse.*.received") as tap:
            net = PullNet(cpo, emp, redis, tap)
            try:
                yield net
            finally:
                await net.http.close()
    finally:
        processes.stop()
        await redis.aclose()
        await cleanup([cpo, emp])


def test_pull_is_for_cpo_peers_of_an_emp_node_only() -> None:
    base = {"base_url": "http://127.0.0.1:1", "pull": {}}
    assert PeerConfig.model_validate({"id": OPERATOR, "role": "cpo", **base}).pull is not None
    with pytest.raises(ValidationError, match="CPO peers"):
        PeerConfig.model_validate({"id": PROVIDER, "role": "emp", **base})
    with pytest.raises(ValidationError, match="less than or equal to 2000"):
        PeerConfig.model_validate({"id": OPERATOR, "role": "cpo", **base, "pull": {"page_size": 2001}})
    node = {
        "name": "n",
        "oicp": {"port": 1},
        "internal": {"port": 2, "token": "t"},
        "peers": [{"id": OPERATOR, "role": "cpo", **base}],
    }
    with pytest.raises(ValidationError, match="provider_ids"):
        NodeSettings(**node, operator_ids=["DE*OWN"])
    assert NodeSettings(**node, provider_ids=[PROVIDER]).peers[0].pull is not None


async def test_refused_pulls_are_retried_and_set_no_cursor(net: PullNet) -> None:
    async def failing() -> dict[str, Any] | None:
        state = await net.state()
        data, status = state[PULL_EVSE_DATA], state[PULL_EVSE_STATUS]
        return state if data["consecutive_failures"] >= 2 and status["consecutive_failures"] >= 2 else None

    state = await wait_until(failing, timeout=CONVERGE_SECONDS, what="failing pulls retried")
    data = state[PULL_EVSE_DATA]
    assert data["last_error"] and data["next_attempt"], data
    assert data["cursor"] is None and data["last_success"] is None, data
    assert state["schedule"]["page_size"] == PAGE_SIZE
    assert await net.roaming_data.evse_ids_of_operator(OPERATOR) == []


async def test_first_pull_is_a_full_pull_over_several_pages(net: PullNet) -> None:
    await net.set_data("fullLoad", [evse_record(e) for e in EVSES])
    await net.set_statuses(dict.fromkeys(EVSES, "Available"))
    # Now the CPO learns the EMP (an EMP peer without push): the EMP's next pull succeeds.
    headers = {"Authorization": f"Bearer {net.cpo.internal_token}"}
    peer = {"id": PROVIDER, "role": "emp", "base_url": net.emp.oicp_url, "inbound_token": EMP_CALLS_CPO}
    async with net.http.post(f"{net.cpo.internal_url}/peers", json=peer, headers=headers) as response:
        assert response.status == 201, await response.text()
    served = await net.pull_cpo()
    assert served["totalElements"] == len(EVSES) and served["totalPages"] > 2, served
    assert len(served["content"]) == PAGE_SIZE

    async def all_pulled() -> bool:
        return sorted((await net.names()).keys()) == EVSES

    await wait_until(all_pulled, timeout=CONVERGE_SECONDS, what="the full pull at the EMP")
    state = await net.state()
    assert state[PULL_EVSE_DATA]["cursor"] is not None and state[PULL_EVSE_DATA]["operators"] == [OPERATOR]
    # One fullLoad of all 20 records, although a page holds at most 7: all pages were read first.
    full_loads = [e for e in net.data_events() if e["action_type"] == "fullLoad"]
    assert len(full_loads) == 1, net.data_events()
    assert sorted(full_loads[0]["evse_ids"]) == EVSES and full_loads[0]["peer_id"] == OPERATOR

    async def statuses_pulled() -> bool:
        stored = await net.roaming_status.get_many(EVSES)
        return all(s is not None and s.status == "Available" for s in stored.values())

    await wait_until(statuses_pulled, timeout=CONVERGE_SECONDS, what="the statuses at the EMP")
    view = await net.emp_evse(EVSES[0])
    assert view is not None and view["scope"] == "roaming" and view["EvseStatus"] == "Available", view
    assert view["OperatorID"] == OPERATOR and view["OperatorName"] == OPERATOR_NAME
    assert "OperatorID" not in view["data"] and "deltaType" not in view["data"], view["data"]
    assert any(e["action_type"] == "update" and e["peer_id"] == OPERATOR for e in net.status_events())


async def test_insert_update_and_delete_arrive_as_deltas(net: PullNet) -> None:
    # Not earlier: the full load of the previous test may be less than a second old (same clock).
    before = datetime.now(UTC)
    added, renamed, removed = "DE*PLL*E0020", EVSES[1], EVSES[2]
    await net.set_data("insert", [evse_record(added)])
    await net.set_data("update", [evse_record(renamed, "Renamed")])
    assert (await net.set_data("delete", [evse_record(removed)]))["deleted"] == 1

    # What the CPO serves for a LastCall before these changes: the three, each with its deltaType.
    served = await net.pull_cpo(last_call=before)
    deltas = {r["EvseID"]: r.get("deltaType") for r in served["content"]}
    assert deltas == {added: "insert", renamed: "update", removed: "delete"}, served

    async def applied() -> bool:
        names = await net.names()
        return names.get(added) == "Station" and names.get(renamed) == "Renamed" and removed not in names

    await wait_until(applied, timeout=CONVERGE_SECONDS, what="the deltas at the EMP")
    view = await net.emp_evse(removed)
    assert view is not None and view["data"] is None, view  # the data is gone, the status stays
    by_action = {e["action_type"]: e for e in net.data_events() if e["action_type"] != "fullLoad"}
    assert by_action["insert"]["evse_ids"] == [added], net.data_events()
    assert by_action["update"]["evse_ids"] == [renamed], net.data_events()
    assert by_action["delete"]["deleted_evse_ids"] == [removed], net.data_events()
    assert (await net.state())[PULL_EVSE_DATA]["last_kind"] == "delta"


async def test_status_changes_arrive(net: PullNet) -> None:
    await net.set_statuses({EVSES[5]: "Occupied"})

    async def occupied() -> bool:
        view = await net.emp_evse(EVSES[5])
        return view is not None and view["EvseStatus"] == "Occupied"

    await wait_until(occupied, timeout=CONVERGE_SECONDS, what="the status change at the EMP")
    changes = [
        r for e in net.status_events() if e["action_type"] == "update" for r in e["records"] if r["EvseID"] == EVSES[5]
    ]
    assert changes[-1]["EvseStatus"] == "Occupied", net.status_events()


async def test_a_pull_with_nothing_changed_applies_nothing(net: PullNet) -> None:
    # Let the pulls that may still carry the last changes pass, then watch one more of each.
    settled = await net.next_success(PULL_EVSE_DATA, after=time.time())
    events_before = len(net.tap.events)
    data = await net.next_success(PULL_EVSE_DATA, after=datetime.fromisoformat(settled["last_success"]).timestamp())
    status = await net.next_success(PULL_EVSE_STATUS, after=datetime.fromisoformat(data["last_success"]).timestamp())

    assert data["last_kind"] == "delta" and data["records_applied"] == 0, data
    # LastCall overlaps the previous pull: the recent changes come again and change nothing.
    assert data["records_received"] >= 3 and data["records_invalid"] == 0, data
    assert data["consecutive_failures"] == 0 and data["cursor"] is not None, data
    # The CPO keeps the status of an EVSE whose data it deleted: all 20 statuses, none changed.
    assert status["records_applied"] == 0 and status["records_received"] == len(EVSES), status
    assert len(net.tap.events) == events_before, net.tap.events[events_before:]
    assert data["records_applied_total"] == len(EVSES) + 3, data


# ---- edge cases against a scripted CPO hub, with the scheduler in this process --------------------

HUB = "DE*HBX"
HUB_OPERATORS = ("DE*HBA", "DE*HBB")


class ScriptedHub:
    """A CPO hub peer (default route: it relays other operators) that answers pulls from fixed lists."""

    def __init__(self) -> None:
        self.port = free_port()
        self.refuse = True
        self.records: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.pages_asked: list[tuple[int, int, bool]] = []  # (page, size, delta)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.refuse:
            refusal = {"Result": False, "StatusCode": {"Code": "017", "AdditionalInfo": "not yet"}}
            return web.json_response(refusal)
        if request.path.endswith("/status-records"):
            return web.json_response({"EvseStatuses": {"OperatorEvseStatus": self.statuses}})
        page, size = int(request.query["page"]), int(request.query["size"])
        delta = "LastCall" in body
        self.pages_asked.append((page, size, delta))
        records = [] if delta else self.records  # nothing changes at this hub after the full pull
        content = records[page * size : (page + 1) * size]
        pages = -(-len(records) // size)
        return web.json_response(
            {
                "content": content,
                "number": page,
                "size": size,
                "totalElements": len(records),
                "totalPages": pages,
                "first": page == 0,
                "last": page >= pages - 1,
                "numberOfElements": len(content),
                "StatusCode": {"Code": "000"},
            }
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()


class RecordingBus:
    """Stands in for the node's bus: keeps the events the scheduler publishes."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def emit_event(self, event: Any, payload: Any) -> None:
        self.events.append((event.value, payload.model_dump(mode="json", by_alias=True)))  # as the bus sends it


def pulled_record(evse_id: str, operator_id: str) -> dict[str, Any]:
    return {**evse_record(evse_id), "OperatorID": operator_id, "OperatorName": f"Operator {operator_id}"}


async def test_hub_pull_skips_invalid_records_and_empties_vanished_operators() -> None:
    hub = ScriptedHub()
    await hub.start()
    keys = KeySpace(f"{RUN_ID}:scripted:")
    node = NodeSettings(
        name="scripted",
        provider_ids=[PROVIDER],
        oicp={"port": free_port()},
        internal={"port": free_port(), "token": "t"},
        delivery={"poll_interval_seconds": 0.2, "backoff_initial_seconds": 0.1, "backoff_max_seconds": 0.5},
    )
    pull = {"evse_data_interval_seconds": 1, "evse_status_interval_seconds": 1, "page_size": 2}
    peer = PeerConfig(id=HUB, role="cpo", base_url=hub.url, default_route=True, pull=pull)
    redis = aioredis.from_url(REDIS_URL)
    client = PeerClient.create()
    bus = RecordingBus()
    data, status = EvseDataStore(redis, keys, "roaming"), EvseStatusStore(redis, keys, "roaming")
    state = PullStateStore(redis, keys)
    # An operator the hub returned before (an earlier full pull) and returns no more.
    vanished = "DE*HBO"
    assert (await data.apply("fullLoad", vanished, "Old", [EvseDataRecord.from_oicp(evse_record("DE*HBO*E1"))], T)).ok
    await state.replace_operators(peer.key, PULL_EVSE_DATA, {normalize_id(vanished): [vanished, "Old"]})
    await status.apply("fullLoad", vanished, [("DE*HBO*E1", "Available")], T)
    await state.replace_operators(peer.key, PULL_EVSE_STATUS, {normalize_id(vanished): [vanished, "Old"]})

    operator_a, operator_b = HUB_OPERATORS
    hub.records = [
        pulled_record("DE*HBA*E1", operator_a),
        {**pulled_record("DE*HBA*E2", operator_a), "Plugs": ["no such plug"]},  # invalid: skipped, not fatal
        pulled_record("DE*HBA*E3", operator_a),
        pulled_record("DE*HBB*E1", operator_b),
        pulled_record("DE*HBB*E2", operator_b),
    ]
    hub.statuses = [
        {"OperatorID": operator_a, "EvseStatusRecord": [{"EvseID": "DE*HBA*E1", "EvseStatus": "Occupied"}]},
        {"OperatorID": operator_b, "EvseStatusRecord": [{"EvseID": "DE*HBB*E1", "EvseStatus": "Bogus"}]},
    ]
    registry = PeerRegistry(redis, keys, [peer])
    scheduler = PullScheduler(node, registry, client, bus, DeliveryStore(redis, keys), state, data, status)  # type: ignore[arg-type]
    try:
        await scheduler.start()

        async def refused_twice() -> bool:
            view = await state.pull_state(peer)
            return view[PULL_EVSE_DATA]["consecutive_failures"] >= 2 and view[PULL_EVSE_DATA]["cursor"] is None

        await wait_until(refused_twice, timeout=CONVERGE_SECONDS, what="refused pulls")
        assert "017" in (await state.pull_state(peer))[PULL_EVSE_DATA]["last_error"]
        hub.refuse = False

        async def both_pulled() -> dict[str, Any] | None:
            view = await state.pull_state(peer)
            done = view[PULL_EVSE_DATA]["cursor"] and view[PULL_EVSE_STATUS]["last_success"]
            return view if done else None

        view = await wait_until(both_pulled, timeout=CONVERGE_SECONDS, what="successful pulls")
        pulled = view[PULL_EVSE_DATA]
        assert pulled["records_invalid"] == 1 and pulled["operators"] == list(HUB_OPERATORS), pulled
        assert await data.evse_ids_of_operator(operator_a) == ["DE*HBA*E1", "DE*HBA*E3"]
        assert await data.evse_ids_of_operator(operator_b) == ["DE*HBB*E1", "DE*HBB*E2"]
        assert await data.evse_ids_of_operator(vanished) == []  # emptied by a fullLoad without records
        # Pages of at most 2 records: 0, 1, 2 of the full pull, then delta pulls start again at page 0.
        assert [p for p, _, delta in hub.pages_asked if not delta] == [0, 1, 2], hub.pages_asked
        assert {size for _, size, _ in hub.pages_asked} == {2}

        assert view[PULL_EVSE_STATUS]["records_invalid"] == 1
        found = await status.get_many(["DE*HBA*E1", "DE*HBB*E1", "DE*HBO*E1"])
        assert found["DE*HBA*E1"] is not None and found["DE*HBA*E1"].status == "Occupied"
        assert found["DE*HBB*E1"] is None and found["DE*HBO*E1"] is None
        deleted = [p for e, p in bus.events if e == "evse.status.received" and p["action_type"] == "delete"]
        assert [r["EvseID"] for p in deleted for r in p["records"]] == ["DE*HBO*E1"], bus.events
        vanished_events = [p for e, p in bus.events if e == "evse.data.received" and p["operator_id"] == vanished]
        assert vanished_events[0]["deleted_evse_ids"] == ["DE*HBO*E1"], bus.events
    finally:
        await scheduler.stop()
        await client.close()
        await hub.stop()
        leftovers = [k async for k in redis.scan_iter(match=f"{RUN_ID}:scripted:*")]
        if leftovers:
            await redis.delete(*leftovers)
        await redis.aclose()
