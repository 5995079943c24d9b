"""Geo coordinates: parsing the three OICP formats, rendering them so they validate, distances."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import pytest

from shared.oicp.geo import (
    EARTH_RADIUS_KM,
    GeoFormatError,
    convert_oicp,
    distance_km,
    lat_lon_of,
    lat_lon_of_oicp,
    parse_decimal_degree,
    parse_degree_minute_seconds,
    parse_google,
    render,
    render_oicp,
)
from shared.oicp.types import GeoCoordinates, GeoCoordinatesResponseFormat
from tests.oicp_schema import load_spec

VECTORS_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "oicp" / "vectors"
FORMATS = list(GeoCoordinatesResponseFormat)
# 6 decimals of a degree are the resolution of Google/DecimalDegree (half a unit of rounding error);
# DegreeMinuteSeconds with 4 decimals of a second is far finer (1.4e-8°).
TOLERANCE_DEGREES = 0.5e-6 + 1e-12

POINTS = [
    (52.480495, 13.356465),  # Berlin, the spec vectors' point
    (-33.868820, 151.209296),  # Sydney: southern and eastern
    (-22.906847, -43.172897),  # Rio de Janeiro: southern and western
    (40.712776, -74.005974),  # New York: northern and western
    (-0.5, -0.25),  # negative values whose degrees are 0: the sign must survive DMS
    (0.0, 0.0),
    (89.999999, 179.999999),
    (-90.0, -180.0),
    (47.999999999, 8.0000001),  # rounding carries seconds into minutes and degrees
]


@pytest.mark.parametrize(("source", "target"), list(itertools.product(FORMATS, FORMATS)), ids=str)
@pytest.mark.parametrize("point", POINTS, ids=str)
def test_round_trip_between_every_pair_of_formats(
    point: tuple[float, float], source: GeoCoordinatesResponseFormat, target: GeoCoordinatesResponseFormat
) -> None:
    first = render(*point, source)
    # The JSON goes through the model again: every rendered string matches the published patterns.
    second = GeoCoordinates.from_oicp(render_oicp(*lat_lon_of(first), target))
    latitude, longitude = lat_lon_of(second)
    assert abs(latitude - point[0]) <= 2 * TOLERANCE_DEGREES
    assert abs(longitude - point[1]) <= 2 * TOLERANCE_DEGREES
    assert [k for k, v in second.to_oicp().items() if v] == [target.value]


def test_rendered_strings_match_the_openapi_patterns() -> None:
    schema = load_spec("emp")["paths"]["/evsepull/v23/providers/{providerID}/data-records"]["post"]
    geo = schema["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["content"]["items"]
    properties = geo["properties"]["GeoCoordinates"]["properties"]
    for point, fmt in itertools.product(POINTS, FORMATS):
        rendered = render_oicp(*point, fmt)[fmt.value]
        for name, value in rendered.items():
            pattern = properties[fmt.value]["properties"][name]["pattern"]
            assert re.match(pattern, value), (fmt, name, value)


def test_spec_examples() -> None:
    # DIGEST §4 examples: "47.662249 9.360922", "-21.568201", "9°21'39.32''" (= 9.360922)
    assert parse_google("47.662249 9.360922") == (47.662249, 9.360922)
    assert parse_google("47.662249,9.360922") == (47.662249, 9.360922)
    assert parse_google("47.662249 , 9.360922") == (47.662249, 9.360922)
    assert parse_decimal_degree("-21.568201") == -21.568201
    assert parse_degree_minute_seconds("9°21'39.32''") == pytest.approx(9.360922, abs=1e-6)
    assert parse_degree_minute_seconds("9° 21' 39.32''") == pytest.approx(9.360922, abs=1e-6)
    assert render(47.662249, 9.360922, "Google").google.coordinates == "47.662249 9.360922"  # type: ignore[union-attr]
    dms = render(0, 9.360922, "DegreeMinuteSeconds").degree_minute_seconds
    assert dms is not None and dms.longitude == "9°21'39.3192''"


def test_spec_vectors() -> None:
    """Every GeoCoordinates of the published examples parses to the same point, whatever its format."""
    found = 0
    for path in sorted(VECTORS_DIR.glob("*.json")):
        for geo in _geo_objects(json.loads(path.read_text())):
            for fmt, value in geo.items():
                if fmt not in {"Google", "DecimalDegree", "DegreeMinuteSeconds"} or "string" in json.dumps(value):
                    continue  # the OpenAPI placeholder examples
                latitude, longitude = lat_lon_of_oicp({fmt: value})
                found += 1
                if fmt == "DegreeMinuteSeconds":  # the one DMS example is 9°21'39.32'' for both
                    assert latitude == longitude == pytest.approx(9.360922, abs=1e-6)
                else:
                    assert (latitude, longitude) == (52.480495, 13.356465)
    assert found >= 5


def _geo_objects(node: object) -> list[dict[str, object]]:
    if isinstance(node, list):
        return [g for item in node for g in _geo_objects(item)]
    if not isinstance(node, dict):
        return []
    found = [v for k, v in node.items() if k in {"GeoCoordinates", "GeoChargingPointEntrance"} and isinstance(v, dict)]
    return found + [g for v in node.values() for g in _geo_objects(v)]


def test_southern_and_western_hemispheres_keep_their_sign() -> None:
    dms = render(-22.906847, -43.172897, "DegreeMinuteSeconds").degree_minute_seconds
    assert dms is not None
    assert dms.latitude.startswith("-22°54'") and dms.longitude.startswith("-43°10'")
    small = render(-0.5, -0.25, "DegreeMinuteSeconds").degree_minute_seconds
    assert small is not None and (small.latitude, small.longitude) == ("-0°30'0.0000''", "-0°15'0.0000''")
    assert parse_degree_minute_seconds("-0°30'0.0''") == -0.5
    assert render(-0.0000001, 0, "DecimalDegree").decimal_degree.latitude == "0.000000"  # type: ignore[union-attr]


def test_rounding_carries_into_minutes_and_degrees() -> None:
    dms = render(47.99999999, 0, "DegreeMinuteSeconds").degree_minute_seconds
    assert dms is not None and dms.latitude == "48°0'0.0000''"


@pytest.mark.parametrize(
    "bad",
    ["91.000000 0.0", "0.0 181.0", "52.48", "52.480495", "abc", "52.480495 13.356465 1.0"],
)
def test_unusable_google_coordinates(bad: str) -> None:
    with pytest.raises(GeoFormatError):
        parse_google(bad)


@pytest.mark.parametrize("bad", ["9°60'0.0''", "9°21'60.0''", "9°21'39''", "9.5", "9°21'39.32'"])
def test_unusable_degree_minute_seconds(bad: str) -> None:
    with pytest.raises(GeoFormatError):
        parse_degree_minute_seconds(bad)


def test_out_of_range_is_refused() -> None:
    with pytest.raises(GeoFormatError):
        lat_lon_of_oicp({"DecimalDegree": {"Latitude": "95.0", "Longitude": "10.0"}})
    with pytest.raises(GeoFormatError):
        lat_lon_of_oicp({"DecimalDegree": {"Latitude": "5.0"}})
    with pytest.raises(GeoFormatError):
        render(91, 0, "Google")


def test_convert_oicp() -> None:
    converted = convert_oicp({"Google": {"Coordinates": "52.480495 13.356465"}}, "DecimalDegree")
    assert converted == {"DecimalDegree": {"Latitude": "52.480495", "Longitude": "13.356465"}}
    unusable = {"DecimalDegree": {"Latitude": "95.0", "Longitude": "10.0"}}
    assert convert_oicp(unusable, "Google") is unusable


def test_distance() -> None:
    assert distance_km(52.5, 13.4, 52.5, 13.4) == 0
    # a quarter meridian
    assert distance_km(0, 0, 90, 0) == pytest.approx(math.pi / 2 * EARTH_RADIUS_KM)
    # Berlin - Munich, about 504 km
    assert distance_km(52.520008, 13.404954, 48.135125, 11.581981) == pytest.approx(504, abs=2)
    # symmetric, and across the antimeridian the short way
    assert distance_km(-33.9, 151.2, 40.7, -74.0) == pytest.approx(distance_km(40.7, -74.0, -33.9, 151.2))
    assert distance_km(0, 179.5, 0, -179.5) == pytest.approx(math.radians(1) * EARTH_RADIUS_KM)
