"""Geo coordinates in the three OICP formats (DIGEST §4, §7.3) and great-circle distances.

Everything here works on ``(latitude, longitude)`` pairs of floats in WGS84 degrees. Parsing accepts
what the models accept (the published patterns) and additionally refuses values that are not positions
on Earth (latitude beyond ±90°, longitude beyond ±180°, minutes or seconds of 60 and more), so callers can
tell "unusable coordinates" from valid ones. Rendering produces strings that match the published patterns:

* Google ``"<lat> <lon>"`` and DecimalDegree with 6 decimals (the patterns allow at most 6; 1e-6° is
  at most 0.11 m),
* DegreeMinuteSeconds ``-D°M'S.SSSS''`` with 4 decimals of a second (≈ 3 mm); the sign belongs to the
  degrees, which is the only place the pattern allows it.
"""

from __future__ import annotations

import math
import re
from typing import Any

from shared.oicp.types import (
    DecimalDegreeCoordinates,
    DegreeMinuteSecondsCoordinates,
    GeoCoordinates,
    GeoCoordinatesResponseFormat,
    GoogleCoordinates,
)

__all__ = [
    "EARTH_RADIUS_KM",
    "GeoFormatError",
    "LatLon",
    "convert_oicp",
    "distance_km",
    "lat_lon_of",
    "lat_lon_of_oicp",
    "parse_decimal_degree",
    "parse_degree_minute_seconds",
    "parse_google",
    "render",
    "render_oicp",
]

LatLon = tuple[float, float]

#: The sphere Redis uses for GEOSEARCH (src/geohash_helper.c). Using the same radius keeps a distance
#: computed here and the radius search of the EVSE data store in agreement to the metre.
EARTH_RADIUS_KM = 6372.797560856

DECIMAL_PLACES = 6
SECOND_DECIMAL_PLACES = 4
MAX_LATITUDE = 90.0
MAX_LONGITUDE = 180.0

_NUMBER = r"-?1?\d{1,2}\.\d{1,6}"
_GOOGLE = re.compile(rf"^({_NUMBER})\s*,?\s*({_NUMBER})$")
_DECIMAL = re.compile(rf"^{_NUMBER}$")
_DMS = re.compile(r"^(-?)(1?\d{1,2})°[ ]?(\d{1,2})'[ ]?(\d{1,2}\.\d+)''$")


class GeoFormatError(ValueError):
    """A coordinate string that is not in the expected format or not a position on Earth."""


def _checked(latitude: float, longitude: float) -> LatLon:
    if not -MAX_LATITUDE <= latitude <= MAX_LATITUDE:
        raise GeoFormatError(f"latitude {latitude} is outside -90..90")
    if not -MAX_LONGITUDE <= longitude <= MAX_LONGITUDE:
        raise GeoFormatError(f"longitude {longitude} is outside -180..180")
    return latitude, longitude


def parse_google(coordinates: str) -> LatLon:
    """``"47.662249 9.360922"`` (latitude first; space and/or comma between) -> (lat, lon)."""
    match = _GOOGLE.match(coordinates)
    if not match:
        raise GeoFormatError(f"not Google coordinates: {coordinates!r}")
    return _checked(float(match.group(1)), float(match.group(2)))


def parse_decimal_degree(value: str) -> float:
    """``"-21.568201"`` -> -21.568201."""
    if not _DECIMAL.match(value):
        raise GeoFormatError(f"not a decimal degree: {value!r}")
    return float(value)


def parse_degree_minute_seconds(value: str) -> float:
    """``"9°21'39.32''"`` -> 9.360922; the sign is read from the text (``-0°30'0.0''`` is -0.5)."""
    match = _DMS.match(value)
    if not match:
        raise GeoFormatError(f"not degree-minute-seconds: {value!r}")
    sign, degrees, minutes, seconds = match.group(1), int(match.group(2)), int(match.group(3)), float(match.group(4))
    if minutes >= 60 or seconds >= 60:
        raise GeoFormatError(f"minutes and seconds must be below 60: {value!r}")
    magnitude = degrees + minutes / 60 + seconds / 3600
    return -magnitude if sign else magnitude


def lat_lon_of(geo: GeoCoordinates) -> LatLon:
    """(latitude, longitude) of a GeoCoordinates model, whichever of its formats is filled."""
    if geo.google is not None:
        return parse_google(geo.google.coordinates)
    if geo.decimal_degree is not None:
        return _checked(
            parse_decimal_degree(geo.decimal_degree.latitude), parse_decimal_degree(geo.decimal_degree.longitude)
        )
    if geo.degree_minute_seconds is not None:
        return _checked(
            parse_degree_minute_seconds(geo.degree_minute_seconds.latitude),
            parse_degree_minute_seconds(geo.degree_minute_seconds.longitude),
        )
    raise GeoFormatError("GeoCoordinates without any format")  # pragma: no cover - the model forbids it


def lat_lon_of_oicp(data: Any) -> LatLon:
    """(latitude, longitude) of GeoCoordinates in OICP JSON; GeoFormatError for anything unusable."""
    try:
        geo = GeoCoordinates.from_oicp(data)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise GeoFormatError(f"not GeoCoordinates: {exc}") from exc
    return lat_lon_of(geo)


def _decimal(value: float) -> str:
    text = f"{value:.{DECIMAL_PLACES}f}"
    # "-0.000000" matches the pattern too, but a signed zero only confuses readers.
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _degree_minute_seconds(value: float) -> str:
    # Round once, in whole units of the last second decimal, so that 59.99996'' carries into the minute.
    unit = 10**SECOND_DECIMAL_PLACES
    total = round(abs(value) * 3600 * unit)
    degrees, rest = divmod(total, 3600 * unit)
    minutes, seconds = divmod(rest, 60 * unit)
    sign = "-" if value < 0 and total > 0 else ""
    return f"{sign}{degrees}°{minutes}'{seconds / unit:.{SECOND_DECIMAL_PLACES}f}''"


def render(latitude: float, longitude: float, fmt: GeoCoordinatesResponseFormat | str) -> GeoCoordinates:
    """A GeoCoordinates model holding (latitude, longitude) in the format ``fmt`` (validated by the model)."""
    _checked(latitude, longitude)
    match GeoCoordinatesResponseFormat(fmt):
        case GeoCoordinatesResponseFormat.GOOGLE:
            return GeoCoordinates(google=GoogleCoordinates(coordinates=f"{_decimal(latitude)} {_decimal(longitude)}"))
        case GeoCoordinatesResponseFormat.DECIMAL_DEGREE:
            return GeoCoordinates(
                decimal_degree=DecimalDegreeCoordinates(latitude=_decimal(latitude), longitude=_decimal(longitude))
            )
        case GeoCoordinatesResponseFormat.DEGREE_MINUTE_SECONDS:
            return GeoCoordinates(
                degree_minute_seconds=DegreeMinuteSecondsCoordinates(
                    latitude=_degree_minute_seconds(latitude), longitude=_degree_minute_seconds(longitude)
                )
            )
    raise AssertionError(fmt)  # pragma: no cover - GeoCoordinatesResponseFormat() refused anything else


def render_oicp(latitude: float, longitude: float, fmt: GeoCoordinatesResponseFormat | str) -> dict[str, Any]:
    """Like :func:`render`, as OICP JSON."""
    return render(latitude, longitude, fmt).to_oicp()


def _decimal_degree_of(data: Any) -> LatLon | None:
    """(latitude, longitude) of ``{"DecimalDegree": {"Latitude": …, "Longitude": …}}`` and nothing
    else, read without building the models; None for any other shape (the caller takes the model
    path). Raises GeoFormatError like :func:`lat_lon_of_oicp` for a value that is no decimal degree."""
    if type(data) is not dict or len(data) != 1:
        return None
    inner = data.get("DecimalDegree")
    if type(inner) is not dict or len(inner) != 2:
        return None
    latitude, longitude = inner.get("Latitude"), inner.get("Longitude")
    if type(latitude) is not str or type(longitude) is not str:
        return None
    return _checked(parse_decimal_degree(latitude), parse_decimal_degree(longitude))


def convert_oicp(data: Any, fmt: GeoCoordinatesResponseFormat | str) -> Any:
    """GeoCoordinates JSON re-rendered in ``fmt``; unusable coordinates are returned unchanged (a
    stored record must still be served even if its coordinates cannot be converted).

    The common case — decimal degrees in, decimal degrees or Google out (every record of a
    PullEvseData page, twice) — is done on the JSON directly: the models cost about 10 µs per
    coordinate, most of a 2,000-record page's time. The output is the one ``render_oicp`` gives."""
    try:
        fast = _decimal_degree_of(data)
        if fast is not None and fmt == GeoCoordinatesResponseFormat.DECIMAL_DEGREE:
            return {"DecimalDegree": {"Latitude": _decimal(fast[0]), "Longitude": _decimal(fast[1])}}
        if fast is not None and fmt == GeoCoordinatesResponseFormat.GOOGLE:
            return {"Google": {"Coordinates": f"{_decimal(fast[0])} {_decimal(fast[1])}"}}
        latitude, longitude = fast or lat_lon_of_oicp(data)
    except GeoFormatError:
        return data
    return render_oicp(latitude, longitude, fmt)


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance in km on the sphere of :data:`EARTH_RADIUS_KM`."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    d_phi = phi2 - phi1
    d_lambda = math.radians(lon2 - lon1)
    h = math.sin(d_phi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(d_lambda / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))
