"""PullEvseData on a real CPO node: the EMP peer pages through the CPO's own EVSE records (seeded directly
into the node's read model), with filters, coordinate formats, delta pulls and refused requests - every
answer checked against Hubject's OpenAPI.

The pair of nodes is shared with other test modules: every test uses EvseIDs of its own and isolates
its records with a filter (a country nobody else uses, or a rare combination of filters), and deletes
them at the end.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from shared.oicp.base import format_oicp_datetime
from shared.oicp.geo import lat_lon_of_oicp
from shared.oicp.operations import OPERATIONS_BY_NAME
from shared.oicp.types import EvseDataRecord
from shared.stores.evse_data import EvseDataStore
from shared.stores.redis import KeySpace
from tests.conftest import CPO_ID, EMP_CALLS_CPO, EMP_ID, SINK_CALLS_CPO, Pair
from tests.integration.test_evse_data_store import MUNICH, evse_record, moved
from tests.oicp_schema import validate_response
from tests.support.nodes import REDIS_URL, RUN_ID

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

OPERATOR_NAME = "GEF Charging"
PATH = OPERATIONS_BY_NAME["PullEvseData"].path.format(providerID=EMP_ID)
# Countries no other test gives its EVSEs: each test's records are its own to count.
ICELAND, NORWAY, MALTA, NOWHERE = "ISL", "NOR", "MLT", "ATA"
# Filters that can be combined with LastCall and that no other test's records match all at once.
RARE = {
    "Accessibility": ["Test Station"],
    "CalibrationLawDataAvailability": ["Not Available"],
    "AuthenticationModes": ["Direct Payment"],
}
RARE_FIELDS = {
    "accessibility": "Test Station",
    "calibration": "Not Available",
    "authentication_modes": ("Direct Payment",),
}


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture(loop_scope="session")
async def own_data(pair: Pair) -> AsyncIterator[EvseDataStore]:
    """The CPO node's own EVSE data, written here as the node's evse_push service would."""
    client = aioredis.from_url(REDIS_URL)
    try:
        yield EvseDataStore(client, KeySpace(f"{RUN_ID}:{pair.cpo.name}:"), "own")
    finally:
        await client.aclose()


class Seeded:
    """Records a test put into the CPO's store; deleted again when the test ends."""

    def __init__(self, store: EvseDataStore) -> None:
        self.store = store
        self.records: dict[str, EvseDataRecord] = {}

    async def apply(self, action: str, records: list[EvseDataRecord], at: datetime) -> None:
        result = await self.store.apply(action, CPO_ID, OPERATOR_NAME, records, at)
        assert result.ok, result
        self.records.update({r.evse_id: r for r in records})


@pytest_asyncio.fixture(loop_scope="session")
async def seeded(own_data: EvseDataStore) -> AsyncIterator[Seeded]:
    seeded = Seeded(own_data)
    try:
        yield seeded
    finally:
        await own_data.apply("delete", CPO_ID, OPERATOR_NAME, list(seeded.records.values()), datetime.now(UTC))


async def pull(
    pair: Pair, http: aiohttp.ClientSession, body: dict[str, Any], query: str = "", *, ok: bool = True
) -> dict[str, Any]:
    url = f"{pair.cpo.oicp_url}{PATH}{query}"
    request = {"ProviderID": EMP_ID, "GeoCoordinatesResponseFormat": "DecimalDegree", **body}
    async with http.post(url, json=request, headers={"Authorization": f"Bearer {EMP_CALLS_CPO}"}) as response:
        assert response.status == 200
        answer: dict[str, Any] = await response.json(content_type=None)
    validate_response(url, answer, acknowledgement_ok=not ok)
    assert (answer["StatusCode"]["Code"] == "000") is ok, answer
    return answer


def page_fields(answer: dict[str, Any]) -> dict[str, Any]:
    names = ("number", "size", "totalElements", "totalPages", "first", "last", "numberOfElements")
    return {name: answer[name] for name in names}


def evse_ids(answer: dict[str, Any]) -> list[str]:
    return [r["EvseID"] for r in answer["content"]]


async def test_pages(pair: Pair, http: aiohttp.ClientSession, seeded: Seeded) -> None:
    ids = [f"DE*GEF*EPDPAGE{n:02d}" for n in range(45)]
    await seeded.apply("insert", [evse_record(e, country=ICELAND) for e in ids], datetime.now(UTC))
    body = {"CountryCodes": [ICELAND]}
    pages = [await pull(pair, http, body, f"?page={n}&size=20") for n in range(4)]
    assert [page_fields(p) for p in pages] == [
        {
            "number": 0,
            "size": 20,
            "totalElements": 45,
            "totalPages": 3,
            "first": True,
            "last": False,
            "numberOfElements": 20,
        },
        {
            "number": 1,
            "size": 20,
            "totalElements": 45,
            "totalPages": 3,
            "first": False,
            "last": False,
            "numberOfElements": 20,
        },
        {
            "number": 2,
            "size": 20,
            "totalElements": 45,
            "totalPages": 3,
            "first": False,
            "last": True,
            "numberOfElements": 5,
        },
        {
            "number": 3,
            "size": 20,
            "totalElements": 45,
            "totalPages": 3,
            "first": False,
            "last": True,
            "numberOfElements": 0,
        },
    ]
    assert [e for p in pages for e in evse_ids(p)] == ids
    record = pages[0]["content"][0]
    assert record["OperatorID"] == CPO_ID and record["OperatorName"] == OPERATOR_NAME and "lastUpdate" in record
    assert "deltaType" not in record

    # defaults: page 0 of 20
    default = await pull(pair, http, body)
    assert page_fields(default) == page_fields(pages[0]) and evse_ids(default) == evse_ids(pages[0])
    # the largest page holds everything: a single page that is first and last
    whole = await pull(pair, http, body, "?size=2000")
    assert page_fields(whole) == {
        "number": 0,
        "size": 2000,
        "totalElements": 45,
        "totalPages": 1,
        "first": True,
        "last": True,
        "numberOfElements": 45,
    }


async def test_empty_result(pair: Pair, http: aiohttp.ClientSession) -> None:
    for query in ("", "?page=0&size=5", "?page=7&size=5"):
        answer = await pull(pair, http, {"CountryCodes": [NOWHERE]}, query)
        number = 7 if "page=7" in query else 0
        assert answer["content"] == []
        assert page_fields(answer) == {
            "number": number,
            "size": 5 if query else 20,
            "totalElements": 0,
            "totalPages": 0,
            "first": number == 0,
            "last": True,
            "numberOfElements": 0,
        }


async def test_filters(pair: Pair, http: aiohttp.ClientSession, seeded: Seeded) -> None:
    north = moved(*MUNICH, 2.0, 0)
    far = moved(*MUNICH, 30.0, 90)
    await seeded.apply(
        "insert",
        [
            evse_record("DE*GEF*EPDF1", country=NORWAY),
            evse_record("DE*GEF*EPDF2", country=NORWAY, authentication_modes=("REMOTE", "PnC"), renewable=False),
            evse_record("DE*GEF*EPDF3", country=NORWAY, accessibility="Restricted access", open_24_hours=False),
            evse_record("DE*GEF*EPDF4", country=NORWAY, calibration="External", hubject_compatible=False),
            evse_record("DE*GEF*EPDF5", country=NORWAY, latitude=north[0], longitude=north[1]),
            evse_record("DE*GEF*EPDF6", country=NORWAY, latitude=far[0], longitude=far[1]),
        ],
        datetime.now(UTC),
    )
    base = {"CountryCodes": [NORWAY]}
    cases: list[tuple[dict[str, Any], list[int]]] = [
        ({}, [1, 2, 3, 4, 5, 6]),
        ({"OperatorIds": [CPO_ID]}, [1, 2, 3, 4, 5, 6]),
        ({"OperatorIds": ["DE*XYZ"]}, []),
        ({"CountryCodes": [NORWAY, ICELAND], "OperatorIds": ["DEGEF"]}, [1, 2, 3, 4, 5, 6]),
        ({"AuthenticationModes": ["PnC"]}, [2]),
        ({"AuthenticationModes": ["PnC", "NFC RFID Classic"]}, [1, 2, 3, 4, 5, 6]),
        ({"Accessibility": ["Restricted access"]}, [3]),
        ({"CalibrationLawDataAvailability": ["External", "Not Available"]}, [4]),
        ({"RenewableEnergy": False}, [2]),
        ({"IsHubjectCompatible": False}, [4]),
        ({"IsOpen24Hours": False}, [3]),
        ({"IsOpen24Hours": True, "IsHubjectCompatible": True, "RenewableEnergy": True}, [1, 5, 6]),
        # 5 km around Munich, the centre given in DegreeMinuteSeconds: all but the one 30 km east
        (
            {
                "SearchCenter": {
                    "GeoCoordinates": {
                        "DegreeMinuteSeconds": {"Latitude": "48°8'13.7544''", "Longitude": "11°34'34.0464''"}
                    },
                    "Radius": 5,
                }
            },
            [1, 2, 3, 4, 5],
        ),
        (
            {
                "SearchCenter": {
                    "GeoCoordinates": {"Google": {"Coordinates": f"{far[0]:.6f},{far[1]:.6f}"}},
                    "Radius": 0.5,
                }
            },
            [6],
        ),
    ]
    for filters, expected in cases:
        answer = await pull(pair, http, {**base, **filters}, "?size=100")
        assert evse_ids(answer) == [f"DE*GEF*EPDF{n}" for n in expected], filters
        assert answer["totalElements"] == len(expected)


@pytest.mark.parametrize("fmt", ["Google", "DecimalDegree", "DegreeMinuteSeconds"])
async def test_coordinates_in_the_requested_format(
    pair: Pair, http: aiohttp.ClientSession, seeded: Seeded, fmt: str
) -> None:
    latitude, longitude = -33.868820, 151.209296  # south and east: signs must survive every format
    data = evse_record(f"DE*GEF*EPDGEO{fmt.upper()}", country=MALTA, latitude=latitude, longitude=longitude).to_oicp()
    data["GeoChargingPointEntrance"] = {"Google": {"Coordinates": "-33.868900 151.209000"}}
    await seeded.apply("insert", [EvseDataRecord.from_oicp(data)], datetime.now(UTC))

    answer = await pull(pair, http, {"CountryCodes": [MALTA], "GeoCoordinatesResponseFormat": fmt}, "?size=10")
    (record,) = [r for r in answer["content"] if r["EvseID"] == f"DE*GEF*EPDGEO{fmt.upper()}"]
    for name, expected in (
        ("GeoCoordinates", (latitude, longitude)),
        ("GeoChargingPointEntrance", (-33.8689, 151.209)),
    ):
        assert list(record[name]) == [fmt], record[name]
        got = lat_lon_of_oicp(record[name])
        assert math.isclose(got[0], expected[0], abs_tol=1e-6) and math.isclose(got[1], expected[1], abs_tol=1e-6)
    if fmt == "Google":
        assert record["GeoCoordinates"] == {"Google": {"Coordinates": "-33.868820 151.209296"}}
    if fmt == "DegreeMinuteSeconds":
        assert record["GeoCoordinates"]["DegreeMinuteSeconds"]["Latitude"].startswith("-33°52'")


async def test_last_call_returns_the_changes_with_delta_types(
    pair: Pair, http: aiohttp.ClientSession, seeded: Seeded
) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0)
    t1, t2 = t0 + timedelta(seconds=1), t0 + timedelta(seconds=2)
    records = {n: evse_record(f"DE*GEF*EPDD{n}", country=ICELAND, **RARE_FIELDS) for n in (1, 2, 3)}
    await seeded.apply("insert", list(records.values()), t0)
    await seeded.apply("insert", [evse_record("DE*GEF*EPDD4", **RARE_FIELDS)], t1)
    await seeded.apply("update", [evse_record("DE*GEF*EPDD2", name="Renamed", **RARE_FIELDS)], t1)
    await seeded.apply("delete", [records[3]], t2)

    answer = await pull(pair, http, {**RARE, "LastCall": format_oicp_datetime(t0 + timedelta(milliseconds=500))})
    assert [(r["EvseID"], r["deltaType"]) for r in answer["content"]] == [
        ("DE*GEF*EPDD2", "update"),
        ("DE*GEF*EPDD3", "delete"),
        ("DE*GEF*EPDD4", "insert"),
    ]
    assert page_fields(answer)["totalElements"] == 3
    deleted = answer["content"][1]
    assert deleted["Address"]["Country"] == ICELAND and deleted["lastUpdate"] == format_oicp_datetime(t2)

    # A LastCall in another time zone means the same instant.
    local = (t0 + timedelta(milliseconds=1500)).astimezone(INDIA)
    answer = await pull(pair, http, {**RARE, "LastCall": format_oicp_datetime(local)})
    assert [(r["EvseID"], r["deltaType"]) for r in answer["content"]] == [("DE*GEF*EPDD3", "delete")]
    # Without LastCall: the live records, no deltaType.
    answer = await pull(pair, http, RARE)
    assert evse_ids(answer) == ["DE*GEF*EPDD1", "DE*GEF*EPDD2", "DE*GEF*EPDD4"]
    assert all("deltaType" not in r for r in answer["content"])


LAST_CALL = "2026-03-01T12:00:00Z"
INDIA = timezone(timedelta(hours=5, minutes=30))
SEARCH_CENTER = {"GeoCoordinates": {"Google": {"Coordinates": "48.137154 11.576124"}}, "Radius": 10}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"CountryCodes": ["DEU"]}, ["LastCall", "CountryCodes"]),
        ({"OperatorIds": [CPO_ID]}, ["LastCall", "OperatorIds"]),
        ({"CountryCodes": ["DEU"], "OperatorIds": [CPO_ID]}, ["LastCall", "CountryCodes", "OperatorIds"]),
        ({"SearchCenter": SEARCH_CENTER}, ["LastCall", "SearchCenter"]),
    ],
    ids=["CountryCodes", "OperatorIds", "both", "SearchCenter"],
)
async def test_last_call_cannot_be_combined(
    pair: Pair, http: aiohttp.ClientSession, body: dict[str, Any], named: list[str]
) -> None:
    answer = await pull(pair, http, {"LastCall": LAST_CALL, **body}, ok=False)
    assert answer["Result"] is False and answer["StatusCode"]["Code"] == "022"
    for name in named:
        assert name in answer["StatusCode"]["AdditionalInfo"], answer


async def test_last_call_with_empty_lists_and_other_filters_is_fine(pair: Pair, http: aiohttp.ClientSession) -> None:
    await pull(
        pair, http, {"LastCall": LAST_CALL, "CountryCodes": [], "OperatorIds": [], **RARE, "IsOpen24Hours": True}
    )


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("?page=-1", "page"),
        ("?page=abc", "page"),
        ("?page=1.5", "page"),
        ("?page=", "page"),
        ("?size=0", "size"),
        ("?size=-20", "size"),
        ("?size=ten", "size"),
        ("?size=2001", "size"),
        ("?page=0&size=100000", "size"),
        ("?page=99999999999999999999&size=20", "page"),
    ],
)
async def test_bad_page_parameters_are_refused_naming_them(
    pair: Pair, http: aiohttp.ClientSession, query: str, named: str
) -> None:
    answer = await pull(pair, http, {"CountryCodes": [NOWHERE]}, query, ok=False)
    assert answer["StatusCode"]["Code"] == "022"
    assert f"query parameter {named}=" in answer["StatusCode"]["AdditionalInfo"], answer


async def test_search_center_that_cannot_be_searched_is_refused(pair: Pair, http: aiohttp.ClientSession) -> None:
    centre = {"GeoCoordinates": {"DecimalDegree": {"Latitude": "89.5", "Longitude": "10.0"}}, "Radius": 1}
    answer = await pull(pair, http, {"SearchCenter": centre}, ok=False)
    assert answer["StatusCode"]["Code"] == "022" and "SearchCenter" in answer["StatusCode"]["AdditionalInfo"]
    centre = {"GeoCoordinates": {"DecimalDegree": {"Latitude": "99.5", "Longitude": "10.0"}}, "Radius": 1}
    answer = await pull(pair, http, {"SearchCenter": centre}, ok=False)
    assert answer["StatusCode"]["Code"] == "022" and "SearchCenter" in answer["StatusCode"]["AdditionalInfo"]


async def test_another_peer_cannot_pull_in_the_emps_name(pair: Pair, http: aiohttp.ClientSession) -> None:
    url = f"{pair.cpo.oicp_url}{PATH}"
    body = {"ProviderID": EMP_ID, "GeoCoordinatesResponseFormat": "Google"}
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {SINK_CALLS_CPO}"}) as response:
        answer = await response.json(content_type=None)
    assert answer["StatusCode"]["Code"] == "017"
    validate_response(url, answer, acknowledgement_ok=True)
