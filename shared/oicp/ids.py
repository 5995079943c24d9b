"""OICP 2.3 identifier formats (DIGEST §4) and helpers to compare identifiers.

The pattern constants are the ones the models use.  They are the published patterns verbatim unless a
comment says otherwise (the deviations are all *anchoring* fixes of patterns that the OpenAPI files
publish unanchored, DIGEST §11.4 item 31, or the choice between two published variants).
"""

from __future__ import annotations

import re
import uuid

__all__ = [
    "CHARGING_POOL_ID_PATTERN",
    "COUNTRY_CODE_PATTERN",
    "CURRENCY_PATTERN",
    "DECIMAL_DEGREE_PATTERN",
    "DEGREE_MINUTE_SECONDS_PATTERN",
    "EVCO_ID_PATTERN",
    "EVSE_ID_PATTERN",
    "EVSE_ID_PATTERN_ADOC",
    "GOOGLE_COORDINATES_PATTERN",
    "HASH_VALUE_PATTERN",
    "HASH_VALUE_PATTERN_EMP_ADOC",
    "LANGUAGE_CODE_PATTERN",
    "OPERATOR_ID_PATTERN",
    "PERIOD_TIME_PATTERN",
    "PHONE_NUMBER_PATTERN",
    "PROVIDER_ID_OR_ASTERISK_PATTERN",
    "PROVIDER_ID_PATTERN",
    "SESSION_ID_PATTERN",
    "TIME_ZONE_PATTERN",
    "UID_PATTERN",
    "evco_belongs_to",
    "evse_belongs_to",
    "new_session_id",
    "normalize_id",
    "operator_id_of_evse",
    "provider_id_of_evco",
]

# OperatorIDType, adoc = oas.  ISO "DE*A36"/"DEA36", DIN "+49*536".
OPERATOR_ID_PATTERN = r"^(([A-Za-z]{2}\*?[A-Za-z0-9]{3})|(\+?[0-9]{1,3}\*[0-9]{3}))$"

# ProviderIDType, adoc = oas ("|" inside the character class is a literal pipe, as published).
PROVIDER_ID_PATTERN = r"^([A-Za-z]{2}\-?[A-Za-z0-9]{3}|[A-Za-z]{2}[\*|-]?[A-Za-z0-9]{3})$"

# ProviderID or "*" (all EMPs) in PushPricingProductData / PushEVSEPricing.  The oas publishes
# ``^(...)|\*$`` where ``^`` binds only to the first alternative and ``$`` only to ``\*`` (so it accepts
# e.g. "DE-ABC-garbage" or "foo*").  We anchor both alternatives: every value we accept is also accepted by
# the oas pattern, and nonsense is refused.
PROVIDER_ID_OR_ASTERISK_PATTERN = r"^(([A-Za-z]{2}\-?[A-Za-z0-9]{3}|[A-Za-z]{2}[\*|-]?[A-Za-z0-9]{3})|\*)$"

# EvseIDType.  ERRATUM §11.4 item 28: the adoc admits upper case only, the oas (both editions) admits
# lower case too.  DECISION: the models accept the oas pattern (a superset of the adoc one) so that we
# interoperate with every client that validates against the published OpenAPI; identifiers are compared
# case-insensitively through normalize_id().  Values are stored and echoed exactly as received.
EVSE_ID_PATTERN = r"^(([A-Za-z]{2}\*?[A-Za-z0-9]{3}\*?E[A-Za-z0-9\*]{1,30})|(\+?[0-9]{1,3}\*[0-9]{3}\*[0-9\*]{1,32}))$"
EVSE_ID_PATTERN_ADOC = r"^(([A-Z]{2}\*?[A-Z0-9]{3}\*?E[A-Z0-9\*]{1,30})|(\+?[0-9]{1,3}\*[0-9]{3}\*[0-9\*]{1,32}))$"

# EvcoIDType, adoc = oas.
EVCO_ID_PATTERN = (
    r"^(([A-Za-z]{2}\-?[A-Za-z0-9]{3}\-?C[A-Za-z0-9]{8}\-?[\d|A-Za-z])"
    r"|([A-Za-z]{2}[\*|\-]?[A-Za-z0-9]{3}[\*|\-]?[A-Za-z0-9]{6}[\*|\-]?[\d|X]))$"
)

# SessionIDType, adoc = oas (GUID layout 8-4-4-4-12).
SESSION_ID_PATTERN = r"^[A-Za-z0-9]{8}(-[A-Za-z0-9]{4}){3}-[A-Za-z0-9]{12}$"

# ChargingPoolIDType: published unanchored (it would match inside any longer string).  Anchored here.
CHARGING_POOL_ID_PATTERN = r"^([A-Za-z]{2}\*?[A-Za-z0-9]{3}\*?P[A-Za-z0-9\*]{1,30})$"

# UIDType, adoc = oas: 8, 14 or 20 upper-case hex digits.
UID_PATTERN = r"^([0-9A-F]{8,8}|[0-9A-F]{14,14}|[0-9A-F]{20,20})$"

# HashValueType.  ERRATUM §11.4 item 29: CPO adoc + oas admit ``\ . + / = $`` (bcrypt strings such as
# "$2a$10$..." fit), the EMP adoc admits alphanumerics only.  DECISION: the CPO/oas pattern (verbatim),
# because HashedPIN.Function is "Bcrypt" and the EMP variant rejects every bcrypt hash.
HASH_VALUE_PATTERN = r"^[0-9A-Za-z\\.+/=\\$]{10,100}$"
HASH_VALUE_PATTERN_EMP_ADOC = r"^[0-9A-Za-z]{10,100}$"

# PhoneNumberType, adoc = oas.
PHONE_NUMBER_PATTERN = r"^\+[0-9]{5,15}$"

# LanguageCodeType, adoc = oas.
LANGUAGE_CODE_PATTERN = r"^[a-z]{2,3}(?:-[A-Z]{2,3}(?:-[a-zA-Z]{4})?)?(?:-x-[a-zA-Z0-9]{1,8})?$"

# TimeZoneType: published unanchored as ``[U][T][C][+,-][0-9][0-9][:][0-9][0-9]`` - it matches anywhere
# inside a longer string and its class ``[+,-]`` also admits a comma.  DECISION: anchored and without the
# comma ("UTC+01:00", "UTC-05:00"): every value we accept matches the published pattern, but garbage
# around a valid substring ("xxUTC+01:00yy") and "UTC,01:00" are refused.
TIME_ZONE_PATTERN = r"^UTC[+-][0-9]{2}:[0-9]{2}$"

# Period begin/end: published unanchored as ``[0-9]{2}:[0-9]{2}`` (admits "99:99" and any surrounding
# text).  DECISION: anchored "hh:mm" with a valid clock time; "24:00" is allowed as an end-of-day marker.
PERIOD_TIME_PATTERN = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"

# Geo coordinates, adoc = oas (WGS84).
GOOGLE_COORDINATES_PATTERN = r"^-?1?\d{1,2}\.\d{1,6}\s*\,?\s*-?1?\d{1,2}\.\d{1,6}$"
DECIMAL_DEGREE_PATTERN = r"^-?1?\d{1,2}\.\d{1,6}$"
DEGREE_MINUTE_SECONDS_PATTERN = r"^-?1?\d{1,2}°[ ]?\d{1,2}'[ ]?\d{1,2}\.\d+''$"

# CountryCodeType (ISO 3166-1 alpha-3) and CurrencyIDType (ISO 4217): no published regex (the oas only
# writes min/max 3 as numbers).  We require three upper-case letters.
COUNTRY_CODE_PATTERN = r"^[A-Z]{3}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"

_SEPARATORS = str.maketrans("", "", "*-")
_EVSE_ISO_PREFIX = re.compile(r"^([A-Za-z]{2})\*?([A-Za-z0-9]{3})\*?E")
_EVSE_DIN_PREFIX = re.compile(r"^(\+?[0-9]{1,3})\*([0-9]{3})\*")
_EVSE_ID = re.compile(EVSE_ID_PATTERN)
_EVCO_ID = re.compile(EVCO_ID_PATTERN)
_EVCO_PREFIX = re.compile(r"^([A-Za-z]{2})[\*|\-]?([A-Za-z0-9]{3})")


def normalize_id(value: str) -> str:
    """Canonical form for comparisons: upper case, separators ``*`` and ``-`` removed.

    DIGEST §4: separators are optional in every ID format, so comparisons have to ignore them.
    A DIN ``+`` country-code prefix is kept (it is not a separator); :func:`evse_belongs_to` ignores it.
    """
    return value.strip().upper().translate(_SEPARATORS)


def operator_id_of_evse(evse_id: str) -> str:
    """Normalised OperatorID embedded in an EvseID (ISO ``DE*AB7*E...`` -> ``DEAB7``, DIN
    ``+49*810*...`` -> ``+49810``).  Raises ValueError for a string that is not an EvseID."""
    if not _EVSE_ID.match(evse_id):
        raise ValueError(f"not an EvseID: {evse_id!r}")
    iso = _EVSE_ISO_PREFIX.match(evse_id)
    if iso and not evse_id.startswith("+"):
        return normalize_id(iso.group(1) + iso.group(2))
    din = _EVSE_DIN_PREFIX.match(evse_id)
    if din:
        return normalize_id(din.group(1) + din.group(2))
    raise ValueError(f"not an EvseID: {evse_id!r}")  # pragma: no cover - the pattern guarantees a prefix


def provider_id_of_evco(evco_id: str) -> str:
    """Normalised ProviderID embedded in an EvcoID (``DE-8EO-CAet5e4XY-3`` -> ``DE8EO``).
    Raises ValueError for a string that is not an EvcoID."""
    if not _EVCO_ID.match(evco_id):
        raise ValueError(f"not an EvcoID: {evco_id!r}")
    m = _EVCO_PREFIX.match(evco_id)
    assert m is not None  # guaranteed by the EvcoID pattern
    return normalize_id(m.group(1) + m.group(2))


def _same_operator(a: str, b: str) -> bool:
    return normalize_id(a).lstrip("+") == normalize_id(b).lstrip("+")


def evse_belongs_to(evse_id: str, operator_id: str) -> bool:
    """True if the EvseID embeds this OperatorID (separators, case and a DIN ``+`` ignored)."""
    try:
        return _same_operator(operator_id_of_evse(evse_id), operator_id)
    except ValueError:
        return False


def evco_belongs_to(evco_id: str, provider_id: str) -> bool:
    """True if the EvcoID embeds this ProviderID (separators and case ignored)."""
    try:
        return provider_id_of_evco(evco_id) == normalize_id(provider_id)
    except ValueError:
        return False


def new_session_id() -> str:
    """A fresh SessionID (UUID4, matches SESSION_ID_PATTERN).  In P2P the EMP node issues it."""
    return str(uuid.uuid4())
