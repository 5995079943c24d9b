"""Base class and scalar types shared by all OICP 2.3 models.

Conventions (see DIGEST §0):

* Python attribute names are snake_case; every field carries ``alias=`` = the exact OICP name, which is
  the name used on OUTPUT.  Spelling variants listed in DIGEST §11.2 are accepted on INPUT through
  ``validation_alias=AliasChoices(...)`` (the canonical name is always the first choice).
* Unknown keys are ignored (``extra="ignore"``): the published examples carry undeclared fields.
* Date/Time values must carry a time-zone offset (``AwareDatetime``) and are written back with the offset
  they arrived with.  An offset of zero is always written as ``Z`` (``+00:00`` input comes out as ``Z``;
  both are RFC 3339 ``date-time``).  Sub-second precision is kept: none -> ``hh:mm:ss``, whole
  milliseconds -> ``hh:mm:ss.fff``, otherwise microseconds.
* Decimal values (kWh, prices, km) are held as :class:`decimal.Decimal` (no float rounding surprises) and
  written as JSON numbers: integral values as integers, others as floats.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer

__all__ = [
    "KWh",
    "Km",
    "OICPDateTime",
    "OICPDecimal",
    "OICPModel",
    "format_oicp_datetime",
]


def format_oicp_datetime(value: datetime) -> str:
    """ISO 8601 / RFC 3339 text of an aware datetime, keeping its original UTC offset."""
    offset = value.utcoffset()
    if offset is None:  # pragma: no cover - AwareDatetime guarantees an offset
        raise ValueError("OICP Date/Time values need a time-zone offset")
    if value.microsecond == 0:
        timespec = "seconds"
    elif value.microsecond % 1000 == 0:
        timespec = "milliseconds"
    else:
        timespec = "microseconds"
    text = value.replace(tzinfo=None).isoformat(timespec=timespec)
    if offset == timedelta(0):
        return text + "Z"
    sign = "+" if offset > timedelta(0) else "-"
    total = abs(int(offset.total_seconds()))
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    suffix = f"{sign}{hours:02d}:{minutes:02d}"
    if seconds:  # not expressible in RFC 3339; keep the information rather than lose it
        suffix += f":{seconds:02d}"
    return text + suffix


def _decimal_to_json(value: Decimal) -> int | float:
    if value == value.to_integral_value():
        return int(value)
    return float(value)


#: Date/Time with mandatory offset, serialised with the offset it was received with.
OICPDateTime = Annotated[AwareDatetime, PlainSerializer(format_oicp_datetime, return_type=str, when_used="json")]

#: Any decimal number, written as a JSON number.
OICPDecimal = Annotated[Decimal, PlainSerializer(_decimal_to_json, return_type=int | float, when_used="json")]

#: "Decimal (,3)" energy in kWh (at most three fractional digits, adoc).
KWh = Annotated[
    Decimal,
    Field(decimal_places=3, allow_inf_nan=False),
    PlainSerializer(_decimal_to_json, return_type=int | float, when_used="json"),
]

#: "Decimal (4,1)" distance in km (SearchCenter.Radius).
Km = Annotated[
    Decimal,
    Field(max_digits=4, decimal_places=1, ge=0, allow_inf_nan=False),
    PlainSerializer(_decimal_to_json, return_type=int | float, when_used="json"),
]


class OICPModel(BaseModel):
    """Base class of every OICP 2.3 body and nested type."""

    model_config = ConfigDict(
        populate_by_name=True,
        extra="ignore",
        str_strip_whitespace=False,
        frozen=False,
    )

    def to_oicp(self) -> dict[str, Any]:
        """The JSON document to send: OICP field names, no ``null`` members, JSON-native values."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    @classmethod
    def from_oicp(cls, data: object) -> Self:
        """Validate a decoded JSON document (raises :class:`pydantic.ValidationError`)."""
        return cls.model_validate(data)


class AssembledBody:
    """An outbound OICP body assembled from values this node validated when it stored them, sent as
    it is. A status lane builds one per request from its outbox (up to ``batch_size`` records): a
    round through the models (validate, then dump again) was 11 % of evse_push's CPU with 100 peers
    (bench status_fanout). A unit test checks that what the lanes assemble validates."""

    __slots__ = ("document",)

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def to_oicp(self) -> dict[str, Any]:
        return self.document
