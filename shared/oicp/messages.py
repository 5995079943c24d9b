"""Request and response bodies of the 20 OICP 2.3 operations (DIGEST §1.2)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    model_validator,
)

from shared.oicp.base import KWh, OICPDateTime, OICPModel
from shared.oicp.status import Acknowledgement, PartnerSessionId, SessionId, StatusCode, StatusCodeValue
from shared.oicp.types import (
    Accessibility,
    ActionType,
    AuthenticationMode,
    AuthorizationStatus,
    CalibrationLawDataAvailability,
    CalibrationLawVerification,
    CountryCode,
    ErrorClassField,
    EvseId,
    EvsePricing,
    EvseStatus,
    EvseStatusRecord,
    GeoCoordinatesResponseFormat,
    Identification,
    MeterValueInBetweenField,
    OperatorEvseData,
    OperatorEvsePricing,
    OperatorEvseStatus,
    OperatorId,
    PricingProductData,
    ProductId,
    ProviderAuthenticationData,
    ProviderId,
    PullEvseDataRecord,
    SearchCenter,
    SignedMeteringValue,
)

# ERRATUM §11.2 item 7: EMPPartnerSessionID (adoc, every example, every other message) is OUTPUT;
# EMPPartnerSessionId (oas schema of the two reservation requests) is accepted.
_EMP_PARTNER_SESSION_ID = AliasChoices("EMPPartnerSessionID", "EMPPartnerSessionId")


class _SessionFields(OICPModel):
    cpo_partner_session_id: PartnerSessionId | None = Field(None, alias="CPOPartnerSessionID")
    emp_partner_session_id: PartnerSessionId | None = Field(
        None, alias="EMPPartnerSessionID", validation_alias=_EMP_PARTNER_SESSION_ID
    )


# ==================================================================================================
# 1/2 Authorization
# ==================================================================================================


class AuthorizeStartRequest(_SessionFields):
    """eRoamingAuthorizeStart (CPO -> EMP)."""

    operator_id: OperatorId = Field(alias="OperatorID")
    identification: Identification = Field(alias="Identification")
    evse_id: EvseId | None = Field(None, alias="EvseID")
    session_id: SessionId | None = Field(None, alias="SessionID")
    partner_product_id: ProductId | None = Field(None, alias="PartnerProductID")


class AuthorizationStartResponse(_SessionFields):
    """eRoamingAuthorizationStart."""

    session_id: SessionId | None = Field(None, alias="SessionID")
    provider_id: ProviderId | None = Field(None, alias="ProviderID")
    authorization_status: AuthorizationStatus = Field(alias="AuthorizationStatus")
    status_code: StatusCode = Field(alias="StatusCode")
    authorization_stop_identifications: list[Identification] | None = Field(
        None, alias="AuthorizationStopIdentifications"
    )

    @classmethod
    def authorized(
        cls,
        session_id: str,
        provider_id: str,
        *,
        cpo_partner_session_id: str | None = None,
        emp_partner_session_id: str | None = None,
        authorization_stop_identifications: list[Identification] | None = None,
    ) -> Self:
        return cls(
            session_id=session_id,
            provider_id=provider_id,
            authorization_status=AuthorizationStatus.AUTHORIZED,
            status_code=StatusCode.of(StatusCodeValue.SUCCESS),
            cpo_partner_session_id=cpo_partner_session_id,
            emp_partner_session_id=emp_partner_session_id,
            authorization_stop_identifications=authorization_stop_identifications,
        )

    @classmethod
    def not_authorized(
        cls,
        code: StatusCodeValue | str,
        additional_info: str | None = None,
        *,
        session_id: str | None = None,
        provider_id: str | None = None,
        cpo_partner_session_id: str | None = None,
        emp_partner_session_id: str | None = None,
    ) -> Self:
        return cls(
            session_id=session_id,
            provider_id=provider_id,
            authorization_status=AuthorizationStatus.NOT_AUTHORIZED,
            status_code=StatusCode.of(code, additional_info),
            cpo_partner_session_id=cpo_partner_session_id,
            emp_partner_session_id=emp_partner_session_id,
        )


class AuthorizeStopRequest(_SessionFields):
    """eRoamingAuthorizeStop.  (The published examples carry PartnerProductID, which is not a field of
    this message - ignored, ERRATUM §11.3 item 23.)"""

    session_id: SessionId = Field(alias="SessionID")
    operator_id: OperatorId = Field(alias="OperatorID")
    identification: Identification = Field(alias="Identification")
    evse_id: EvseId | None = Field(None, alias="EvseID")


class AuthorizationStopResponse(_SessionFields):
    """eRoamingAuthorizationStop."""

    session_id: SessionId | None = Field(None, alias="SessionID")
    provider_id: ProviderId | None = Field(None, alias="ProviderID")
    authorization_status: AuthorizationStatus = Field(alias="AuthorizationStatus")
    status_code: StatusCode = Field(alias="StatusCode")

    @classmethod
    def authorized(cls, session_id: str, provider_id: str | None = None, **kwargs: Any) -> Self:
        return cls(
            session_id=session_id,
            provider_id=provider_id,
            authorization_status=AuthorizationStatus.AUTHORIZED,
            status_code=StatusCode.of(StatusCodeValue.SUCCESS),
            **kwargs,
        )

    @classmethod
    def not_authorized(cls, code: StatusCodeValue | str, additional_info: str | None = None, **kwargs: Any) -> Self:
        return cls(
            authorization_status=AuthorizationStatus.NOT_AUTHORIZED,
            status_code=StatusCode.of(code, additional_info),
            **kwargs,
        )


class AuthorizeRemoteStartRequest(_SessionFields):
    """eRoamingAuthorizeRemoteStart (EMP -> CPO).

    ERRATUM §11.3 item 19: SessionID is O in the EMP adoc, M in the CPO adoc and ``required`` in both oas.
    DECISION: optional on the model (in P2P the EMP node issues it; the CPO service layer decides whether
    to insist).  A body without SessionID does not validate against the oas request schema.
    """

    provider_id: ProviderId = Field(alias="ProviderID")
    evse_id: EvseId = Field(alias="EvseID")
    identification: Identification = Field(alias="Identification")
    session_id: SessionId | None = Field(None, alias="SessionID")
    partner_product_id: ProductId | None = Field(None, alias="PartnerProductID")


class AuthorizeRemoteStopRequest(_SessionFields):
    """eRoamingAuthorizeRemoteStop (EMP -> CPO)."""

    session_id: SessionId = Field(alias="SessionID")
    provider_id: ProviderId = Field(alias="ProviderID")
    evse_id: EvseId = Field(alias="EvseID")


# ==================================================================================================
# 7/8 Reservation
# ==================================================================================================


class AuthorizeRemoteReservationStartRequest(_SessionFields):
    """eRoamingAuthorizeRemoteReservationStart (EMP -> CPO).  SessionID optional (adoc O; see
    AuthorizeRemoteStartRequest).  Duration: minutes, 1-99 (field length 2, oas 1-99)."""

    provider_id: ProviderId = Field(alias="ProviderID")
    evse_id: EvseId = Field(alias="EvseID")
    identification: Identification = Field(alias="Identification")
    session_id: SessionId | None = Field(None, alias="SessionID")
    partner_product_id: ProductId | None = Field(None, alias="PartnerProductID")
    duration: Annotated[int, Field(ge=1, le=99)] | None = Field(None, alias="Duration")


class AuthorizeRemoteReservationStopRequest(_SessionFields):
    """eRoamingAuthorizeRemoteReservationStop (EMP -> CPO)."""

    session_id: SessionId = Field(alias="SessionID")
    provider_id: ProviderId = Field(alias="ProviderID")
    evse_id: EvseId = Field(alias="EvseID")


# ==================================================================================================
# 5/6 Charge detail records
# ==================================================================================================

MAX_SIGNED_METERING_VALUES = 10


class ChargeDetailRecord(_SessionFields):
    """eRoamingChargeDetailRecord (V2.2) - also the element type of the GetChargeDetailRecords page."""

    session_id: SessionId = Field(alias="SessionID")
    partner_product_id: ProductId | None = Field(None, alias="PartnerProductID")
    evse_id: EvseId = Field(alias="EvseID")
    identification: Identification = Field(alias="Identification")
    charging_start: OICPDateTime = Field(alias="ChargingStart")
    charging_end: OICPDateTime = Field(alias="ChargingEnd")
    session_start: OICPDateTime = Field(alias="SessionStart")
    session_end: OICPDateTime = Field(alias="SessionEnd")
    meter_value_start: KWh | None = Field(None, alias="MeterValueStart")
    meter_value_end: KWh | None = Field(None, alias="MeterValueEnd")
    meter_value_in_between: MeterValueInBetweenField | None = Field(None, alias="MeterValueInBetween")
    consumed_energy: KWh = Field(alias="ConsumedEnergy")
    # at most 10 (Start, Progress1..8, End), adoc + oas text
    signed_metering_values: (
        Annotated[list[SignedMeteringValue], Field(max_length=MAX_SIGNED_METERING_VALUES)] | None
    ) = Field(None, alias="SignedMeteringValues")
    calibration_law_verification_info: CalibrationLawVerification | None = Field(
        None, alias="CalibrationLawVerificationInfo"
    )
    hub_operator_id: OperatorId | None = Field(None, alias="HubOperatorID")
    # ERRATUM §11.2 item 8: HubProviderID (adoc, CPO oas, all examples) is OUTPUT; HubProviderId (EMP oas)
    # accepted.
    hub_provider_id: ProviderId | None = Field(
        None, alias="HubProviderID", validation_alias=AliasChoices("HubProviderID", "HubProviderId")
    )


def _single_operator_id(value: Any) -> Any:
    # ERRATUM §11.3 item 21: OperatorIDType (single string) in adoc table and oas, but the adoc snippet
    # sends an array.  DECISION: the oas single string is OUTPUT; a one-element array is accepted and
    # unwrapped, an empty array means "absent"; more than one OperatorID is refused (cannot be expressed
    # in the oas message).
    if isinstance(value, list):
        if not value:
            return None
        if len(value) == 1:
            return value[0]
        raise ValueError("only one OperatorID can be given (OperatorIDType is a single value)")
    return value


class GetChargeDetailRecordsRequest(OICPModel):
    """eRoamingGetChargeDetailRecords (V2.2); ``page``/``size`` are query parameters, not body fields."""

    provider_id: ProviderId = Field(alias="ProviderID")
    from_: OICPDateTime = Field(alias="From")
    to: OICPDateTime = Field(alias="To")
    session_id: list[SessionId] | None = Field(None, alias="SessionID")
    operator_id: Annotated[OperatorId | None, BeforeValidator(_single_operator_id)] = Field(None, alias="OperatorID")
    # ERRATUM §11.2 item 9: CDRForwarded (adoc, examples, release notes) is OUTPUT; CDRForwarder (EMP oas)
    # accepted.
    cdr_forwarded: StrictBool | None = Field(
        None, alias="CDRForwarded", validation_alias=AliasChoices("CDRForwarded", "CDRForwarder")
    )


class Sort(OICPModel):
    sorted: StrictBool | None = Field(None, alias="sorted")
    empty: StrictBool | None = Field(None, alias="empty")
    unsorted: StrictBool | None = Field(None, alias="unsorted")


class Pageable(OICPModel):
    sort: Sort | None = Field(None, alias="sort")
    page_size: int | None = Field(None, alias="pageSize")
    page_number: int | None = Field(None, alias="pageNumber")
    offset: int | None = Field(None, alias="offset")
    paged: StrictBool | None = Field(None, alias="paged")
    unpaged: StrictBool | None = Field(None, alias="unpaged")


class _Page(OICPModel):
    """Spring-style page fields shared by eRoamingEVSEData and eRoamingChargeDetailRecords."""

    number: Annotated[int, Field(ge=0)] = Field(alias="number")
    size: Annotated[int, Field(ge=0)] = Field(alias="size")
    total_elements: Annotated[int, Field(ge=0)] = Field(alias="totalElements")
    total_pages: Annotated[int, Field(ge=0)] = Field(alias="totalPages")
    first: StrictBool = Field(alias="first")
    last: StrictBool = Field(alias="last")
    number_of_elements: Annotated[int, Field(ge=0)] = Field(alias="numberOfElements")

    @staticmethod
    def _page_fields(total: int, page: int, size: int, returned: int) -> dict[str, Any]:
        total_pages = math.ceil(total / size) if size > 0 else 0
        return {
            "number": page,
            "size": size,
            "total_elements": total,
            "total_pages": total_pages,
            "first": page == 0,
            "last": page >= total_pages - 1,
            "number_of_elements": returned,
        }

    @staticmethod
    def _slice(records: Sequence[Any], page: int, size: int) -> list[Any]:
        """Page ``page`` (0-based) of ``size`` records; a page past the end is empty."""
        _check_page(page, size)
        return list(records[page * size : (page + 1) * size])


DEFAULT_PAGE_SIZE = 20
MAX_CDR_PAGE_SIZE = 2000


def _check_page(page: int, size: int) -> None:
    if page < 0 or size < 1:
        raise ValueError("page must be >= 0 and size >= 1")


class ChargeDetailRecordsPage(_Page):
    """eRoamingChargeDetailRecords: ``content`` + page fields + StatusCode (M) + pageable/empty (O)."""

    content: list[ChargeDetailRecord] = Field(alias="content")
    status_code: StatusCode = Field(alias="StatusCode")
    pageable: Pageable | None = Field(None, alias="pageable")
    empty: StrictBool | None = Field(None, alias="empty")

    @classmethod
    def page(
        cls,
        records: Sequence[ChargeDetailRecord],
        page: int = 0,
        size: int = DEFAULT_PAGE_SIZE,
        status_code: StatusCode | None = None,
    ) -> Self:
        """Slice ``records`` (all matches, in order) into page ``page`` of ``size`` (0-based)."""
        chunk = cls._slice(records, page, size)
        return cls(
            content=chunk,
            status_code=status_code or StatusCode.of(StatusCodeValue.SUCCESS),
            empty=not chunk,
            pageable=Pageable(
                sort=Sort(sorted=False, empty=True, unsorted=True),
                page_size=size,
                page_number=page,
                offset=page * size,
                paged=True,
                unpaged=False,
            ),
            **cls._page_fields(len(records), page, size, len(chunk)),
        )


# ==================================================================================================
# 9/10 EVSE data
# ==================================================================================================


class PushEvseDataRequest(OICPModel):
    """eRoamingPushEvseData (V2.3)."""

    action_type: ActionType = Field(alias="ActionType")
    operator_evse_data: OperatorEvseData = Field(alias="OperatorEvseData")


class PullEvseDataRequest(OICPModel):
    """eRoamingPullEvseData (V2.3); ``page``/``size`` are query parameters.

    Rule enforced (adoc): SearchCenter and LastCall cannot be combined (a published oas example does).
    """

    provider_id: ProviderId = Field(alias="ProviderID")
    search_center: SearchCenter | None = Field(None, alias="SearchCenter")
    last_call: OICPDateTime | None = Field(None, alias="LastCall")
    geo_coordinates_response_format: GeoCoordinatesResponseFormat = Field(alias="GeoCoordinatesResponseFormat")
    country_codes: list[CountryCode] | None = Field(None, alias="CountryCodes")
    # OperatorIds: lower-case "ds" everywhere (§11.2 item 17) - that is the real name.
    operator_ids: list[OperatorId] | None = Field(None, alias="OperatorIds")
    authentication_modes: list[AuthenticationMode] | None = Field(None, alias="AuthenticationModes")
    accessibility: list[Accessibility] | None = Field(None, alias="Accessibility")
    calibration_law_data_availability: list[CalibrationLawDataAvailability] | None = Field(
        None, alias="CalibrationLawDataAvailability"
    )
    renewable_energy: StrictBool | None = Field(None, alias="RenewableEnergy")
    is_hubject_compatible: StrictBool | None = Field(None, alias="IsHubjectCompatible")
    is_open_24_hours: StrictBool | None = Field(None, alias="IsOpen24Hours")

    @model_validator(mode="after")
    def _search_center_xor_last_call(self) -> Self:
        if self.search_center is not None and self.last_call is not None:
            raise ValueError("SearchCenter and LastCall cannot be combined")
        return self


class EvseDataResponse(_Page):
    """eRoamingEVSEData (V2.3): a FLAT page ``content: [PullEvseDataRecord]`` + page fields + StatusCode.

    (OICP 2.2's per-operator ``EvseData.OperatorEvseData`` grouping is gone in 2.3.)
    """

    content: list[PullEvseDataRecord] = Field(alias="content")
    status_code: StatusCode = Field(alias="StatusCode")

    @classmethod
    def page(
        cls,
        records: Sequence[PullEvseDataRecord],
        page: int = 0,
        size: int = DEFAULT_PAGE_SIZE,
        status_code: StatusCode | None = None,
    ) -> Self:
        """Slice ``records`` (all matches, in order) into page ``page`` of ``size`` (0-based)."""
        chunk = cls._slice(records, page, size)
        return cls(
            content=chunk,
            status_code=status_code or StatusCode.of(StatusCodeValue.SUCCESS),
            **cls._page_fields(len(records), page, size, len(chunk)),
        )


# ==================================================================================================
# 11-14 EVSE status
# ==================================================================================================


class PushEvseStatusRequest(OICPModel):
    """eRoamingPushEvseStatus (V2.1)."""

    action_type: ActionType = Field(alias="ActionType")
    operator_evse_status: OperatorEvseStatus = Field(alias="OperatorEvseStatus")


class PullEvseStatusRequest(OICPModel):
    """eRoamingPullEvseStatus (V2.1).

    ERRATUM §11.2 item 12: the filter is ``EVSEStatus`` (adoc table, oas schema) = OUTPUT; ``EvseStatus``
    (snippet, oas example) accepted.
    """

    provider_id: ProviderId = Field(alias="ProviderID")
    search_center: SearchCenter | None = Field(None, alias="SearchCenter")
    evse_status: EvseStatus | None = Field(
        None, alias="EVSEStatus", validation_alias=AliasChoices("EVSEStatus", "EvseStatus")
    )


MAX_EVSE_IDS_PER_STATUS_PULL = 100


class PullEvseStatusByIdRequest(OICPModel):
    """eRoamingPullEvseStatusByID (V2.1): at most 100 EvseIDs (adoc MUST, oas maxItems)."""

    provider_id: ProviderId = Field(alias="ProviderID")
    evse_id: Annotated[list[EvseId], Field(min_length=1, max_length=MAX_EVSE_IDS_PER_STATUS_PULL)] = Field(
        alias="EvseID"
    )


class PullEvseStatusByOperatorIdRequest(OICPModel):
    """eRoamingPullEvseStatusByOperatorID (V2.1)."""

    provider_id: ProviderId = Field(alias="ProviderID")
    operator_id: Annotated[list[OperatorId], Field(min_length=1)] = Field(alias="OperatorID")


class EvseStatuses(OICPModel):
    operator_evse_status: list[OperatorEvseStatus] = Field(alias="OperatorEvseStatus")


class EvseStatusResponse(OICPModel):
    """eRoamingEVSEStatus: ``{"EvseStatuses": {"OperatorEvseStatus": [...]}, "StatusCode": {...}}``
    (answer of PullEvseStatus and PullEvseStatusByOperatorID)."""

    evse_statuses: EvseStatuses = Field(alias="EvseStatuses")
    status_code: StatusCode | None = Field(None, alias="StatusCode")

    @classmethod
    def of(cls, operators: Sequence[OperatorEvseStatus], status_code: StatusCode | None = None) -> Self:
        return cls(
            evse_statuses=EvseStatuses(operator_evse_status=list(operators)),
            status_code=status_code or StatusCode.of(StatusCodeValue.SUCCESS),
        )


class EvseStatusRecords(OICPModel):
    evse_status_record: list[EvseStatusRecord] = Field(alias="EvseStatusRecord")


class EvseStatusByIdResponse(OICPModel):
    """eRoamingEVSEStatusByID: ``{"EVSEStatusRecords": {"EvseStatusRecord": [...]}, "StatusCode": {...}}``."""

    evse_status_records: EvseStatusRecords = Field(alias="EVSEStatusRecords")
    status_code: StatusCode | None = Field(None, alias="StatusCode")

    @classmethod
    def of(cls, records: Sequence[EvseStatusRecord], status_code: StatusCode | None = None) -> Self:
        return cls(
            evse_status_records=EvseStatusRecords(evse_status_record=list(records)),
            status_code=status_code or StatusCode.of(StatusCodeValue.SUCCESS),
        )


# ==================================================================================================
# 15-18 Dynamic pricing
# ==================================================================================================


class PushPricingProductDataRequest(OICPModel):
    action_type: ActionType = Field(alias="ActionType")
    pricing_product_data: PricingProductData = Field(alias="PricingProductData")


class PushEvsePricingRequest(OICPModel):
    action_type: ActionType = Field(alias="ActionType")
    evse_pricing: Annotated[list[EvsePricing], Field(min_length=1)] = Field(alias="EVSEPricing")


class PullPricingProductDataRequest(OICPModel):
    """eRoamingPullPricingProductData: no ProviderID in the body (it is in the path, §11.3 item 22)."""

    operator_ids: list[OperatorId] = Field(alias="OperatorIDs")
    last_call: OICPDateTime | None = Field(None, alias="LastCall")


class PullEvsePricingRequest(OICPModel):
    provider_id: ProviderId = Field(alias="ProviderID")
    operator_ids: list[OperatorId] = Field(alias="OperatorIDs")
    last_call: OICPDateTime | None = Field(None, alias="LastCall")


class PricingProductDataResponse(OICPModel):
    """eRoamingPricingProductData (the EMP snippet shows an eRoamingAcknowledgement instead, §11.3
    item 22 - clients must accept either shape)."""

    pricing_product_data: list[PricingProductData] = Field(alias="PricingProductData")
    status_code: StatusCode | None = Field(None, alias="StatusCode")


class EvsePricingResponse(OICPModel):
    """eRoamingEVSEPricing.  ERRATUM §11.2 item 15: ``EVSEPricing`` (oas, snippet) is OUTPUT;
    ``OperatorEVSEPricing`` (adoc) accepted."""

    evse_pricing: list[OperatorEvsePricing] = Field(
        alias="EVSEPricing", validation_alias=AliasChoices("EVSEPricing", "OperatorEVSEPricing")
    )
    status_code: StatusCode | None = Field(None, alias="StatusCode")


# ==================================================================================================
# 19 Charging notifications
# ==================================================================================================


class _ChargingNotificationBase(_SessionFields):
    """Fields common to the four notification types.

    ERRATUM §11.3 item 20: OperatorID is M in the CPO adoc and both oas, O (Start/Progress/End) or absent
    (Error) in the EMP adoc.  DECISION: required - the CPO edition governs what the CPO sends, and the oas
    requires it in all four alternatives.
    """

    session_id: SessionId = Field(alias="SessionID")
    evse_id: EvseId = Field(alias="EvseID")
    operator_id: OperatorId = Field(alias="OperatorID")
    identification: Identification | None = Field(None, alias="Identification")


class ChargingNotificationStartRequest(_ChargingNotificationBase):
    type: Literal["Start"] = Field("Start", alias="Type")
    charging_start: OICPDateTime = Field(alias="ChargingStart")
    session_start: OICPDateTime | None = Field(None, alias="SessionStart")
    meter_value_start: KWh | None = Field(None, alias="MeterValueStart")
    partner_product_id: ProductId | None = Field(None, alias="PartnerProductID")


class ChargingNotificationProgressRequest(_ChargingNotificationBase):
    """Rule enforced (adoc + Hubject): at least one of ChargingDuration / ConsumedEnergyProgress."""

    type: Literal["Progress"] = Field("Progress", alias="Type")
    charging_start: OICPDateTime = Field(alias="ChargingStart")
    event_occurred: OICPDateTime = Field(alias="EventOccurred")
    charging_duration: Annotated[int, Field(ge=0)] | None = Field(None, alias="ChargingDuration")
    session_start: OICPDateTime | None = Field(None, alias="SessionStart")
    consumed_energy_progress: KWh | None = Field(None, alias="ConsumedEnergyProgress")
    meter_value_start: KWh | None = Field(None, alias="MeterValueStart")
    meter_value_in_between: MeterValueInBetweenField | None = Field(None, alias="MeterValueInBetween")
    partner_product_id: ProductId | None = Field(None, alias="PartnerProductID")

    @model_validator(mode="after")
    def _duration_or_energy(self) -> Self:
        if self.charging_duration is None and self.consumed_energy_progress is None:
            raise ValueError(PROGRESS_AMOUNT_TEXT)
        return self


class ChargingNotificationEndRequest(_ChargingNotificationBase):
    type: Literal["End"] = Field("End", alias="Type")
    charging_start: OICPDateTime | None = Field(None, alias="ChargingStart")
    charging_end: OICPDateTime = Field(alias="ChargingEnd")
    session_start: OICPDateTime | None = Field(None, alias="SessionStart")
    session_end: OICPDateTime | None = Field(None, alias="SessionEnd")
    consumed_energy: KWh | None = Field(None, alias="ConsumedEnergy")
    meter_value_start: KWh | None = Field(None, alias="MeterValueStart")
    meter_value_end: KWh | None = Field(None, alias="MeterValueEnd")
    meter_value_in_between: MeterValueInBetweenField | None = Field(None, alias="MeterValueInBetween")
    partner_product_id: ProductId | None = Field(None, alias="PartnerProductID")
    penalty_time_start: OICPDateTime | None = Field(None, alias="PenaltyTimeStart")


class ChargingNotificationErrorRequest(_ChargingNotificationBase):
    type: Literal["Error"] = Field("Error", alias="Type")
    error_type: ErrorClassField = Field(alias="ErrorType")
    error_additional_info: Annotated[str, StringConstraints(max_length=250)] | None = Field(
        None, alias="ErrorAdditionalInfo"
    )


ChargingNotificationRequest = (
    ChargingNotificationStartRequest
    | ChargingNotificationProgressRequest
    | ChargingNotificationEndRequest
    | ChargingNotificationErrorRequest
)

CHARGING_NOTIFICATION_MODELS: dict[str, type[_ChargingNotificationBase]] = {
    "Start": ChargingNotificationStartRequest,
    "Progress": ChargingNotificationProgressRequest,
    "End": ChargingNotificationEndRequest,
    "Error": ChargingNotificationErrorRequest,
}


class _NotificationTypeProbe(OICPModel):
    type: Literal["Start", "Progress", "End", "Error"] = Field(alias="Type")


def parse_charging_notification(data: object) -> ChargingNotificationRequest:
    """Validate a charging notification, dispatching on ``Type`` (ERRATUM §11.4 item 38: the oas
    ``oneOf`` has no discriminator and overlapping alternatives).  Raises ValidationError (loc ``Type``
    for a missing/unknown type)."""
    probe = _NotificationTypeProbe.model_validate(data)
    return CHARGING_NOTIFICATION_MODELS[probe.type].model_validate(data)  # type: ignore[return-value]


#: Hubject's refusal texts for charging notifications (DIGEST §6.2), by the field that is wrong; a
#: refusal names the text first, then the field detail, so a partner's client that matches
#: Hubject's wording still recognises it.
NOTIFICATION_REFUSAL_TEXTS: dict[str, str] = {
    "EvseID": "Please add valid EVSEID",
    "ChargingStart": "Please provide Charging Start",
    "ChargingEnd": "Please provide Charging End",
    "ErrorType": "Please provide ErrorType",
    "EventOccurred": "Please provide Event Occurred",
}
PROGRESS_AMOUNT_TEXT = "Please provide either ChargingDuration or ConsumedEnergyProgress or both"


def notification_refusal_text(exc: ValidationError) -> str | None:
    """Hubject's text for the first error of a charging notification that it names, else None."""
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = tuple(error["loc"])
        if not loc and "ChargingDuration" in error["msg"]:
            return PROGRESS_AMOUNT_TEXT
        if loc and loc[0] in NOTIFICATION_REFUSAL_TEXTS:
            return NOTIFICATION_REFUSAL_TEXTS[str(loc[0])]
    return None


# ==================================================================================================
# 20 Authentication data
# ==================================================================================================


class PushAuthenticationDataRequest(OICPModel):
    action_type: ActionType = Field(alias="ActionType")
    provider_authentication_data: ProviderAuthenticationData = Field(alias="ProviderAuthenticationData")


PullEvseStatusAnyRequest = PullEvseStatusRequest | PullEvseStatusByIdRequest | PullEvseStatusByOperatorIdRequest


def parse_pull_evse_status(data: object) -> PullEvseStatusAnyRequest:
    """Validate a body posted to ``.../status-records``: ``EvseID`` present -> ByID, else ``OperatorID``
    present -> ByOperatorID, else plain PullEvseStatus (ERRATUM §11.4 item 38)."""
    if isinstance(data, dict):
        if "EvseID" in data or "evse_id" in data:
            return PullEvseStatusByIdRequest.model_validate(data)
        if "OperatorID" in data or "operator_id" in data:
            return PullEvseStatusByOperatorIdRequest.model_validate(data)
    return PullEvseStatusRequest.model_validate(data)


__all__ = [
    "CHARGING_NOTIFICATION_MODELS",
    "DEFAULT_PAGE_SIZE",
    "MAX_CDR_PAGE_SIZE",
    "MAX_EVSE_IDS_PER_STATUS_PULL",
    "MAX_SIGNED_METERING_VALUES",
    "Acknowledgement",
    "AuthorizationStartResponse",
    "AuthorizationStopResponse",
    "AuthorizeRemoteReservationStartRequest",
    "AuthorizeRemoteReservationStopRequest",
    "AuthorizeRemoteStartRequest",
    "AuthorizeRemoteStopRequest",
    "AuthorizeStartRequest",
    "AuthorizeStopRequest",
    "ChargeDetailRecord",
    "ChargeDetailRecordsPage",
    "ChargingNotificationEndRequest",
    "ChargingNotificationErrorRequest",
    "ChargingNotificationProgressRequest",
    "ChargingNotificationRequest",
    "ChargingNotificationStartRequest",
    "EvseDataResponse",
    "EvsePricingResponse",
    "EvseStatusByIdResponse",
    "EvseStatusRecords",
    "EvseStatusResponse",
    "EvseStatuses",
    "GetChargeDetailRecordsRequest",
    "Pageable",
    "PricingProductDataResponse",
    "PullEvseDataRequest",
    "PullEvsePricingRequest",
    "PullEvseStatusAnyRequest",
    "PullEvseStatusByIdRequest",
    "PullEvseStatusByOperatorIdRequest",
    "PullEvseStatusRequest",
    "PullPricingProductDataRequest",
    "PushAuthenticationDataRequest",
    "PushEvseDataRequest",
    "PushEvsePricingRequest",
    "PushEvseStatusRequest",
    "PushPricingProductDataRequest",
    "Sort",
    "parse_charging_notification",
    "parse_pull_evse_status",
]
