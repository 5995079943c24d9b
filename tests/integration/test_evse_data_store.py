"""The EVSE data read model against the real Redis: ActionType semantics, filters, radius search, delta
pulls with tombstones, pagination, and proof that a page reads only the page's records."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.oicp.geo import EARTH_RADIUS_KM, distance_km
from shared.oicp.ids import normalize_id
from shared.oicp.messages import PullEvseDataRequest
from shared.oicp.types import EvseDataRecord
from shared.stores import evse_data
from shared.stores.evse_data import EvseDataQuery, EvseDataStore
from shared.stores.redis import KeySpace
from tests.support.nodes import REDIS_URL, RUN_ID

pytestmark = pytest.mark.asyncio(loop_scope="session")

OPERATOR, OPERATOR_NAME = "DE*GEF", "GEF Charging"
OTHER, OTHER_NAME = "DE*OTH", "Other Operator"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MUNICH = (48.137154, 11.576124)
MANY = 5000
RETENTION_SECONDS = 3600


def evse_record(
    evse_id: str,
    *,
    country: str = "DEU",
    latitude: float = MUNICH[0],
    longitude: float = MUNICH[1],
    authentication_modes: tuple[str, ...] = ("NFC RFID Classic",),
    accessibility: str = "Free publicly accessible",
    calibration: str = "Local",
    renewable: bool = True,
    hubject_compatible: bool = True,
    open_24_hours: bool = True,
    name: str = "Station",
) -> EvseDataRecord:
    """A valid EvseDataRecord with the filterable fields as given."""
    return EvseDataRecord.from_oicp(
        {
            "EvseID": evse_id,
            "ChargingStationNames": [{"lang": "en", "value": name}],
            "Address": {
                "Country": country,
                "City": "Munich",
                "Street": "Leopoldstrasse",
                "PostalCode": "80802",
                "HouseNum": "1",
            },
            "GeoCoordinates": {"DecimalDegree": {"Latitude": f"{latitude:.6f}", "Longitude": f"{longitude:.6f}"}},
            "Plugs": ["Type 2 Outlet"],
            "ChargingFacilities": [{"PowerType": "AC_3_PHASE", "Power": 22}],
            "RenewableEnergy": renewable,
            "CalibrationLawDataAvailability": calibration,
            "AuthenticationModes": list(authentication_modes),
            "PaymentOptions": ["Contract"],
            "ValueAddedServices": ["None"],
            "Accessibility": accessibility,
            "HotlinePhoneNumber": "+4989123456",
            "IsOpen24Hours": open_24_hours,
            **(
                {}
                if open_24_hours
                else {"OpeningTimes": [{"Period": [{"begin": "08:00", "end": "20:00"}], "on": "Everyday"}]}
            ),
            "IsHubjectCompatible": hubject_compatible,
            "DynamicInfoAvailable": "auto",
        }
    )


class CountingConnection(aioredis.Connection):
    """Records every command the client sends (single commands, pipelines and scripts alike)."""

    sent: ClassVar[list[tuple[Any, ...]]] = []

    def pack_command(self, *args: Any) -> list[bytes]:
        CountingConnection.sent.append(args)
        return super().pack_command(*args)


@pytest_asyncio.fixture(loop_scope="session")
async def redis() -> AsyncIterator[aioredis.Redis]:
    pool = aioredis.ConnectionPool.from_url(REDIS_URL, connection_class=CountingConnection)
    client = aioredis.Redis(connection_pool=pool)
    prefix = f"{RUN_ID}:evse-data-store:"
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
def make_store(redis: aioredis.Redis) -> Callable[..., EvseDataStore]:
    """A store under a key prefix of its own (per test), removed with the run's keys at the end."""

    def make(scope: str = "own", **kwargs: Any) -> EvseDataStore:
        keys = KeySpace(f"{RUN_ID}:evse-data-store:{uuid.uuid4().hex[:8]}:")
        return EvseDataStore(redis, keys, scope, **kwargs)

    return make


@pytest.fixture
def store(make_store: Callable[..., EvseDataStore]) -> EvseDataStore:
    return make_store()


async def ids_of(store: EvseDataStore, query: EvseDataQuery | None = None, size: int = 1000) -> list[str]:
    records, total = await store.query(query or EvseDataQuery(), 0, size)
    assert total == len(records)
    return [r["EvseID"] for r in records]


# --------------------------------------------------------------------------------------------------
# ActionType semantics (DIGEST §9.1)
# --------------------------------------------------------------------------------------------------


async def test_full_load_replaces_the_operators_set(store: EvseDataStore) -> None:
    first = [evse_record(f"DE*GEF*E{i}") for i in (1, 2, 3)]
    result = await store.apply("fullLoad", OPERATOR, OPERATOR_NAME, first, T0)
    assert result.ok and result.changed == ["DE*GEF*E1", "DE*GEF*E2", "DE*GEF*E3"] and result.deleted == []

    later = T0 + timedelta(hours=1)
    second = [evse_record("DE*GEF*E2"), evse_record("DE*GEF*E3", name="Renamed"), evse_record("DE*GEF*E4")]
    result = await store.apply("fullLoad", OPERATOR, OPERATOR_NAME, second, later)
    assert result.changed == ["DE*GEF*E3", "DE*GEF*E4"]
    assert result.deleted == ["DE*GEF*E1"]
    assert await store.evse_ids_of_operator(OPERATOR) == ["DE*GEF*E2", "DE*GEF*E3", "DE*GEF*E4"]
    stored = await store.get_many(["DE*GEF*E1", "DE*GEF*E2", "DE*GEF*E3"])
    assert stored["DE*GEF*E1"] is None
    assert stored["DE*GEF*E2"] is not None and stored["DE*GEF*E2"].last_update == T0  # unchanged
    e3 = stored["DE*GEF*E3"]
    assert e3 is not None and e3.last_update == later and e3.created == T0
    assert e3.record["ChargingStationNames"] == [{"lang": "en", "value": "Renamed"}]
    assert await store.count() == 3


async def test_empty_full_load_deletes_all_of_the_operator_only(store: EvseDataStore) -> None:
    await store.apply("fullLoad", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E1"), evse_record("DE*GEF*E2")], T0)
    await store.apply("fullLoad", OTHER, OTHER_NAME, [evse_record("DE*OTH*E1")], T0)
    result = await store.apply("fullLoad", OPERATOR, OPERATOR_NAME, [], T0 + timedelta(minutes=1))
    assert result.ok and result.changed == [] and result.deleted == ["DE*GEF*E1", "DE*GEF*E2"]
    assert await store.evse_ids_of_operator(OPERATOR) == []
    assert await store.evse_ids_of_operator(OTHER) == ["DE*OTH*E1"]
    assert await ids_of(store) == ["DE*OTH*E1"]
    assert await store.operators() == {"DEGEF": (OPERATOR, OPERATOR_NAME), "DEOTH": (OTHER, OTHER_NAME)}


async def test_full_load_compares_normalised_operator_ids(store: EvseDataStore) -> None:
    await store.apply("fullLoad", "DE*GEF", OPERATOR_NAME, [evse_record("DE*GEF*E1"), evse_record("DE*GEF*E2")], T0)
    result = await store.apply("fullLoad", "de*gef", OPERATOR_NAME, [evse_record("DE*GEF*E2")], T0)
    # Same operator: its other record is deleted. E2 changed, because its pulled OperatorID is now spelled
    # the new way.
    assert result.deleted == ["DE*GEF*E1"] and result.changed == ["DE*GEF*E2"]
    assert await store.evse_ids_of_operator("DEGEF") == ["DE*GEF*E2"]
    assert await store.operators() == {"DEGEF": ("de*gef", OPERATOR_NAME)}


async def test_insert_conflict_aborts_everything(store: EvseDataStore) -> None:
    await store.apply("insert", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E1")], T0)
    before = await store.query(EvseDataQuery(), 0, 10)
    # E1 spelled without separators is the same EVSE (DIGEST §4); E5 would be new but must not be stored.
    result = await store.apply(
        "insert", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E5"), evse_record("DEGEFE1")], T0
    )
    assert not result.ok and result.conflicts == ["DEGEFE1"] and result.changed == [] and result.deleted == []
    assert (await store.get_many(["DE*GEF*E5"]))["DE*GEF*E5"] is None
    assert await store.query(EvseDataQuery(), 0, 10) == before
    assert "insert aborted" in result.conflict_info("insert")


async def test_insert_after_delete_is_a_new_record(store: EvseDataStore) -> None:
    await store.apply("insert", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E1")], T0)
    await store.apply("delete", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E1")], T0 + timedelta(hours=1))
    again = T0 + timedelta(hours=2)
    result = await store.apply("insert", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E1")], again)
    assert result.ok and result.changed == ["DE*GEF*E1"]
    stored = (await store.get_many(["DE*GEF*E1"]))["DE*GEF*E1"]
    assert stored is not None and stored.created == again
    records, _ = await store.query(EvseDataQuery(last_call=again), 0, 10)
    assert [(r["EvseID"], r["deltaType"]) for r in records] == [("DE*GEF*E1", "insert")]


async def test_update_of_unknown_aborts_everything(store: EvseDataStore) -> None:
    await store.apply("fullLoad", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E1"), evse_record("DE*GEF*E2")], T0)
    await store.apply("delete", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E2")], T0)
    update = [evse_record("DE*GEF*E1", name="Changed"), evse_record("DE*GEF*E9"), evse_record("DE*GEF*E2")]
    result = await store.apply("update", OPERATOR, OPERATOR_NAME, update, T0 + timedelta(hours=1))
    assert result.conflicts == ["DE*GEF*E9", "DE*GEF*E2"]  # unknown, and deleted
    stored = (await store.get_many(["DE*GEF*E1"]))["DE*GEF*E1"]
    assert stored is not None and stored.record["ChargingStationNames"][0]["value"] == "Station"
    assert stored.last_update == T0

    result = await store.apply("update", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E1", name="Changed")], T0)
    assert result.ok and result.changed == ["DE*GEF*E1"]


async def test_delete_ignores_unknown_records(store: EvseDataStore) -> None:
    await store.apply("insert", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E1")], T0)
    result = await store.apply(
        "delete", OPERATOR, OPERATOR_NAME, [evse_record("DEGEFE1"), evse_record("DE*GEF*E9")], T0
    )
    assert result.ok and result.deleted == ["DEGEFE1"] and result.changed == []
    again = await store.apply("delete", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E1")], T0)
    assert again.ok and again.deleted == []
    assert await store.count() == 0
    gone = await store.tombstones(["DE*GEF*E1", "DE*GEF*E9"])
    assert gone["DE*GEF*E9"] is None
    tombstone = gone["DE*GEF*E1"]
    assert tombstone is not None and tombstone.deleted_at == T0 and tombstone.record["EvseID"] == "DE*GEF*E1"


async def test_identical_content_is_not_a_change(store: EvseDataStore) -> None:
    await store.apply("fullLoad", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E1")], T0)
    later = T0 + timedelta(days=1)
    for action in ("update", "fullLoad"):
        result = await store.apply(action, OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E1")], later)
        assert result.ok and result.changed == [] and result.deleted == [], action
    stored = (await store.get_many(["DE*GEF*E1"]))["DE*GEF*E1"]
    assert stored is not None and stored.last_update == T0
    assert await store.query(EvseDataQuery(last_call=later), 0, 10) == ([], 0)
    # The operator's name is part of what an EMP pulls: renaming is a change.
    result = await store.apply("update", OPERATOR, "GEF Renamed", [evse_record("DE*GEF*E1")], later)
    assert result.changed == ["DE*GEF*E1"]


async def test_a_reader_never_sees_half_a_push(store: EvseDataStore) -> None:
    records = [evse_record(f"DE*GEF*E{i}") for i in range(2000)]
    counts = await asyncio.gather(
        *(store.count() for _ in range(5)),
        store.apply("fullLoad", OPERATOR, OPERATOR_NAME, records, T0),
        *(store.count() for _ in range(5)),
    )
    assert {c for c in counts if isinstance(c, int)} <= {0, 2000}
    assert await store.count() == 2000


async def test_scopes_are_separate(make_store: Callable[..., EvseDataStore], redis: aioredis.Redis) -> None:
    own = make_store("own")
    roaming = EvseDataStore(redis, own._keys, "roaming")
    await own.apply("insert", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E1")], T0)
    assert await roaming.count() == 0 and await own.count() == 1


# --------------------------------------------------------------------------------------------------
# Filters (DIGEST §9.2): any-of within a list, AND across fields
# --------------------------------------------------------------------------------------------------

DATASET: list[tuple[str, str, dict[str, Any]]] = [
    (OPERATOR, "DE*GEF*EF1", {}),
    (OPERATOR, "DE*GEF*EF2", {"country": "AUT", "authentication_modes": ("REMOTE", "PnC")}),
    (OPERATOR, "DE*GEF*EF3", {"accessibility": "Restricted access", "renewable": False}),
    (OPERATOR, "DE*GEF*EF4", {"calibration": "External", "hubject_compatible": False}),
    (OPERATOR, "DE*GEF*EF5", {"calibration": "Not Available", "open_24_hours": False, "country": "FRA"}),
    (OTHER, "DE*OTH*EF6", {"authentication_modes": ("Direct Payment",), "renewable": False}),
    (OTHER, "DE*OTH*EF7", {"country": "AUT", "accessibility": "Paying publicly accessible", "open_24_hours": False}),
    (OTHER, "DE*OTH*EF8", {"authentication_modes": ("REMOTE",), "hubject_compatible": False, "country": "FRA"}),
]


async def seed_dataset(store: EvseDataStore) -> dict[str, EvseDataRecord]:
    records: dict[str, list[EvseDataRecord]] = {OPERATOR: [], OTHER: []}
    for operator, evse_id, fields in DATASET:
        records[operator].append(evse_record(evse_id, **fields))
    await store.apply("fullLoad", OPERATOR, OPERATOR_NAME, records[OPERATOR], T0)
    await store.apply("fullLoad", OTHER, OTHER_NAME, records[OTHER], T0)
    return {r.evse_id: r for rs in records.values() for r in rs}


def operator_of(evse_id: str) -> str:
    return OPERATOR if evse_id.startswith("DE*GEF") else OTHER


FILTERS: list[tuple[str, EvseDataQuery, Callable[[EvseDataRecord], bool]]] = [
    ("country", EvseDataQuery(country_codes=["AUT"]), lambda r: r.address.country == "AUT"),
    ("countries", EvseDataQuery(country_codes=["AUT", "FRA"]), lambda r: r.address.country in {"AUT", "FRA"}),
    ("operator", EvseDataQuery(operator_ids=["DE*OTH"]), lambda r: operator_of(r.evse_id) == OTHER),
    ("operator spelled differently", EvseDataQuery(operator_ids=["deoth"]), lambda r: operator_of(r.evse_id) == OTHER),
    ("operators", EvseDataQuery(operator_ids=[OPERATOR, OTHER]), lambda r: True),
    ("unknown operator", EvseDataQuery(operator_ids=["DE*NON"]), lambda r: False),
    (
        "authentication mode",
        EvseDataQuery(authentication_modes=["REMOTE"]),
        lambda r: "REMOTE" in r.authentication_modes,
    ),
    (
        "authentication modes",
        EvseDataQuery(authentication_modes=["PnC", "Direct Payment"]),
        lambda r: bool({"PnC", "Direct Payment"} & set(r.authentication_modes)),
    ),
    (
        "accessibility",
        EvseDataQuery(accessibility=["Restricted access", "Paying publicly accessible"]),
        lambda r: r.accessibility in {"Restricted access", "Paying publicly accessible"},
    ),
    (
        "calibration",
        EvseDataQuery(calibration_law_data_availability=["External"]),
        lambda r: r.calibration_law_data_availability == "External",
    ),
    ("renewable", EvseDataQuery(renewable_energy=True), lambda r: r.renewable_energy),
    ("not renewable", EvseDataQuery(renewable_energy=False), lambda r: not r.renewable_energy),
    ("hubject compatible", EvseDataQuery(is_hubject_compatible=True), lambda r: r.is_hubject_compatible),
    ("not hubject compatible", EvseDataQuery(is_hubject_compatible=False), lambda r: not r.is_hubject_compatible),
    ("open 24 hours", EvseDataQuery(is_open_24_hours=True), lambda r: r.is_open_24_hours),
    ("not open 24 hours", EvseDataQuery(is_open_24_hours=False), lambda r: not r.is_open_24_hours),
    ("empty lists filter nothing", EvseDataQuery(country_codes=[], operator_ids=[]), lambda r: True),
    (
        "country and operator",
        EvseDataQuery(country_codes=["AUT", "FRA"], operator_ids=["DE*OTH"]),
        lambda r: r.address.country in {"AUT", "FRA"} and operator_of(r.evse_id) == OTHER,
    ),
    (
        "everything",
        EvseDataQuery(
            country_codes=["DEU", "AUT"],
            operator_ids=[OPERATOR],
            authentication_modes=["NFC RFID Classic", "REMOTE"],
            accessibility=["Free publicly accessible"],
            calibration_law_data_availability=["Local", "External"],
            renewable_energy=True,
            is_hubject_compatible=True,
            is_open_24_hours=True,
        ),
        lambda r: r.evse_id in {"DE*GEF*EF1", "DE*GEF*EF2"},
    ),
    (
        "booleans combined",
        EvseDataQuery(renewable_energy=False, is_hubject_compatible=True),
        lambda r: not r.renewable_energy and r.is_hubject_compatible,
    ),
]


@pytest.mark.parametrize(("query", "expected"), [(q, e) for _, q, e in FILTERS], ids=[n for n, _, _ in FILTERS])
async def test_filters(store: EvseDataStore, query: EvseDataQuery, expected: Callable[[EvseDataRecord], bool]) -> None:
    records = await seed_dataset(store)
    wanted = sorted((r.evse_id for r in records.values() if expected(r)), key=normalize_id)
    assert await ids_of(store, query) == wanted
    # A tombstone keeps its index memberships, but a pull without LastCall never returns it.
    await store.apply("fullLoad", OPERATOR, OPERATOR_NAME, [], T0 + timedelta(hours=1))
    assert await ids_of(store, query) == [e for e in wanted if operator_of(e) == OTHER]


async def test_query_from_request(store: EvseDataStore) -> None:
    request = PullEvseDataRequest.from_oicp(
        {
            "ProviderID": "DE-GDF",
            "GeoCoordinatesResponseFormat": "Google",
            "SearchCenter": {"GeoCoordinates": {"Google": {"Coordinates": "48.137154 11.576124"}}, "Radius": 1.5},
            "CountryCodes": ["DEU"],
            "AuthenticationModes": ["REMOTE"],
            "Accessibility": ["Test Station"],
            "CalibrationLawDataAvailability": ["Not Available"],
            "RenewableEnergy": False,
            "IsHubjectCompatible": True,
            "IsOpen24Hours": False,
        }
    )
    query = EvseDataQuery.from_request(request)
    assert query == EvseDataQuery(
        country_codes=["DEU"],
        authentication_modes=["REMOTE"],
        accessibility=["Test Station"],
        calibration_law_data_availability=["Not Available"],
        renewable_energy=False,
        is_hubject_compatible=True,
        is_open_24_hours=False,
        search_center=(48.137154, 11.576124, 1.5),
    )
    delta = EvseDataQuery.from_request(
        PullEvseDataRequest.from_oicp(
            {"ProviderID": "DE-GDF", "GeoCoordinatesResponseFormat": "Google", "LastCall": "2026-03-01T13:00:00+01:00"}
        )
    )
    assert delta.last_call == T0 and delta.search_center is None and delta.country_codes == []


# --------------------------------------------------------------------------------------------------
# SearchCenter
# --------------------------------------------------------------------------------------------------


def moved(latitude: float, longitude: float, km: float, bearing_degrees: float) -> tuple[float, float]:
    """The point ``km`` away from (latitude, longitude) on the great circle towards ``bearing``."""
    d = km / EARTH_RADIUS_KM
    phi, lam, theta = math.radians(latitude), math.radians(longitude), math.radians(bearing_degrees)
    phi2 = math.asin(math.sin(phi) * math.cos(d) + math.cos(phi) * math.sin(d) * math.cos(theta))
    lam2 = lam + math.atan2(math.sin(theta) * math.sin(d) * math.cos(phi), math.cos(d) - math.sin(phi) * math.sin(phi2))
    return math.degrees(phi2), (math.degrees(lam2) + 540) % 360 - 180


RADIUS_KM = 10.0
MARGIN_KM = 0.05  # 50 m: well above the rounding of 6 decimals (0.11 m) and Redis' geohash (< 1 m)
TINY_RADIUS_KM = 0.01  # radius 0 finds nothing: a stored position is the centre only within its geohash cell


@pytest.mark.parametrize("centre", [MUNICH, (-33.868820, 151.209296), (-22.906847, -43.172897)], ids=str)
async def test_search_center_radius(store: EvseDataStore, centre: tuple[float, float]) -> None:
    records = []
    expected_inside = []
    for n, bearing in enumerate((0, 90, 200, 315)):
        inside = moved(*centre, RADIUS_KM - MARGIN_KM, bearing)
        outside = moved(*centre, RADIUS_KM + MARGIN_KM, bearing)
        assert distance_km(*centre, *inside) < RADIUS_KM < distance_km(*centre, *outside)
        records.append(evse_record(f"DE*GEF*EIN{n}", latitude=inside[0], longitude=inside[1]))
        records.append(evse_record(f"DE*GEF*EOUT{n}", latitude=outside[0], longitude=outside[1], country="AUT"))
        expected_inside.append(f"DE*GEF*EIN{n}")
    records.append(evse_record("DE*GEF*ECENTRE", latitude=centre[0], longitude=centre[1], renewable=False))
    await store.apply("fullLoad", OPERATOR, OPERATOR_NAME, records, T0)

    found = await ids_of(store, EvseDataQuery(search_center=(*centre, RADIUS_KM)))
    assert found == sorted([*expected_inside, "DE*GEF*ECENTRE"], key=normalize_id)
    in_area, total = await store.in_area(*centre, RADIUS_KM + 2 * MARGIN_KM, 0, 100)
    assert total == len(records) and len(in_area) == total
    # combined with a filter
    assert await ids_of(store, EvseDataQuery(search_center=(*centre, RADIUS_KM), renewable_energy=False)) == [
        "DE*GEF*ECENTRE"
    ]
    assert await ids_of(store, EvseDataQuery(search_center=(*centre, TINY_RADIUS_KM))) == ["DE*GEF*ECENTRE"]
    # a deleted EVSE is no longer found
    await store.apply("delete", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*ECENTRE")], T0)
    assert await ids_of(store, EvseDataQuery(search_center=(*centre, TINY_RADIUS_KM))) == []


async def test_records_with_unusable_coordinates_are_stored_but_not_found_by_radius(store: EvseDataStore) -> None:
    # 95° passes the published pattern but is no latitude; 86° is beyond what Redis GEO can index.
    records = [evse_record("DE*GEF*EPOLE1", latitude=95.0), evse_record("DE*GEF*EPOLE2", latitude=86.0)]
    result = await store.apply("fullLoad", OPERATOR, OPERATOR_NAME, records, T0)
    assert result.ok and len(result.changed) == 2
    assert await ids_of(store) == ["DE*GEF*EPOLE1", "DE*GEF*EPOLE2"]
    assert await ids_of(store, EvseDataQuery(search_center=(85.0, 11.0, 999.9))) == []
    with pytest.raises(ValueError, match="search centre"):
        await store.query(EvseDataQuery(search_center=(86.0, 11.0, 1.0)), 0, 10)


# --------------------------------------------------------------------------------------------------
# LastCall (delta pulls) and tombstones
# --------------------------------------------------------------------------------------------------


async def test_last_call_returns_changes_with_their_delta_type(store: EvseDataStore) -> None:
    t1, t2 = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    base = [evse_record(f"DE*GEF*E{i}", country="DEU" if i != 3 else "AUT") for i in (1, 2, 3)]
    await store.apply("fullLoad", OPERATOR, OPERATOR_NAME, base, T0)
    await store.apply("insert", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E4")], t1)
    await store.apply("update", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E2", name="New name")], t1)
    await store.apply("delete", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E3")], t2)

    async def deltas(query: EvseDataQuery) -> list[tuple[str, str, str]]:
        records, total = await store.query(query, 0, 100)
        assert total == len(records)
        return [(r["EvseID"], r["deltaType"], r["lastUpdate"]) for r in records]

    assert await deltas(EvseDataQuery(last_call=T0 + timedelta(minutes=1))) == [
        ("DE*GEF*E2", "update", "2026-03-01T13:00:00Z"),
        ("DE*GEF*E3", "delete", "2026-03-01T14:00:00Z"),
        ("DE*GEF*E4", "insert", "2026-03-01T13:00:00Z"),
    ]
    # LastCall is inclusive: a change at exactly LastCall is returned (a repeat is harmless, a miss is not).
    assert await deltas(EvseDataQuery(last_call=t2)) == [("DE*GEF*E3", "delete", "2026-03-01T14:00:00Z")]
    assert [d[:2] for d in await deltas(EvseDataQuery(last_call=T0))] == [
        ("DE*GEF*E1", "insert"),
        ("DE*GEF*E2", "insert"),
        ("DE*GEF*E3", "delete"),
        ("DE*GEF*E4", "insert"),
    ]
    assert await deltas(EvseDataQuery(last_call=t2 + timedelta(microseconds=1))) == []
    # filters apply to tombstones by their last content
    aut = await deltas(EvseDataQuery(last_call=T0, authentication_modes=["NFC RFID Classic"], renewable_energy=True))
    assert len(aut) == 4
    deleted = await store.query(EvseDataQuery(last_call=t1), 0, 100)
    tombstone = next(r for r in deleted[0] if r["deltaType"] == "delete")
    assert tombstone["Address"]["Country"] == "AUT" and tombstone["OperatorID"] == OPERATOR
    # without LastCall: no deltaType, no tombstone
    records, _ = await store.query(EvseDataQuery(), 0, 100)
    assert [r["EvseID"] for r in records] == ["DE*GEF*E1", "DE*GEF*E2", "DE*GEF*E4"]
    assert all("deltaType" not in r for r in records)


async def test_tombstones_are_pruned_after_the_retention(make_store: Callable[..., EvseDataStore]) -> None:
    store = make_store(tombstone_retention_seconds=RETENTION_SECONDS)
    await store.apply("fullLoad", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E1"), evse_record("DE*GEF*E2")], T0)
    await store.apply("delete", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E1")], T0)
    since = EvseDataQuery(last_call=T0, accessibility=["Free publicly accessible"])

    # Within the retention the tombstone is kept ...
    await store.apply("insert", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E3")], T0 + timedelta(seconds=3599))
    assert (await store.tombstones(["DE*GEF*E1"]))["DE*GEF*E1"] is not None
    assert "DE*GEF*E1" in await ids_of(store, since)

    # ... the next write after it prunes it, from every index.
    await store.apply("insert", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E4")], T0 + timedelta(seconds=3601))
    assert (await store.tombstones(["DE*GEF*E1"]))["DE*GEF*E1"] is None
    assert await ids_of(store, since) == ["DE*GEF*E2", "DE*GEF*E3", "DE*GEF*E4"]
    assert await ids_of(store, EvseDataQuery(last_call=T0)) == ["DE*GEF*E2", "DE*GEF*E3", "DE*GEF*E4"]
    for index in ("idx:accessibility:Free publicly accessible", "idx:operator:DEGEF", "geo", "changes", "meta"):
        key = store._key(*index.split(":"))
        members = await store._redis.hkeys(key) if index == "meta" else await store._redis.zrange(key, 0, -1)
        assert b"DEGEFE1" not in members, index


async def test_prune_without_writes(make_store: Callable[..., EvseDataStore]) -> None:
    store = make_store(tombstone_retention_seconds=RETENTION_SECONDS)
    records = [evse_record(f"DE*GEF*E{i}") for i in range(3)]
    await store.apply("fullLoad", OPERATOR, OPERATOR_NAME, records, T0)
    await store.apply("fullLoad", OPERATOR, OPERATOR_NAME, [], T0)
    assert await store.prune(T0 + timedelta(seconds=RETENTION_SECONDS - 1)) == 0
    assert await store.prune(T0 + timedelta(seconds=RETENTION_SECONDS + 1)) == 3
    assert await store.query(EvseDataQuery(last_call=T0), 0, 10) == ([], 0)


# --------------------------------------------------------------------------------------------------
# Pagination
# --------------------------------------------------------------------------------------------------


async def test_pages_are_stable_and_complete(store: EvseDataStore) -> None:
    evse_ids = [f"DE*GEF*E{i}" for i in range(1, 46)]
    await store.apply("fullLoad", OPERATOR, OPERATOR_NAME, [evse_record(e) for e in evse_ids], T0)
    pages = [await store.query(EvseDataQuery(renewable_energy=True), n, 20) for n in range(4)]
    assert [total for _, total in pages] == [45, 45, 45, 45]
    assert [len(records) for records, _ in pages] == [20, 20, 5, 0]  # last partial page, page past the end
    seen = [r["EvseID"] for records, _ in pages for r in records]
    assert seen == sorted(evse_ids, key=normalize_id)  # every record once, in EvseID order
    assert await store.query(EvseDataQuery(renewable_energy=True), 1, 20) == pages[1]  # same page again
    assert await store.query(EvseDataQuery(), 10**15, 2000) == ([], 45)  # far past the end

    # A write invalidates the cached result: the next page read sees it.
    await store.apply("insert", OPERATOR, OPERATOR_NAME, [evse_record("DE*GEF*E0")], T0)
    records, total = await store.query(EvseDataQuery(renewable_energy=True), 0, 20)
    assert total == 46 and records[0]["EvseID"] == "DE*GEF*E0"

    with pytest.raises(ValueError):
        await store.query(EvseDataQuery(), -1, 20)
    with pytest.raises(ValueError):
        await store.query(EvseDataQuery(), 0, 0)


async def test_empty_store(store: EvseDataStore) -> None:
    assert await store.query(EvseDataQuery(), 0, 20) == ([], 0)
    assert await store.query(EvseDataQuery(country_codes=["DEU"]), 3, 20) == ([], 0)
    assert (
        await store.count() == 0 and await store.operators() == {} and await store.evse_ids_of_operator(OPERATOR) == []
    )
    assert await store.get_many([]) == {}


async def test_a_page_reads_only_its_records(store: EvseDataStore) -> None:
    """5,000 records; reading a page of 20 requests exactly 20 bodies and 20 metas, whichever page and
    filter, and the query script touches index keys only."""
    records = [
        evse_record(f"DE*GEF*E{i:05d}", country="AUT" if i % 2 else "DEU", renewable=i % 3 != 0) for i in range(MANY)
    ]
    await store.apply("fullLoad", OPERATOR, OPERATOR_NAME, records, T0)
    await store.apply("delete", OPERATOR, OPERATOR_NAME, records[:100], T0 + timedelta(hours=1))

    queries = [
        EvseDataQuery(),
        EvseDataQuery(country_codes=["AUT", "DEU"], renewable_energy=True),
        EvseDataQuery(last_call=T0),
        EvseDataQuery(search_center=(*MUNICH, 5.0)),
    ]
    for query in queries:
        for page in (0, 7, 100):
            CountingConnection.sent.clear()
            found, total = await store.query(query, page, 20)
            assert total > 20 * 100 and len(found) == 20
            hash_reads = [c for c in CountingConnection.sent if str(c[0]).upper() in HASH_READS]
            assert [(c[0], c[1], len(c) - 2) for c in hash_reads] == [
                ("HMGET", store._key("body"), 20),
                ("HMGET", store._key("meta"), 20),
            ], (query, page)
            others = {str(c[0]).upper() for c in CountingConnection.sent} - HASH_READS
            assert others <= {"EVALSHA", "EVAL", "MULTI", "EXEC"}, others
            scripts = [c for c in CountingConnection.sent if str(c[0]).upper() in {"EVALSHA", "EVAL"}]
            assert len(scripts) == 1 and not {store._key("body"), store._key("meta")} & set(scripts[0])
    # The query script is given no record hash and uses no command that reads a hash or the key space.
    for command in HASH_READS | {"SCAN", "KEYS", "SORT"}:
        assert f"'{command}'" not in evse_data._QUERY


HASH_READS = {"HGET", "HMGET", "HGETALL", "HVALS", "HKEYS", "HSCAN", "HRANDFIELD"}
