"""OICP 2.3 message models (pydantic v2).

Build/parse bodies with ``Model.from_oicp(json_dict)`` and ``model.to_oicp()``.  See ``base`` for the
conventions (aliases, spelling variants, Date/Time and decimal handling).
"""

from shared.oicp.base import AssembledBody, Km, KWh, OICPDateTime, OICPDecimal, OICPModel, format_oicp_datetime
from shared.oicp.errors import describe_validation_error, oicp_path
from shared.oicp.ids import (
    EVCO_ID_PATTERN,
    EVSE_ID_PATTERN,
    OPERATOR_ID_PATTERN,
    PROVIDER_ID_PATTERN,
    SESSION_ID_PATTERN,
    evco_belongs_to,
    evse_belongs_to,
    new_session_id,
    normalize_id,
    operator_id_of_evse,
    provider_id_of_evco,
)
from shared.oicp.messages import *  # noqa: F403
from shared.oicp.messages import __all__ as _messages_all
from shared.oicp.status import STATUS_DESCRIPTIONS, Acknowledgement, StatusCode, StatusCodeValue
from shared.oicp.types import *  # noqa: F403
from shared.oicp.types import __all__ as _types_all

__all__ = [
    "EVCO_ID_PATTERN",
    "EVSE_ID_PATTERN",
    "OPERATOR_ID_PATTERN",
    "PROVIDER_ID_PATTERN",
    "SESSION_ID_PATTERN",
    "STATUS_DESCRIPTIONS",
    "Acknowledgement",
    "AssembledBody",
    "KWh",
    "Km",
    "OICPDateTime",
    "OICPDecimal",
    "OICPModel",
    "StatusCode",
    "StatusCodeValue",
    "describe_validation_error",
    "evco_belongs_to",
    "evse_belongs_to",
    "format_oicp_datetime",
    "new_session_id",
    "normalize_id",
    "oicp_path",
    "operator_id_of_evse",
    "provider_id_of_evco",
    *_messages_all,
    *_types_all,
]
