"""What our models WRITE conforms to Hubject's OpenAPI files (all 20 operations + variants).

* every vector our models accept is re-serialised and validated against its request/response schema,
* every operation's response is built programmatically (success + every StatusCode) and validated,
* every request model's output is validated against the request schema.
The helper (tests/oicp_schema.py) validates oneOf bodies against the ONE matching alternative.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import shared.oicp as o
from tests.oicp_schema import (
    SchemaValidationError,
    find_path,
    request_schema,
    response_schema,
    select_alternative,
    validate_request,
    validate_response,
)
from tests.unit.test_oicp_vectors import DEVIATIONS, MODELS, VECTORS, Vector

VECTORS_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "oicp" / "vectors"

SID = "b2688855-7f00-0002-6d8e-48d883f6abb6"
EVSE = "DE*ABC*E1234567*1"
CEST = timezone(timedelta(hours=2))
T0 = datetime(2024, 5, 1, 10, 0, tzinfo=CEST)
T1 = datetime(2024, 5, 1, 11, 30, 15, 250000, tzinfo=CEST)

P_AUTH_START = "/charging/v21/operators/{operatorID}/authorize/start"
P_AUTH_STOP = "/charging/v21/operators/{operatorID}/authorize/stop"
P_REMOTE_START = "/charging/v21/providers/{providerID}/authorize-remote/start"
P_REMOTE_STOP = "/charging/v21/providers/{providerID}/authorize-remote/stop"
P_CDR = "/cdrmgmt/v22/operators/{operatorID}/charge-detail-record"
P_GET_CDR = "/cdrmgmt/v22/providers/{providerID}/get-charge-detail-records-request"
P_RES_START = "/reservation/v11/providers/{providerID}/reservation-start-request"
P_RES_STOP = "/reservation/v11/providers/{providerID}/reservation-stop-request"
P_PUSH_DATA = "/evsepush/v23/operators/{operatorID}/data-records"
P_PULL_DATA = "/evsepull/v23/providers/{providerID}/data-records"
P_PUSH_STATUS = "/evsepush/v21/operators/{operatorID}/status-records"
P_PULL_STATUS = "/evsepull/v21/providers/{providerID}/status-records"
P_PUSH_PRODUCTS = "/dynamicpricing/v10/operators/{operatorID}/pricing-products"
P_PUSH_EVSE_PRICING = "/dynamicpricing/v10/operators/{operatorID}/evse-pricing"
P_PULL_PRODUCTS = "/dynamicpricing/v10/providers/{providerID}/pricing-products"
P_PULL_EVSE_PRICING = "/dynamicpricing/v10/providers/{providerID}/evse-pricing"
P_NOTIFICATION = "/notificationmgmt/v11/charging-notifications"
P_PUSH_AUTH = "/authdata/v21/providers/{providerID}/push-request"

ACK_PATHS = [
    P_REMOTE_START,
    P_REMOTE_STOP,
    P_CDR,
    P_RES_START,
    P_RES_STOP,
    P_PUSH_DATA,
    P_PUSH_STATUS,
    P_PUSH_PRODUCTS,
    P_PUSH_EVSE_PRICING,
    P_NOTIFICATION,
    P_PUSH_AUTH,
]
PULL_PATHS = [P_GET_CDR, P_PULL_DATA, P_PULL_STATUS, P_PULL_PRODUCTS, P_PULL_EVSE_PRICING]


def _vector(name: str) -> Any:
    return json.loads((VECTORS_DIR / name).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------------
# Sample objects
# ---------------------------------------------------------------------------------------------------


def _evse_record() -> o.EvseDataRecord:
    doc = _vector("cpo_push_evse_data_request_01.json")
    return o.PushEvseDataRequest.from_oicp(doc).operator_evse_data.evse_data_record[0]


def _pull_record(evse_id: str = EVSE) -> o.PullEvseDataRecord:
    data = _evse_record().model_dump()
    data.update(evse_id=evse_id, operator_id="DE*ABC", operator_name="ABC technologies")
    return o.PullEvseDataRecord(**data)


def _cdr() -> o.ChargeDetailRecord:
    return o.ChargeDetailRecord(
        session_id=SID,
        evse_id=EVSE,
        identification=o.Identification.rfid_mifare("7568290FFF765F"),
        charging_start=T0,
        charging_end=T1,
        session_start=T0 - timedelta(minutes=1),
        session_end=T1 + timedelta(minutes=1),
        meter_value_start=Decimal("100.000"),
        meter_value_end=Decimal("112.345"),
        meter_value_in_between=o.MeterValueInBetween(meter_values=[Decimal("105.5")]),
        consumed_energy=Decimal("12.345"),
        signed_metering_values=[o.SignedMeteringValue(signed_metering_value="AB" * 10, metering_status="Start")],
        calibration_law_verification_info=o.CalibrationLawVerification(public_key="abc"),
        hub_operator_id="DE*ABC",
        hub_provider_id="DE-DCB",
        partner_product_id="AC1",
        cpo_partner_session_id="cpo-1",
        emp_partner_session_id="emp-1",
    )


def _pricing_product_data() -> o.PricingProductData:
    return o.PushPricingProductDataRequest.from_oicp(
        _vector("cpo_push_pricing_product_data_request_01.json")
    ).pricing_product_data


def _requests() -> list[tuple[str, o.OICPModel]]:
    remote = o.Identification.remote("DE-DCB-C12345678-X")
    return [
        (
            P_AUTH_START,
            o.AuthorizeStartRequest(
                operator_id="DE*ABC",
                identification=o.Identification.qr_code("DE-DCB-C12345678-X", pin="1234"),
                evse_id=EVSE,
                session_id=SID,
                partner_product_id="AC1",
                cpo_partner_session_id="c",
            ),
        ),
        (
            P_AUTH_STOP,
            o.AuthorizeStopRequest(
                session_id=SID, operator_id="DE*ABC", identification=o.Identification.rfid_mifare("1234ABCD")
            ),
        ),
        (
            P_REMOTE_START,
            o.AuthorizeRemoteStartRequest(
                provider_id="DE-DCB", evse_id=EVSE, identification=remote, session_id=o.new_session_id()
            ),
        ),
        (P_REMOTE_STOP, o.AuthorizeRemoteStopRequest(session_id=SID, provider_id="DE-DCB", evse_id=EVSE)),
        (P_CDR, _cdr()),
        (
            P_GET_CDR,
            o.GetChargeDetailRecordsRequest(
                provider_id="DE-DCB",
                from_=T0,
                to=T1,
                session_id=[SID],
                operator_id="DE*ABC",
                cdr_forwarded=False,
            ),
        ),
        (
            P_RES_START,
            o.AuthorizeRemoteReservationStartRequest(
                provider_id="DE-DCB",
                evse_id=EVSE,
                identification=remote,
                session_id=SID,
                duration=15,
                emp_partner_session_id="e",
            ),
        ),
        (
            P_RES_STOP,
            o.AuthorizeRemoteReservationStopRequest(session_id=SID, provider_id="DE-DCB", evse_id=EVSE),
        ),
        (
            P_PUSH_DATA,
            o.PushEvseDataRequest(
                action_type=o.ActionType.FULL_LOAD,
                operator_evse_data=o.OperatorEvseData(
                    operator_id="DE*ABC", operator_name="ABC", evse_data_record=[_evse_record()]
                ),
            ),
        ),
        (
            P_PULL_DATA,
            o.PullEvseDataRequest(
                provider_id="DE-DCB",
                geo_coordinates_response_format=o.GeoCoordinatesResponseFormat.GOOGLE,
                search_center=o.SearchCenter(
                    geo_coordinates=o.GeoCoordinates.from_decimal("52.48", "13.35"), radius=Decimal("2.5")
                ),
                country_codes=["DEU"],
                operator_ids=["DE*ABC"],
            ),
        ),
        (
            P_PULL_DATA,
            o.PullEvseDataRequest(provider_id="DE-DCB", geo_coordinates_response_format="DecimalDegree", last_call=T0),
        ),
        (
            P_PUSH_STATUS,
            o.PushEvseStatusRequest(
                action_type="update",
                operator_evse_status=o.OperatorEvseStatus(
                    operator_id="DE*ABC",
                    evse_status_record=[o.EvseStatusRecord(evse_id=EVSE, evse_status=o.EvseStatus.OCCUPIED)],
                ),
            ),
        ),
        (P_PULL_STATUS, o.PullEvseStatusRequest(provider_id="DE-DCB", evse_status=o.EvseStatus.AVAILABLE)),
        (P_PULL_STATUS, o.PullEvseStatusByIdRequest(provider_id="DE-DCB", evse_id=[EVSE] * 100)),
        (P_PULL_STATUS, o.PullEvseStatusByOperatorIdRequest(provider_id="DE-DCB", operator_id=["DE*ABC"])),
        (
            P_PUSH_PRODUCTS,
            o.PushPricingProductDataRequest(action_type="fullLoad", pricing_product_data=_pricing_product_data()),
        ),
        (
            P_PUSH_EVSE_PRICING,
            o.PushEvsePricingRequest(
                action_type="insert",
                evse_pricing=[o.EvsePricing(evse_id=EVSE, provider_id="*", evse_id_product_list=["AC1"])],
            ),
        ),
        (P_PULL_PRODUCTS, o.PullPricingProductDataRequest(operator_ids=["DE*ABC"], last_call=T0)),
        (P_PULL_EVSE_PRICING, o.PullEvsePricingRequest(provider_id="DE-DCB", operator_ids=["DE*ABC"])),
        (
            P_NOTIFICATION,
            o.ChargingNotificationStartRequest(session_id=SID, evse_id=EVSE, operator_id="DE*ABC", charging_start=T0),
        ),
        (
            P_NOTIFICATION,
            o.ChargingNotificationProgressRequest(
                session_id=SID,
                evse_id=EVSE,
                operator_id="DE*ABC",
                charging_start=T0,
                event_occurred=T1,
                charging_duration=5415250,
                consumed_energy_progress=Decimal("3.5"),
                meter_value_in_between=o.MeterValueInBetween(meter_values=[Decimal(1)]),
            ),
        ),
        (
            P_NOTIFICATION,
            o.ChargingNotificationEndRequest(
                session_id=SID,
                evse_id=EVSE,
                operator_id="DE*ABC",
                charging_end=T1,
                consumed_energy=Decimal(7),
                penalty_time_start=T1,
            ),
        ),
        (
            P_NOTIFICATION,
            o.ChargingNotificationErrorRequest(
                session_id=SID,
                evse_id=EVSE,
                operator_id="DE*ABC",
                error_type="Critical Error",
                error_additional_info="ground fault",
            ),
        ),
        (
            P_PUSH_AUTH,
            o.PushAuthenticationDataRequest(
                action_type="fullLoad",
                provider_authentication_data=o.ProviderAuthenticationData(
                    provider_id="DE-DCB",
                    authentication_data_record=[
                        o.AuthenticationDataRecord(
                            identification=o.Identification.qr_code(
                                "DE-DCB-C12345678-X",
                                hashed_pin=o.HashedPIN(value="$2a$10$" + "a" * 53, function="Bcrypt"),
                            )
                        ),
                        o.AuthenticationDataRecord(
                            identification=o.Identification(
                                rfid_identification=o.RFIDIdentification(
                                    uid="1234ABCD", rfid="mifareFamily", expiry_date=T1
                                )
                            )
                        ),
                    ],
                ),
            ),
        ),
    ]


def _responses() -> list[tuple[str, o.OICPModel]]:
    ok_status = o.StatusCode.of(o.StatusCodeValue.SUCCESS)
    records = [_pull_record(f"DE*ABC*E{i:04d}") for i in range(5)]
    return [
        (
            P_AUTH_START,
            o.AuthorizationStartResponse.authorized(
                SID, "DE-DCB", authorization_stop_identifications=[o.Identification.rfid_mifare("1234ABCD")]
            ),
        ),
        (P_AUTH_STOP, o.AuthorizationStopResponse.authorized(SID, "DE-DCB")),
        (P_GET_CDR, o.ChargeDetailRecordsPage.page([], page=0, size=20)),  # empty page
        (P_GET_CDR, o.ChargeDetailRecordsPage.page([_cdr()] * 3, page=1, size=2)),
        (P_PULL_DATA, o.EvseDataResponse.page(records, page=0, size=2)),
        (P_PULL_DATA, o.EvseDataResponse.page(records, page=2, size=2)),
        (P_PULL_DATA, o.EvseDataResponse.page(records, page=9, size=2)),  # beyond the end: empty
        (
            P_PULL_STATUS,
            o.EvseStatusResponse.of(
                [
                    o.OperatorEvseStatus(
                        operator_id="DE*ABC",
                        operator_name="ABC",
                        evse_status_record=[o.EvseStatusRecord(evse_id=EVSE, evse_status="Available")],
                    )
                ]
            ),
        ),
        (
            P_PULL_STATUS,
            o.EvseStatusByIdResponse.of(
                [o.EvseStatusRecord(evse_id="DE*XYZ*E999", evse_status=o.EvseStatus.EVSE_NOT_FOUND)]
            ),
        ),
        (
            P_PULL_PRODUCTS,
            o.PricingProductDataResponse(pricing_product_data=[_pricing_product_data()], status_code=ok_status),
        ),
        (
            P_PULL_EVSE_PRICING,
            o.EvsePricingResponse(
                evse_pricing=[
                    o.OperatorEvsePricing(
                        operator_id="DE*ABC",
                        evse_pricing=[
                            o.EvsePricing(evse_id=EVSE, provider_id="DE-DCB", evse_id_product_list=["AC1", "DC"])
                        ],
                    )
                ]
            ),
        ),
        *[(p, o.Acknowledgement.ok(SID, cpo_partner_session_id="c")) for p in ACK_PATHS],
    ]


# ---------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------


def test_every_openapi_operation_is_covered() -> None:
    covered = {find_path(p)[1] for p, _ in _requests()} | {find_path(p)[1] for p, _ in _responses()}
    for spec in ("cpo", "emp"):
        from tests.oicp_schema import load_spec

        for key in load_spec(spec)["paths"]:
            norm = key.replace("{externalID}", "{providerID}")
            assert norm in covered, f"{spec} {key} has no sample"
    assert len(covered) == 18  # 18 distinct OpenAPI paths = the 20 operations (DIGEST §1.1)


@pytest.mark.parametrize(
    ("path", "model"), _requests(), ids=lambda x: type(x).__name__ if not isinstance(x, str) else ""
)
def test_request_models_conform(path: str, model: o.OICPModel) -> None:
    body = model.to_oicp()
    for spec in ("cpo", "emp"):
        try:
            find_path(path, spec)
        except KeyError:
            continue
        validate_request(path, body, spec)
    # and our own parser reads it back unchanged
    again = type(model).from_oicp(body).to_oicp()
    assert again == body


@pytest.mark.parametrize(
    ("path", "model"), _responses(), ids=lambda x: type(x).__name__ if not isinstance(x, str) else ""
)
def test_response_models_conform(path: str, model: o.OICPModel) -> None:
    body = model.to_oicp()
    for spec in ("cpo", "emp"):
        try:
            find_path(path, spec)
        except KeyError:
            continue
        validate_response(path, body, spec)
    assert type(model).from_oicp(body).to_oicp() == body


@pytest.mark.parametrize("code", list(o.StatusCodeValue), ids=lambda c: c.value)
def test_every_status_code_in_every_answer(code: o.StatusCodeValue) -> None:
    long_info = "x" * 5000
    ack = o.Acknowledgement.error(code, long_info, session_id=SID).to_oicp()
    assert ack["StatusCode"] == {
        "Code": code.value,
        "Description": o.STATUS_DESCRIPTIONS[code],
        "AdditionalInfo": ack["StatusCode"]["AdditionalInfo"],
    }
    assert len(ack["StatusCode"]["AdditionalInfo"]) == 1000 and ack["Result"] is False
    for path in ACK_PATHS:
        validate_response(path, ack)
    for path in PULL_PATHS:  # refusals of pull operations are acknowledgements (DIGEST §6.3)
        validate_response(path, ack, acknowledgement_ok=True)
    validate_response(P_AUTH_START, o.AuthorizationStartResponse.not_authorized(code, "why").to_oicp())
    validate_response(P_AUTH_STOP, o.AuthorizationStopResponse.not_authorized(code).to_oicp())
    validate_response(P_PULL_STATUS, o.EvseStatusResponse.of([], o.StatusCode.of(code)).to_oicp())
    validate_response(P_GET_CDR, o.ChargeDetailRecordsPage.page([], status_code=o.StatusCode.of(code)).to_oicp())


def _accepted_vector_bodies() -> list[tuple[Vector, Any]]:
    out = []
    for v in VECTORS:
        doc = json.loads((VECTORS_DIR / v.file).read_text(encoding="utf-8"))
        dev = DEVIATIONS.get(v.file)
        if dev is not None and not dev.accept:
            docs = [fix(doc) for fix in dev.fixes]
        elif (dev is not None and dev.accept) or v.conforms:
            docs = [doc]
        else:
            docs = []
        out.extend((v, d) for d in docs)
    return out


@pytest.mark.parametrize(
    ("vector", "doc"), _accepted_vector_bodies(), ids=lambda x: x.file if isinstance(x, Vector) else ""
)
def test_reserialised_vectors_conform(vector: Vector, doc: Any) -> None:
    parser, _ = MODELS[(vector.operation, vector.direction)]
    body = parser(doc).to_oicp()
    m = re.search(
        r"`(/api/oicp/[^`]+)`",
        next(line for line in (VECTORS_DIR / "INDEX.md").read_text().splitlines() if f"`{vector.file}`" in line),
    )
    spec = vector.file.split("_", 1)[0]
    if m is None:  # generic acknowledgement
        paths = [P_PUSH_DATA] if spec == "cpo" else [P_PUSH_AUTH]
    else:
        paths = [m.group(1)]
    for path in paths:
        try:
            find_path(path, spec)
        except KeyError:
            spec_used = None
        else:
            spec_used = spec
        if vector.direction == "request":
            validate_request(path, body, spec_used)
        else:
            validate_response(path, body, spec_used)


# ---------------------------------------------------------------------------------------------------
# The helper itself
# ---------------------------------------------------------------------------------------------------


def test_helper_path_forms() -> None:
    assert find_path("/api/oicp/charging/v21/providers/{providerID}/authorize-remote/stop", "emp") == (
        "emp",
        "/charging/v21/providers/{externalID}/authorize-remote/stop",
    )
    assert find_path("https://node:8443/api/oicp/evsepull/v23/providers/DE-DCB/data-records?page=0&size=20") == (
        "emp",
        P_PULL_DATA,
    )
    assert find_path("/api/oicp/evsepull/v21/providers/DE*DCB/status-records-by-id")[1] == P_PULL_STATUS
    assert find_path(P_CDR)[0] == "cpo"
    with pytest.raises(KeyError):
        find_path("/api/oicp/nope/v1/x")


def test_helper_rejects_bad_bodies() -> None:
    ack = o.Acknowledgement.ok().to_oicp()
    with pytest.raises(SchemaValidationError, match="Result"):
        validate_response(P_PUSH_DATA, {"StatusCode": ack["StatusCode"]})
    with pytest.raises(SchemaValidationError, match="SessionID"):
        validate_response(P_PUSH_DATA, {**ack, "SessionID": "string"})
    with pytest.raises(SchemaValidationError):  # an acknowledgement is not an eRoamingEVSEData ...
        validate_response(P_PULL_DATA, ack)
    validate_response(P_PULL_DATA, ack, acknowledgement_ok=True)  # ... unless explicitly allowed
    with pytest.raises(SchemaValidationError, match="date-time"):
        validate_request(P_GET_CDR, {"ProviderID": "DE-DCB", "From": "2020-01-01", "To": "2020-01-02T00:00:00Z"})
    with pytest.raises(SchemaValidationError, match="ErrorType"):
        validate_request(
            P_NOTIFICATION,
            {
                "Type": "Error",
                "SessionID": SID,
                "EvseID": EVSE,
                "OperatorID": "DE*ABC",
                "ErrorType": "Connector Error",
            },
        )
    too_many = o.PullEvseStatusByIdRequest(provider_id="DE-DCB", evse_id=[EVSE]).to_oicp()
    too_many["EvseID"] = [EVSE] * 101
    with pytest.raises(SchemaValidationError, match="too long"):
        validate_request(P_PULL_STATUS, too_many)


def test_helper_selects_the_intended_alternative() -> None:
    notif = request_schema(P_NOTIFICATION, "cpo")
    for t, member in (
        ("Start", "ChargingStart"),
        ("Progress", "EventOccurred"),
        ("End", "ChargingEnd"),
        ("Error", "ErrorType"),
    ):
        assert member in select_alternative(notif, {"Type": t})["required"]
    assert "EventOccurred" not in select_alternative(notif, {"Type": "Start"})["required"]
    status = request_schema(P_PULL_STATUS)
    assert "EvseID" in select_alternative(status, {"ProviderID": "X", "EvseID": []})["required"]
    assert "OperatorID" in select_alternative(status, {"ProviderID": "X", "OperatorID": []})["required"]
    assert select_alternative(status, {"ProviderID": "X"})["required"] == ["ProviderID"]
    resp = response_schema(P_PULL_STATUS)
    assert "EVSEStatusRecords" in select_alternative(resp, {"EVSEStatusRecords": {}})["required"]
    assert "EvseStatuses" in select_alternative(resp, {"EvseStatuses": {}})["required"]


def test_datetime_output_keeps_offset() -> None:
    n = o.ChargingNotificationStartRequest(
        session_id=SID,
        evse_id=EVSE,
        operator_id="DE*ABC",
        charging_start=datetime(2014, 2, 1, 15, 45, tzinfo=CEST),
    )
    assert n.to_oicp()["ChargingStart"] == "2014-02-01T15:45:00+02:00"
    parsed = o.ChargingNotificationStartRequest.from_oicp({**n.to_oicp(), "ChargingStart": "2020-09-23T14:17:53.038Z"})
    assert parsed.to_oicp()["ChargingStart"] == "2020-09-23T14:17:53.038Z"
    parsed = o.ChargingNotificationStartRequest.from_oicp({**n.to_oicp(), "ChargingStart": "2020-09-23T14:17:53+00:00"})
    assert parsed.charging_start == datetime(2020, 9, 23, 14, 17, 53, tzinfo=UTC)
    assert parsed.to_oicp()["ChargingStart"] == "2020-09-23T14:17:53Z"  # zero offset is written as Z
    with pytest.raises(ValidationError, match="timezone"):
        o.ChargingNotificationStartRequest.from_oicp({**n.to_oicp(), "ChargingStart": "2020-09-23T14:17:53"})
