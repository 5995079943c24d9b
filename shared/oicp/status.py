"""StatusCodeType (DIGEST §6.1) and eRoamingAcknowledgement (§6.4)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import AliasChoices, Field, StrictBool, StringConstraints

from shared.oicp.base import OICPModel
from shared.oicp.ids import SESSION_ID_PATTERN

__all__ = [
    "STATUS_DESCRIPTIONS",
    "Acknowledgement",
    "PartnerSessionId",
    "SessionId",
    "StatusCode",
    "StatusCodeValue",
]

SessionId = Annotated[str, StringConstraints(pattern=SESSION_ID_PATTERN)]
#: CPOPartnerSessionID / EMPPartnerSessionID: free text, at most 250 characters.
PartnerSessionId = Annotated[str, StringConstraints(max_length=250)]

DESCRIPTION_MAX = 200
ADDITIONAL_INFO_MAX = 1000


class StatusCodeValue(StrEnum):
    """The 31 codes of StatusCodeType (complete list, DIGEST §6.1)."""

    SUCCESS = "000"
    HUBJECT_SYSTEM_ERROR = "001"
    HUBJECT_DATABASE_ERROR = "002"
    DATA_TRANSACTION_ERROR = "009"
    UNAUTHORIZED_ACCESS = "017"
    INCONSISTENT_EVSE_ID = "018"
    INCONSISTENT_EVCO_ID = "019"
    SYSTEM_ERROR = "021"
    DATA_ERROR = "022"
    QR_CODE_AUTHENTICATION_FAILED_INVALID_CREDENTIALS = "101"
    RFID_AUTHENTICATION_FAILED_INVALID_UID = "102"
    RFID_AUTHENTICATION_FAILED_CARD_NOT_READABLE = "103"
    PLC_AUTHENTICATION_FAILED_INVALID_EVCO_ID = "105"
    NO_POSITIVE_AUTHENTICATION_RESPONSE = "106"
    QR_CODE_APP_AUTHENTICATION_FAILED_TIME_OUT = "110"
    PLC_AUTHENTICATION_FAILED_INVALID_UNDERLYING_EVCO_ID = "120"
    PLC_AUTHENTICATION_FAILED_INVALID_CERTIFICATE = "121"
    PLC_AUTHENTICATION_FAILED_TIME_OUT = "122"
    EVCO_ID_LOCKED = "200"
    NO_VALID_CONTRACT = "210"
    PARTNER_NOT_FOUND = "300"
    PARTNER_DID_NOT_RESPOND = "310"
    SERVICE_NOT_AVAILABLE = "320"
    SESSION_IS_INVALID = "400"
    COMMUNICATION_TO_EVSE_FAILED = "501"
    NO_EV_CONNECTED_TO_EVSE = "510"
    EVSE_ALREADY_RESERVED = "601"
    EVSE_ALREADY_IN_USE = "602"
    UNKNOWN_EVSE_ID = "603"
    EVSE_ID_NOT_HUBJECT_COMPATIBLE = "604"
    EVSE_OUT_OF_SERVICE = "700"

    @property
    def description(self) -> str:
        """The standard Description text of this code."""
        return STATUS_DESCRIPTIONS[self]


#: Standard Description text per code (OICP 2.3 CPO/EMP adoc "StatusCodeType").
STATUS_DESCRIPTIONS: dict[StatusCodeValue, str] = {
    StatusCodeValue.SUCCESS: "Success",
    StatusCodeValue.HUBJECT_SYSTEM_ERROR: "Hubject system error",
    StatusCodeValue.HUBJECT_DATABASE_ERROR: "Hubject database error",
    StatusCodeValue.DATA_TRANSACTION_ERROR: "Data transaction error",
    StatusCodeValue.UNAUTHORIZED_ACCESS: "Unauthorized Access",
    StatusCodeValue.INCONSISTENT_EVSE_ID: "Inconsistent EvseID",
    StatusCodeValue.INCONSISTENT_EVCO_ID: "Inconsistent EvcoID",
    StatusCodeValue.SYSTEM_ERROR: "System error",
    StatusCodeValue.DATA_ERROR: "Data error",
    StatusCodeValue.QR_CODE_AUTHENTICATION_FAILED_INVALID_CREDENTIALS: (
        "QR Code Authentication failed - Invalid Credentials"
    ),
    StatusCodeValue.RFID_AUTHENTICATION_FAILED_INVALID_UID: "RFID Authentication failed - invalid UID",
    StatusCodeValue.RFID_AUTHENTICATION_FAILED_CARD_NOT_READABLE: ("RFID Authentication failed - card not readable"),
    StatusCodeValue.PLC_AUTHENTICATION_FAILED_INVALID_EVCO_ID: "PLC Authentication failed - invalid EvcoID",
    StatusCodeValue.NO_POSITIVE_AUTHENTICATION_RESPONSE: "No positive authentication response",
    StatusCodeValue.QR_CODE_APP_AUTHENTICATION_FAILED_TIME_OUT: ("QR Code App Authentication failed - time out error"),
    StatusCodeValue.PLC_AUTHENTICATION_FAILED_INVALID_UNDERLYING_EVCO_ID: (
        "PLC (ISO/IEC 15118) Authentication failed - invalid underlying EvcoID"
    ),
    StatusCodeValue.PLC_AUTHENTICATION_FAILED_INVALID_CERTIFICATE: (
        "PLC (ISO/IEC 15118) Authentication failed - invalid certificate"
    ),
    StatusCodeValue.PLC_AUTHENTICATION_FAILED_TIME_OUT: ("PLC (ISO/IEC 15118) Authentication failed - time out error"),
    StatusCodeValue.EVCO_ID_LOCKED: "EvcoID locked",
    StatusCodeValue.NO_VALID_CONTRACT: "No valid contract",
    StatusCodeValue.PARTNER_NOT_FOUND: "Partner not found",
    StatusCodeValue.PARTNER_DID_NOT_RESPOND: "Partner did not respond",
    StatusCodeValue.SERVICE_NOT_AVAILABLE: "Service not available",
    StatusCodeValue.SESSION_IS_INVALID: "Session is invalid",
    StatusCodeValue.COMMUNICATION_TO_EVSE_FAILED: "Communication to EVSE failed",
    StatusCodeValue.NO_EV_CONNECTED_TO_EVSE: "No EV connected to EVSE",
    StatusCodeValue.EVSE_ALREADY_RESERVED: "EVSE already reserved",
    StatusCodeValue.EVSE_ALREADY_IN_USE: "EVSE already in use / wrong token",
    StatusCodeValue.UNKNOWN_EVSE_ID: "Unknown EVSE ID",
    StatusCodeValue.EVSE_ID_NOT_HUBJECT_COMPATIBLE: "EVSE ID is not Hubject compatible",
    StatusCodeValue.EVSE_OUT_OF_SERVICE: "EVSE out of service",
}


def _truncate(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


class StatusCode(OICPModel):
    """StatusCodeType: ``Code`` M (one of the 31 codes), ``Description`` O (200),
    ``AdditionalInfo`` O (1000)."""

    code: StatusCodeValue = Field(alias="Code")
    description: Annotated[str, StringConstraints(max_length=DESCRIPTION_MAX)] | None = Field(None, alias="Description")
    additional_info: Annotated[str, StringConstraints(max_length=ADDITIONAL_INFO_MAX)] | None = Field(
        None, alias="AdditionalInfo"
    )

    @classmethod
    def of(cls, code: StatusCodeValue | str, additional_info: str | None = None) -> Self:
        """StatusCode with the standard Description; AdditionalInfo truncated to 1000 characters."""
        value = StatusCodeValue(code)
        return cls(
            code=value,
            description=value.description,
            additional_info=_truncate(additional_info, ADDITIONAL_INFO_MAX),
        )

    @property
    def is_success(self) -> bool:
        return self.code is StatusCodeValue.SUCCESS


class Acknowledgement(OICPModel):
    """eRoamingAcknowledgement: answer of most operations and the generic error answer."""

    result: StrictBool = Field(alias="Result")
    status_code: StatusCode = Field(alias="StatusCode")
    session_id: SessionId | None = Field(None, alias="SessionID")
    cpo_partner_session_id: PartnerSessionId | None = Field(None, alias="CPOPartnerSessionID")
    # ERRATUM §11.2 item 7 (only relevant in the reservation requests, accepted here as well).
    emp_partner_session_id: PartnerSessionId | None = Field(
        None,
        alias="EMPPartnerSessionID",
        validation_alias=AliasChoices("EMPPartnerSessionID", "EMPPartnerSessionId"),
    )

    @classmethod
    def ok(
        cls,
        session_id: str | None = None,
        *,
        cpo_partner_session_id: str | None = None,
        emp_partner_session_id: str | None = None,
        additional_info: str | None = None,
    ) -> Self:
        """Result=true, StatusCode 000 "Success"."""
        return cls(
            result=True,
            status_code=StatusCode.of(StatusCodeValue.SUCCESS, additional_info),
            session_id=session_id,
            cpo_partner_session_id=cpo_partner_session_id,
            emp_partner_session_id=emp_partner_session_id,
        )

    @classmethod
    def error(
        cls,
        code: StatusCodeValue | str,
        additional_info: str | None = None,
        *,
        session_id: str | None = None,
        cpo_partner_session_id: str | None = None,
        emp_partner_session_id: str | None = None,
    ) -> Self:
        """Result=false with the given code, its standard Description and AdditionalInfo (<= 1000 chars)."""
        return cls(
            result=False,
            status_code=StatusCode.of(code, additional_info),
            session_id=session_id,
            cpo_partner_session_id=cpo_partner_session_id,
            emp_partner_session_id=emp_partner_session_id,
        )
