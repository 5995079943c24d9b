"""PullEvseData on the CPO face (DIGEST §1.2 item 10, §9.2, §9.5), answered from the node's own EVSE data
read model one page at a time.

Decisions where the spec is silent:

* ``size`` above 2000 is refused with 022 naming ``size`` rather than clamped: 2000 is the maximum the
  spec states for the other paged pull (GetChargeDetailRecords), and a client that asked for more and
  silently got fewer per page would compute wrong page numbers. ``size`` below 1, a ``page`` above the
  largest page number of Hubject's (Java int) pages, or a ``page`` or ``size`` that is not a
  non-negative integer, is refused the same way.
* A page past the end is not an error: empty ``content`` with the correct totals (Spring behaviour).
* LastCall with SearchCenter, CountryCodes or OperatorIds is refused with 022 naming the fields (the
  model already refuses LastCall with SearchCenter while validating the body). Empty lists count as
  absent.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field
from starlette.requests import Request

from services.gateway.context import GatewayContext
from shared.oicp import (
    DEFAULT_PAGE_SIZE,
    MAX_CDR_PAGE_SIZE,
    EvseDataResponse,
    OICPModel,
    PullEvseDataRequest,
    StatusCode,
    StatusCodeValue,
)
from shared.oicp.geo import GeoFormatError, convert_oicp
from shared.oicp.operations import Operation
from shared.settings import PeerConfig
from shared.stores.evse_data import EvseDataQuery

MAX_EVSE_DATA_PAGE_SIZE = MAX_CDR_PAGE_SIZE
MAX_PAGE_NUMBER = 2**31 - 1
GEO_FIELDS = ("GeoCoordinates", "GeoChargingPointEntrance")
_DIGITS = re.compile(r"^[0-9]+$")


class _BadRequest(ValueError):
    """A request this operation refuses with 022; the message names the parameter or fields."""


def _query_int(request: Request, name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not _DIGITS.match(raw.strip()):
        raise _BadRequest(f"query parameter {name}={raw!r} must be a non-negative integer")
    value = int(raw)
    if value < minimum:
        raise _BadRequest(f"query parameter {name}={value} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise _BadRequest(f"query parameter {name}={value} must be at most {maximum}")
    return value


def _checked_query(body: PullEvseDataRequest) -> EvseDataQuery:
    if body.last_call is not None:
        combined = [
            name
            for name, value in (
                ("SearchCenter", body.search_center),
                ("CountryCodes", body.country_codes),
                ("OperatorIds", body.operator_ids),
            )
            if value
        ]
        if combined:
            raise _BadRequest(f"LastCall cannot be combined with {', '.join(combined)}")
    try:
        return EvseDataQuery.from_request(body)
    except GeoFormatError as exc:
        raise _BadRequest(f"SearchCenter.GeoCoordinates: {exc}") from exc


async def pull_evse_data(
    ctx: GatewayContext, operation: Operation, caller: PeerConfig, body: PullEvseDataRequest, request: Request
) -> OICPModel:
    """One page of the node's own EVSE records matching the filters, coordinates in the requested format."""
    from services.gateway.oicp_face import Refusal  # oicp_face imports the handlers

    try:
        page = _query_int(request, "page", 0, minimum=0, maximum=MAX_PAGE_NUMBER)
        size = _query_int(request, "size", DEFAULT_PAGE_SIZE, minimum=1, maximum=MAX_EVSE_DATA_PAGE_SIZE)
        query = _checked_query(body)
        records, total = await ctx.own_data.query(query, page, size)
    except _BadRequest as exc:
        # The pipeline answers a Refusal with error_answer (an eRoamingAcknowledgement) and counts it.
        raise Refusal(StatusCodeValue.DATA_ERROR, str(exc), "invalid_query") from exc
    except GeoFormatError as exc:  # a search centre Redis cannot search around (beyond ±85°)
        raise Refusal(StatusCodeValue.DATA_ERROR, f"SearchCenter.GeoCoordinates: {exc}", "invalid_query") from exc
    fmt = body.geo_coordinates_response_format
    content = [
        {**record, **{name: convert_oicp(record[name], fmt) for name in GEO_FIELDS if name in record}}
        for record in records
    ]
    # The store pages server-side, so EvseDataResponse.page (which slices a full list) does not fit;
    # the page fields come from the same helper it uses.
    return StoredEvseDataPage(
        content=content,
        status_code=StatusCode.of(StatusCodeValue.SUCCESS),
        **EvseDataResponse._page_fields(total, page, size, len(content)),
    )


class StoredEvseDataPage(EvseDataResponse):
    """EvseDataResponse whose ``content`` is the read model's PullEvseDataRecord JSON as it is.

    Every stored record was validated as an EvseDataRecord when it was stored and is kept as that
    model's OICP JSON; the store adds OperatorID, OperatorName, lastUpdate and deltaType from values
    it validated too. Validating each record into a PullEvseDataRecord and dumping it again on every
    pull gave the same JSON (field order aside) and took about half of a 2,000-record page's time
    (bench ``full_load``, py-spy)."""

    content: list[dict[str, Any]] = Field(alias="content")  # type: ignore[assignment]

    def to_oicp(self) -> dict[str, Any]:
        return {
            "content": self.content,
            **self.model_dump(by_alias=True, exclude_none=True, mode="json", exclude={"content"}),
        }
