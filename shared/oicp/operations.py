"""The OICP 2.3 operation catalogue of a P2P node (DIGEST §3.1, §3.2): which face serves which
path, with which request and response bodies.

``Face.CPO`` is what a node with the CPO role serves (called by EMP peers: the paths of Hubject's
``oicp-2.3-emp-hub.yaml``); ``Face.EMP`` what a node with the EMP role serves (called by CPO peers:
``oicp-2.3-cpo-hub.yaml``). The path parameter always names the originator (DIGEST §1.1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from shared.oicp import messages as m
from shared.oicp.base import OICPModel


class Face(StrEnum):
    CPO = "cpo"
    EMP = "emp"


class ErrorShape(StrEnum):
    """How a refusal is expressed: most operations answer an eRoamingAcknowledgement; the
    authorization operations answer their own type with ``AuthorizationStatus=NotAuthorized``."""

    ACKNOWLEDGEMENT = "acknowledgement"
    AUTHORIZATION_START = "authorization_start"
    AUTHORIZATION_STOP = "authorization_stop"


@dataclass(frozen=True)
class Operation:
    name: str
    face: Face
    path: str  # with the /api/oicp prefix, Starlette/str.format placeholders
    request: Callable[[object], OICPModel]
    response: type[OICPModel]
    error_shape: ErrorShape = ErrorShape.ACKNOWLEDGEMENT
    paged: bool = False

    @property
    def path_param(self) -> str | None:
        if "{operatorID}" in self.path:
            return "operatorID"
        if "{providerID}" in self.path:
            return "providerID"
        return None

    @property
    def openapi_path(self) -> str:
        """The key of this operation in Hubject's OpenAPI ``paths`` (without the /api/oicp prefix)."""
        path = self.path.removeprefix("/api/oicp")
        return path.removesuffix("-by-id").removesuffix("-by-operator-id")


_P = "/api/oicp"

OPERATIONS: tuple[Operation, ...] = (
    # ---- CPO face: called by EMP peers ----
    Operation(
        "AuthorizeRemoteStart",
        Face.CPO,
        f"{_P}/charging/v21/providers/{{providerID}}/authorize-remote/start",
        m.AuthorizeRemoteStartRequest.model_validate,
        m.Acknowledgement,
    ),
    Operation(
        "AuthorizeRemoteStop",
        Face.CPO,
        f"{_P}/charging/v21/providers/{{providerID}}/authorize-remote/stop",
        m.AuthorizeRemoteStopRequest.model_validate,
        m.Acknowledgement,
    ),
    Operation(
        "AuthorizeRemoteReservationStart",
        Face.CPO,
        f"{_P}/reservation/v11/providers/{{providerID}}/reservation-start-request",
        m.AuthorizeRemoteReservationStartRequest.model_validate,
        m.Acknowledgement,
    ),
    Operation(
        "AuthorizeRemoteReservationStop",
        Face.CPO,
        f"{_P}/reservation/v11/providers/{{providerID}}/reservation-stop-request",
        m.AuthorizeRemoteReservationStopRequest.model_validate,
        m.Acknowledgement,
    ),
    Operation(
        "PullEvseData",
        Face.CPO,
        f"{_P}/evsepull/v23/providers/{{providerID}}/data-records",
        m.PullEvseDataRequest.model_validate,
        m.EvseDataResponse,
        paged=True,
    ),
    # One OpenAPI path, three bodies told apart by their fields (DIGEST §11.4 item 38) ...
    Operation(
        "PullEvseStatus",
        Face.CPO,
        f"{_P}/evsepull/v21/providers/{{providerID}}/status-records",
        m.parse_pull_evse_status,
        m.EvseStatusResponse,
    ),
    # ... and the snippet paths of the variants (DIGEST §11.1 item 1): both are served.
    Operation(
        "PullEvseStatusById",
        Face.CPO,
        f"{_P}/evsepull/v21/providers/{{providerID}}/status-records-by-id",
        m.PullEvseStatusByIdRequest.model_validate,
        m.EvseStatusByIdResponse,
    ),
    Operation(
        "PullEvseStatusByOperatorId",
        Face.CPO,
        f"{_P}/evsepull/v21/providers/{{providerID}}/status-records-by-operator-id",
        m.PullEvseStatusByOperatorIdRequest.model_validate,
        m.EvseStatusResponse,
    ),
    Operation(
        "PullPricingProductData",
        Face.CPO,
        f"{_P}/dynamicpricing/v10/providers/{{providerID}}/pricing-products",
        m.PullPricingProductDataRequest.model_validate,
        m.PricingProductDataResponse,
    ),
    Operation(
        "PullEVSEPricing",
        Face.CPO,
        f"{_P}/dynamicpricing/v10/providers/{{providerID}}/evse-pricing",
        m.PullEvsePricingRequest.model_validate,
        m.EvsePricingResponse,
    ),
    Operation(
        "GetChargeDetailRecords",
        Face.CPO,
        f"{_P}/cdrmgmt/v22/providers/{{providerID}}/get-charge-detail-records-request",
        m.GetChargeDetailRecordsRequest.model_validate,
        m.ChargeDetailRecordsPage,
        paged=True,
    ),
    Operation(
        "PushAuthenticationData",
        Face.CPO,
        f"{_P}/authdata/v21/providers/{{providerID}}/push-request",
        m.PushAuthenticationDataRequest.model_validate,
        m.Acknowledgement,
    ),
    # ---- EMP face: called by CPO peers ----
    Operation(
        "AuthorizeStart",
        Face.EMP,
        f"{_P}/charging/v21/operators/{{operatorID}}/authorize/start",
        m.AuthorizeStartRequest.model_validate,
        m.AuthorizationStartResponse,
        error_shape=ErrorShape.AUTHORIZATION_START,
    ),
    Operation(
        "AuthorizeStop",
        Face.EMP,
        f"{_P}/charging/v21/operators/{{operatorID}}/authorize/stop",
        m.AuthorizeStopRequest.model_validate,
        m.AuthorizationStopResponse,
        error_shape=ErrorShape.AUTHORIZATION_STOP,
    ),
    Operation(
        "ChargeDetailRecord",
        Face.EMP,
        f"{_P}/cdrmgmt/v22/operators/{{operatorID}}/charge-detail-record",
        m.ChargeDetailRecord.model_validate,
        m.Acknowledgement,
    ),
    Operation(
        "ChargingNotification",
        Face.EMP,
        f"{_P}/notificationmgmt/v11/charging-notifications",
        m.parse_charging_notification,
        m.Acknowledgement,
    ),
    Operation(
        "PushEvseData",
        Face.EMP,
        f"{_P}/evsepush/v23/operators/{{operatorID}}/data-records",
        m.PushEvseDataRequest.model_validate,
        m.Acknowledgement,
    ),
    Operation(
        "PushEvseStatus",
        Face.EMP,
        f"{_P}/evsepush/v21/operators/{{operatorID}}/status-records",
        m.PushEvseStatusRequest.model_validate,
        m.Acknowledgement,
    ),
    Operation(
        "PushPricingProductData",
        Face.EMP,
        f"{_P}/dynamicpricing/v10/operators/{{operatorID}}/pricing-products",
        m.PushPricingProductDataRequest.model_validate,
        m.Acknowledgement,
    ),
    Operation(
        "PushEVSEPricing",
        Face.EMP,
        f"{_P}/dynamicpricing/v10/operators/{{operatorID}}/evse-pricing",
        m.PushEvsePricingRequest.model_validate,
        m.Acknowledgement,
    ),
)

OPERATIONS_BY_NAME: dict[str, Operation] = {op.name: op for op in OPERATIONS}
