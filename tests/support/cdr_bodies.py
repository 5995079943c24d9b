"""Charge detail records for the tests: complete ones (calibration-law data, signed metering values,
time zones other than UTC), so that "every field intact" means something."""

from __future__ import annotations

import uuid
from typing import Any

CPO = "DE*GEF"


def new_session_id() -> str:
    return str(uuid.uuid4())


def full_cdr(session_id: str | None = None, evse_id: str = "DE*GEF*E1CDR*1", **changes: Any) -> dict[str, Any]:
    """A CDR with every optional part a German calibration-law CDR carries, in +01:00 local time."""
    body: dict[str, Any] = {
        "SessionID": session_id or new_session_id(),
        "CPOPartnerSessionID": "csms-0815",
        "EMPPartnerSessionID": "app-4711",
        "PartnerProductID": "AC3",
        "EvseID": evse_id,
        "Identification": {"RemoteIdentification": {"EvcoID": "DE-GDF-C12345678-X"}},
        "ChargingStart": "2026-11-29T10:05:00+01:00",
        "ChargingEnd": "2026-11-29T11:05:00+01:00",
        "SessionStart": "2026-11-29T10:00:00+01:00",
        "SessionEnd": "2026-11-29T11:10:00+01:00",
        "MeterValueStart": 1000.5,
        "MeterValueEnd": 1022.75,
        "MeterValueInBetween": {"meterValues": [1005.125, 1010.25]},
        "ConsumedEnergy": 22.25,
        "SignedMeteringValues": [
            {"SignedMeteringValue": 'OCMF|{"FV":"1.0","RD":[{"TM":"start"}]}|{"SD":"3045"}', "MeteringStatus": "Start"},
            {"SignedMeteringValue": 'OCMF|{"FV":"1.0","RD":[{"TM":"end"}]}|{"SD":"3046"}', "MeteringStatus": "End"},
        ],
        "CalibrationLawVerificationInfo": {
            "CalibrationLawCertificateID": "CD-12BD-2783T",
            "PublicKey": "3059301306072a8648ce3d020106082a8648ce3d03010703420004",
            "MeteringSignatureUrl": "https://meter.example.com/verify",
            "MeteringSignatureEncodingFormat": "UTF-8",
            "SignedMeteringValuesVerificationInstruction": "use the transparency software",
        },
    }
    body.update(changes)
    return body
