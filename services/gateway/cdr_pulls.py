"""GetChargeDetailRecords on the CPO face (DIGEST §1.2 item 6, §9.10, §9.5): an EMP peer reads its
CDRs from the node's CDR outbox, one page at a time, from the outbox's indexes.

Only CDRs owned by the caller (the EMP the node delivers them to) are ever returned. ``From``/``To``
select by when this node received the CDR from its charge point backend (as Hubject: "received by
the HBS"), both inclusive; ``SessionID``, ``OperatorID`` and ``CDRForwarded`` (delivered to the EMP
or not yet) narrow it. ``page``/``size`` as for PullEvseData (default 20, at most 2000, 022 beyond).
"""

from __future__ import annotations

from starlette.requests import Request

from services.gateway.context import GatewayContext
from services.gateway.evse_data_pulls import MAX_PAGE_NUMBER, _BadRequest, _query_int
from shared.oicp import (
    DEFAULT_PAGE_SIZE,
    MAX_CDR_PAGE_SIZE,
    ChargeDetailRecord,
    ChargeDetailRecordsPage,
    GetChargeDetailRecordsRequest,
    OICPModel,
    StatusCode,
    StatusCodeValue,
)
from shared.oicp.messages import Pageable, Sort
from shared.oicp.operations import Operation
from shared.settings import PeerConfig


async def get_charge_detail_records(
    ctx: GatewayContext,
    operation: Operation,
    caller: PeerConfig,
    body: GetChargeDetailRecordsRequest,
    request: Request,
) -> OICPModel:
    from services.gateway.oicp_face import Refusal  # oicp_face imports the handlers

    try:
        page = _query_int(request, "page", 0, minimum=0, maximum=MAX_PAGE_NUMBER)
        size = _query_int(request, "size", DEFAULT_PAGE_SIZE, minimum=1, maximum=MAX_CDR_PAGE_SIZE)
        if body.from_ > body.to:
            raise _BadRequest("From must not be later than To")
    except _BadRequest as exc:
        raise Refusal(StatusCodeValue.DATA_ERROR, str(exc), "invalid_query") from exc
    records, total = await ctx.cdr_outbox.query(
        caller.key,
        body.from_,
        body.to,
        session_ids=body.session_id,
        operator_id=body.operator_id,
        forwarded=body.cdr_forwarded,
        offset=page * size,
        limit=size,
    )
    content = [ChargeDetailRecord.from_oicp(record) for record in records]
    # The store pages server-side; the page fields come from the helper ChargeDetailRecordsPage.page uses.
    return ChargeDetailRecordsPage(
        content=content,
        status_code=StatusCode.of(StatusCodeValue.SUCCESS),
        empty=not content,
        pageable=Pageable(
            sort=Sort(sorted=False, empty=True, unsorted=True),
            page_size=size,
            page_number=page,
            offset=page * size,
            paged=True,
            unpaged=False,
        ),
        **ChargeDetailRecordsPage._page_fields(total, page, size, len(content)),
    )
