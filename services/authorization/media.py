"""Authentication media in authorization messages: which are allowed, the status code of a refusal,
and QR-code PIN checks.

Status codes (DIGEST §5.1, §6.1, §6.2, §9.6) — used by both roles:

* ``RFIDIdentification`` in AuthorizeStart/Stop: **022** Data error ("MUST NOT be used in
  eRoamingAuthorization messages"; the message is malformed for this operation, not a failed
  authentication). The answer's AdditionalInfo says to use RFIDMifareFamilyIdentification.
* a QR code with ``HashedPIN`` or without a clear ``PIN``: **101** (Hubject hashes whatever it gets, so a
  hash sent by mistake fails authentication as invalid credentials).
* an unknown or refused medium, by kind: RFID UID **102**, QR code **101**, Plug&Charge **105**,
  remote identification **106** (there is no remote-specific code; 106 "No positive authentication
  response" is the generic one).
* a blocked or expired token: **200** EvcoID locked for the EvcoID media, **102** for an RFID UID
  (the card itself is what is refused).

PINs: bcrypt (``$2b$``), the hash function OICP names (HashedPIN.Function ``Bcrypt``).
"""

from __future__ import annotations

import hmac

import bcrypt

from shared.oicp import HashedPIN, Identification, StatusCodeValue
from shared.oicp.types import HashFunction
from shared.stores.tokens import medium_key

CODE = StatusCodeValue
#: Cost factor of the bcrypt hashes this node makes of clear PINs it receives (CPO role).
PIN_HASH_ROUNDS = 8

UNKNOWN_CODES: dict[str, StatusCodeValue] = {
    "RFIDMifareFamilyIdentification": CODE.RFID_AUTHENTICATION_FAILED_INVALID_UID,
    "RFIDIdentification": CODE.RFID_AUTHENTICATION_FAILED_INVALID_UID,
    "QRCodeIdentification": CODE.QR_CODE_AUTHENTICATION_FAILED_INVALID_CREDENTIALS,
    "PlugAndChargeIdentification": CODE.PLC_AUTHENTICATION_FAILED_INVALID_EVCO_ID,
    "RemoteIdentification": CODE.NO_POSITIVE_AUTHENTICATION_RESPONSE,
}

#: AuthorizeStop with a medium that may not stop the session (DIGEST §6.2: 101/102/105).
STOP_MISMATCH_CODES: dict[str, StatusCodeValue] = {
    **UNKNOWN_CODES,
    "RemoteIdentification": CODE.PLC_AUTHENTICATION_FAILED_INVALID_EVCO_ID,
}


def unknown_code(identification: Identification) -> StatusCodeValue:
    """The refusal code of a medium nobody knows."""
    return UNKNOWN_CODES[identification.kind]


def locked_code(identification: Identification) -> StatusCodeValue:
    """The refusal code of a blocked or expired token."""
    if identification.evco_id is None:
        return CODE.RFID_AUTHENTICATION_FAILED_INVALID_UID
    return CODE.EVCO_ID_LOCKED


def refusal_of_medium(identification: Identification) -> tuple[StatusCodeValue, str] | None:
    """Why this medium may not be used in AuthorizeStart/Stop at all, or None if it may."""
    if identification.kind == "RFIDIdentification":
        return (
            CODE.DATA_ERROR,
            "RFIDIdentification must not be used in authorization messages: send RFIDMifareFamilyIdentification",
        )
    qr = identification.qr_code_identification
    if qr is not None and (qr.hashed_pin is not None or not qr.pin):
        return (
            CODE.QR_CODE_AUTHENTICATION_FAILED_INVALID_CREDENTIALS,
            "a QR code in an authorization request must carry the clear-text PIN and no HashedPIN",
        )
    return None


def without_pin(identification: Identification) -> Identification:
    """The medium without its PIN: what the ledger keeps and what AuthorizationStopIdentifications show."""
    qr = identification.qr_code_identification
    if qr is None:
        return identification
    return Identification.qr_code(qr.evco_id)


def hash_pin(pin: str) -> HashedPIN:
    """A bcrypt hash of a clear PIN, so that clear PINs are never stored (CPO role, auth data)."""
    value = bcrypt.hashpw(pin.encode(), bcrypt.gensalt(PIN_HASH_ROUNDS)).decode()
    return HashedPIN(value=value, function=HashFunction.BCRYPT)


def pin_matches(pin: str, stored: Identification) -> bool:
    """True if ``pin`` (clear text, from an AuthorizeStart) matches the stored QR medium's PIN or
    bcrypt HashedPIN. A stored medium without either never matches."""
    qr = stored.qr_code_identification
    if qr is None:
        return False
    if qr.pin:
        return hmac.compare_digest(qr.pin.encode(), pin.encode())
    if qr.hashed_pin is not None and qr.hashed_pin.function is HashFunction.BCRYPT:
        try:
            return bcrypt.checkpw(pin.encode(), qr.hashed_pin.value.encode())
        except ValueError:  # not a bcrypt hash after all (a peer's data): never a match
            return False
    return False


def same_medium(a: Identification, b: Identification) -> bool:
    """The same card or contract (PINs and the RFID member variant ignored)."""
    rfid_a, rfid_b = a.uid is not None, b.uid is not None
    return rfid_a == rfid_b and medium_key(a) == medium_key(b)
