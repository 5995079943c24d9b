"""Handlers of the OICP operations the gateway serves, one function per operation.

A handler receives a validated body from a caller whose IDs were checked. Pushes and the operations
a worker decides (authorization, sessions, CDRs) go to their worker by request/reply and are answered
with its reply; pulls are answered from the Redis read models.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request

from services.gateway.cdr_pulls import get_charge_detail_records
from services.gateway.context import GatewayContext
from services.gateway.evse_data_pulls import pull_evse_data
from services.gateway.pricing_pulls import pull_evse_pricing, pull_pricing_product_data
from shared.bus.envelope import utc_now
from shared.bus.messages import (
    AuthDataIngest,
    AuthorizeStartIngest,
    AuthorizeStopIngest,
    CdrIngest,
    CommandType,
    EvseDataIngest,
    EvsePricingIngest,
    EvseStatusIngest,
    NotificationIngest,
    Payload,
    PricingProductsIngest,
    RemoteStartIngest,
    RemoteStopIngest,
    ReservationStartIngest,
    ReservationStopIngest,
)
from shared.oicp import (
    Acknowledgement,
    EvseStatus,
    EvseStatusByIdResponse,
    EvseStatusRecord,
    EvseStatusResponse,
    OICPModel,
    OperatorEvseStatus,
    PullEvseStatusByIdRequest,
    PullEvseStatusByOperatorIdRequest,
    PullEvseStatusRequest,
    PushEvseDataRequest,
    PushEvsePricingRequest,
    PushEvseStatusRequest,
    PushPricingProductDataRequest,
    StatusCodeValue,
)
from shared.oicp.geo import GeoFormatError, lat_lon_of
from shared.oicp.operations import Operation
from shared.settings import PeerConfig
from shared.stores.evse_data import EvseDataQuery
from shared.stores.evse_status import StoredStatus

AREA_PAGE_SIZE = 2000  # EVSEs read from the geo index per round trip

Handler = Callable[[GatewayContext, Operation, PeerConfig, Any, Request], Awaitable[OICPModel]]


async def _ingest(ctx: GatewayContext, command: CommandType, payload: Payload, request: Request) -> OICPModel:
    """A push from a CPO peer: the evse_push worker applies it (ActionType semantics) and replies;
    the peer's answer is that reply, so 000 means stored and 009 carries the conflicting records.
    No reply within the deadline raises BusUnavailable: an OICP error, never a false success."""
    reply = await ctx.rpc.request(
        command,
        payload,
        timeout=ctx.settings.oicp.request_timeout_seconds,
        correlation_id=request.headers.get("x-correlation-id"),
    )
    return Acknowledgement.ok() if reply.ok else Acknowledgement.error(reply.code, reply.info)


async def push_evse_status(
    ctx: GatewayContext, operation: Operation, caller: PeerConfig, body: PushEvseStatusRequest, request: Request
) -> OICPModel:
    payload = EvseStatusIngest(peer_id=caller.id, received_at=utc_now(), request=body)
    return await _ingest(ctx, CommandType.EMP_EVSE_STATUS_INGEST, payload, request)


async def push_evse_data(
    ctx: GatewayContext, operation: Operation, caller: PeerConfig, body: PushEvseDataRequest, request: Request
) -> OICPModel:
    payload = EvseDataIngest(peer_id=caller.id, received_at=utc_now(), request=body)
    return await _ingest(ctx, CommandType.EMP_EVSE_DATA_INGEST, payload, request)


async def push_pricing_product_data(
    ctx: GatewayContext, operation: Operation, caller: PeerConfig, body: PushPricingProductDataRequest, request: Request
) -> OICPModel:
    payload = PricingProductsIngest(peer_id=caller.id, received_at=utc_now(), request=body)
    return await _ingest(ctx, CommandType.EMP_PRICING_PRODUCTS_INGEST, payload, request)


async def push_evse_pricing(
    ctx: GatewayContext, operation: Operation, caller: PeerConfig, body: PushEvsePricingRequest, request: Request
) -> OICPModel:
    # PushEVSEPricing names its operator only in the path (checked to be the caller's).
    operator_id = request.path_params.get("operatorID", caller.id)
    payload = EvsePricingIngest(peer_id=caller.id, operator_id=operator_id, received_at=utc_now(), request=body)
    return await _ingest(ctx, CommandType.EMP_EVSE_PRICING_INGEST, payload, request)


def forward(command: CommandType, payload_type: type[Payload]) -> Handler:
    """An operation decided by a worker (authorization, sessions): the validated body goes to it as
    ``payload_type(peer_id, received_at, request)`` by request/reply, and its reply is the answer -
    the whole OICP answer when the worker gives one, else an acknowledgement of its code."""

    async def handler(
        ctx: GatewayContext, operation: Operation, caller: PeerConfig, body: OICPModel, request: Request
    ) -> OICPModel:
        from services.gateway.oicp_face import error_answer

        payload = payload_type(peer_id=caller.id, received_at=utc_now(), request=body)
        reply = await ctx.rpc.request(
            command,
            payload,
            timeout=ctx.reply_timeout(command),
            correlation_id=request.headers.get("x-correlation-id"),
        )
        if reply.answer is not None:
            return operation.response.model_validate(reply.answer)
        if reply.ok:
            return Acknowledgement.ok(reply.session_id)
        return error_answer(operation, reply.code, reply.info)

    return handler


def _operator_statuses(grouped: dict[str, list[StoredStatus]], wanted: EvseStatus | None) -> list[OperatorEvseStatus]:
    return [
        OperatorEvseStatus(
            operator_id=operator_id,
            evse_status_record=[
                EvseStatusRecord(evse_id=s.evse_id, evse_status=EvseStatus(s.status))
                for s in records
                if wanted is None or s.status == wanted.value
            ],
        )
        for operator_id, records in grouped.items()
    ]


async def pull_evse_status(
    ctx: GatewayContext, operation: Operation, caller: PeerConfig, body: OICPModel, request: Request
) -> OICPModel:
    """All three PullEvseStatus variants, from the CPO's own status read model."""
    if isinstance(body, PullEvseStatusByIdRequest):
        return await pull_evse_status_by_id(ctx, operation, caller, body, request)
    if isinstance(body, PullEvseStatusByOperatorIdRequest):
        grouped = await ctx.own_status.by_operator(list(body.operator_id))
        return EvseStatusResponse.of(_operator_statuses(grouped, None))
    assert isinstance(body, PullEvseStatusRequest)
    if body.search_center is not None:
        return EvseStatusResponse.of(await _statuses_in_area(ctx, body))
    grouped = await ctx.own_status.by_operator()
    return EvseStatusResponse.of(_operator_statuses(grouped, body.evse_status))


async def _statuses_in_area(ctx: GatewayContext, body: PullEvseStatusRequest) -> list[OperatorEvseStatus]:
    """The statuses of the EVSEs within the SearchCenter's radius: the EVSE data's geo index finds
    them (the status model has no coordinates), then their statuses are read by ID."""
    from services.gateway.oicp_face import Refusal

    assert body.search_center is not None
    try:
        query = EvseDataQuery(
            search_center=(*lat_lon_of(body.search_center.geo_coordinates), float(body.search_center.radius))
        )
    except GeoFormatError as exc:
        raise Refusal(StatusCodeValue.DATA_ERROR, f"SearchCenter.GeoCoordinates: {exc}", "invalid_body") from exc
    operators: dict[str, str] = {}
    page = 0
    while True:
        records, total = await ctx.own_data.query(query, page, AREA_PAGE_SIZE)
        operators.update({r["EvseID"]: r["OperatorID"] for r in records})
        page += 1
        if page * AREA_PAGE_SIZE >= total or not records:
            break
    statuses = await ctx.own_status.get_many(sorted(operators)) if operators else {}
    grouped: dict[str, list[StoredStatus]] = {}
    for evse_id, stored in statuses.items():
        if stored is not None:
            grouped.setdefault(operators[evse_id], []).append(stored)
    return _operator_statuses(grouped, body.evse_status)


async def pull_evse_status_by_id(
    ctx: GatewayContext, operation: Operation, caller: PeerConfig, body: PullEvseStatusByIdRequest, request: Request
) -> OICPModel:
    found = await ctx.own_status.get_many(list(body.evse_id))
    return EvseStatusByIdResponse.of(
        [
            EvseStatusRecord(
                evse_id=evse_id, evse_status=EvseStatus(stored.status) if stored else EvseStatus.EVSE_NOT_FOUND
            )
            for evse_id, stored in found.items()
        ]
    )


HANDLERS: dict[str, Handler] = {
    "PushEvseStatus": push_evse_status,
    "PushEvseData": push_evse_data,
    "PushPricingProductData": push_pricing_product_data,
    "PushEVSEPricing": push_evse_pricing,
    "PullEvseData": pull_evse_data,
    "PullEvseStatus": pull_evse_status,
    "PullEvseStatusById": pull_evse_status_by_id,
    "PullEvseStatusByOperatorId": pull_evse_status,
    "PullPricingProductData": pull_pricing_product_data,
    "PullEVSEPricing": pull_evse_pricing,
    "AuthorizeStart": forward(CommandType.EMP_AUTHORIZE_START, AuthorizeStartIngest),
    "AuthorizeStop": forward(CommandType.EMP_AUTHORIZE_STOP, AuthorizeStopIngest),
    "PushAuthenticationData": forward(CommandType.CPO_AUTH_DATA_INGEST, AuthDataIngest),
    "ChargingNotification": forward(CommandType.EMP_NOTIFICATION_INGEST, NotificationIngest),
    "AuthorizeRemoteStart": forward(CommandType.CPO_REMOTE_START_INGEST, RemoteStartIngest),
    "AuthorizeRemoteStop": forward(CommandType.CPO_REMOTE_STOP_INGEST, RemoteStopIngest),
    "AuthorizeRemoteReservationStart": forward(CommandType.CPO_RESERVATION_START_INGEST, ReservationStartIngest),
    "AuthorizeRemoteReservationStop": forward(CommandType.CPO_RESERVATION_STOP_INGEST, ReservationStopIngest),
    "ChargeDetailRecord": forward(CommandType.EMP_CDR_INGEST, CdrIngest),
    "GetChargeDetailRecords": get_charge_detail_records,
}
