"""Identifier patterns and helpers (shared/oicp/ids.py, DIGEST §4)."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

import shared.oicp as o
from shared.oicp import ids
from shared.oicp.errors import describe_validation_error


@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        (ids.OPERATOR_ID_PATTERN, ["DE*A36", "DEA36", "+49*536", "49*536"], ["DE*A3", "DE-A36", "+49536"]),
        (ids.PROVIDER_ID_PATTERN, ["DE8EO", "DE-8EO", "DE*8EO"], ["DE8E", "DE--8EO", "D-8EO"]),
        (ids.PROVIDER_ID_OR_ASTERISK_PATTERN, ["*", "DE-8EO"], ["**", "DE-8EO-x", "x*"]),
        (
            ids.EVSE_ID_PATTERN,
            ["DE*AB7*E840*6487", "DEAB7E8406487", "+49*810*000*438", "de*ab7*E840"],
            ["DE*AB7*840", "+49810000438", "DE*AB7*E" + "1" * 31],
        ),
        (
            ids.EVCO_ID_PATTERN,
            ["DE-8EO-CAet5e4XY-3", "DE8EOCAet5e43X1", "DE*8EO*Aet5e4*3", "DE-8EO-Aet5e4-3", "DE8EOAet5e43"],
            ["string", "DE-8EO-CAet5e4XY", "DE*8EO*Aet5e4*Y"],
        ),
        (ids.SESSION_ID_PATTERN, ["b2688855-7f00-0002-6d8e-48d883f6abb6"], ["string", "b2688855-7f00-0002"]),
        (ids.UID_PATTERN, ["1234ABCD", "7568290FFF765F", "0" * 20], ["12345ABCD", "AFFH1768", "1234abcd"]),
        (ids.HASH_VALUE_PATTERN, ["$2a$10$" + "a" * 53, "abcdefghij"], ["short", "a" * 101, "has space1"]),
        (ids.TIME_ZONE_PATTERN, ["UTC+01:00", "UTC-05:00"], ["UTC,01:00", "xUTC+01:00", "UTC+01:00x"]),
        (ids.PERIOD_TIME_PATTERN, ["09:00", "23:59", "24:00"], ["99:99", "9:00", "09:00x"]),
        (ids.CHARGING_POOL_ID_PATTERN, ["DE*ABC*P1234TEST*1", "IT*123*P456*AB789"], ["xxDE*ABC*P1"]),
        (ids.GOOGLE_COORDINATES_PATTERN, ["47.662249 9.360922", "52.480495,13.356465"], ["string", "47 9"]),
        (ids.DEGREE_MINUTE_SECONDS_PATTERN, ["9°21'39.32''"], ["9°21'39''"]),
    ],
)
def test_patterns(pattern: str, good: list[str], bad: list[str]) -> None:
    rx = re.compile(pattern)
    for value in good:
        assert rx.search(value), value
    for value in bad:
        assert not rx.search(value), value


def test_evse_id_case_decision() -> None:
    """ERRATUM §11.4 item 28: adoc EvseID is upper case only, oas admits lower case.  We accept the oas
    pattern (interoperate with every client validating against the published OpenAPI) and compare
    identifiers case-insensitively."""
    assert not re.match(ids.EVSE_ID_PATTERN_ADOC, "de*ab7*E840")
    rec = o.EvseStatusRecord.from_oicp({"EvseID": "de*ab7*E840", "EvseStatus": "Available"})
    assert rec.to_oicp()["EvseID"] == "de*ab7*E840"  # echoed unchanged
    assert ids.evse_belongs_to("de*ab7*E840", "DE*AB7")


def test_hash_value_decision() -> None:
    """ERRATUM §11.4 item 29: the CPO/oas HashValueType admits bcrypt strings, the EMP adoc one does
    not; HashedPIN.Function is Bcrypt, so we take the CPO/oas pattern."""
    bcrypt = "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"
    assert not re.match(ids.HASH_VALUE_PATTERN_EMP_ADOC, bcrypt)
    assert o.HashedPIN.from_oicp({"Value": bcrypt, "Function": "Bcrypt"}).value == bcrypt


def test_time_zone_is_anchored() -> None:
    """The published TimeZone pattern is unanchored (matches inside garbage) and its class [+,-] admits a
    comma; we anchor it and drop the comma - every value we accept still matches the published one."""
    published = re.compile(r"[U][T][C][+,-][0-9][0-9][:][0-9][0-9]")
    assert published.search("garbage UTC+01:00 garbage") and published.search("UTC,01:00")
    for v in ("garbage UTC+01:00 garbage", "UTC,01:00"):
        with pytest.raises(ValidationError):
            o.Address(country="DEU", city="B", street="Ab", postal_code="1", house_num="1", time_zone=v)
    assert (
        o.Address(country="DEU", city="B", street="Ab", postal_code="1", house_num="1", time_zone="UTC+01:00").time_zone
        == "UTC+01:00"
    )


def test_normalize_id() -> None:
    assert ids.normalize_id("de*ab7*e840*6487") == "DEAB7E8406487"
    assert ids.normalize_id("DE-8EO-CAet5e4XY-3") == "DE8EOCAET5E4XY3"
    assert ids.normalize_id(" +49*810 ") == "+49810"


def test_operator_and_provider_of() -> None:
    assert ids.operator_id_of_evse("DE*AB7*E840*6487") == "DEAB7"
    assert ids.operator_id_of_evse("DEAB7E8406487") == "DEAB7"
    assert ids.operator_id_of_evse("+49*810*000*438") == "+49810"
    assert ids.operator_id_of_evse("49*810*000*438") == "49810"
    with pytest.raises(ValueError):
        ids.operator_id_of_evse("not-an-evse")
    assert ids.provider_id_of_evco("DE-8EO-CAet5e4XY-3") == "DE8EO"
    assert ids.provider_id_of_evco("de*8eo*Aet5e4*3") == "DE8EO"
    with pytest.raises(ValueError):
        ids.provider_id_of_evco("DE-8EO")


def test_belongs_to() -> None:
    assert ids.evse_belongs_to("DE*AB7*E840*6487", "DEAB7")
    assert ids.evse_belongs_to("DEAB7E8406487", "de*ab7")
    assert ids.evse_belongs_to("+49*810*000*438", "49*810")
    assert not ids.evse_belongs_to("DE*AB7*E840*6487", "DE*AB8")
    assert not ids.evse_belongs_to("garbage", "DE*AB7")
    assert ids.evco_belongs_to("DE-8EO-CAet5e4XY-3", "DE*8EO")
    assert not ids.evco_belongs_to("DE-8EO-CAet5e4XY-3", "DE-8EP")
    assert not ids.evco_belongs_to("garbage", "DE-8EO")


def test_new_session_id() -> None:
    values = {ids.new_session_id() for _ in range(100)}
    assert len(values) == 100
    assert all(re.match(ids.SESSION_ID_PATTERN, v) for v in values)


def test_identification_exactly_one() -> None:
    """ERRATUM §11.3 item 25: exactly one of five members (adoc) - enforced."""
    with pytest.raises(ValidationError) as info:
        o.AuthorizeStartRequest.from_oicp({"OperatorID": "DE*ABC", "Identification": {}})
    assert "Identification" in describe_validation_error(info.value)
    ident = o.Identification.remote("DE-DCB-C12345678-X")
    assert ident.kind == "RemoteIdentification" and ident.evco_id == "DE-DCB-C12345678-X"
    assert o.Identification.rfid_mifare("1234ABCD").uid == "1234ABCD"


def test_geo_coordinates_exactly_one() -> None:
    with pytest.raises(ValidationError):
        o.GeoCoordinates.from_oicp({})
    with pytest.raises(ValidationError):
        o.GeoCoordinates.from_oicp(
            {"Google": {"Coordinates": "1.0 2.0"}, "DecimalDegree": {"Latitude": "1.0", "Longitude": "2.0"}}
        )


def test_limits() -> None:
    """Lists: <=100 EvseIDs per status pull, <=10 SignedMeteringValues; lengths from the adoc."""
    evse = "DE*ABC*E1"
    o.PullEvseStatusByIdRequest(provider_id="DE-DCB", evse_id=[evse] * 100)
    with pytest.raises(ValidationError) as info:
        o.PullEvseStatusByIdRequest.from_oicp({"ProviderID": "DE-DCB", "EvseID": [evse] * 101})
    assert describe_validation_error(info.value).startswith("EvseID: ")
    cdr = {
        "SessionID": o.new_session_id(),
        "EvseID": evse,
        "Identification": {"RFIDMifareFamilyIdentification": {"UID": "1234ABCD"}},
        "ChargingStart": "2020-01-01T10:00:00+01:00",
        "ChargingEnd": "2020-01-01T11:00:00+01:00",
        "SessionStart": "2020-01-01T10:00:00+01:00",
        "SessionEnd": "2020-01-01T11:00:00+01:00",
        "ConsumedEnergy": 1.234,
    }
    o.ChargeDetailRecord.from_oicp({**cdr, "SignedMeteringValues": [{"MeteringStatus": "Progress"}] * 10})
    with pytest.raises(ValidationError, match="SignedMeteringValues"):
        o.ChargeDetailRecord.from_oicp({**cdr, "SignedMeteringValues": [{"MeteringStatus": "Progress"}] * 11})
    with pytest.raises(ValidationError, match="ConsumedEnergy"):  # Decimal (,3)
        o.ChargeDetailRecord.from_oicp({**cdr, "ConsumedEnergy": 1.2345})
    assert o.ChargeDetailRecord.from_oicp(cdr).to_oicp()["ConsumedEnergy"] == 1.234
    with pytest.raises(ValidationError, match="AdditionalInfo"):
        o.StatusCode.from_oicp({"Code": "000", "AdditionalInfo": "x" * 1001})
    with pytest.raises(ValidationError, match="CPOPartnerSessionID"):
        o.Acknowledgement.from_oicp({"Result": True, "StatusCode": {"Code": "000"}, "CPOPartnerSessionID": "x" * 251})
    with pytest.raises(ValidationError, match="Code"):
        o.StatusCode.from_oicp({"Code": "999"})


def test_other_errata_decisions() -> None:
    # §11.4 item 32: ChargingFacility.Power integer (CPO oas) vs number (EMP oas) - any number 0..999
    assert o.ChargingFacility.from_oicp({"PowerType": "AC_1_PHASE", "Power": 7.4}).to_oicp()["Power"] == 7.4
    assert o.ChargingFacility.from_oicp({"PowerType": "DC", "Power": 50.0}).to_oicp()["Power"] == 50
    # §11.4 item 33: EnergySource.Percentage 0..99 (adoc 2 digits = oas maximum 99)
    with pytest.raises(ValidationError):
        o.EnergySource.from_oicp({"Energy": "Solar", "Percentage": 100})
    # §11.4 item 37: DynamicInfoAvailable is a string enum; JSON booleans are converted
    rec = o.PushEvseDataRequest.from_oicp(
        __import__("json").loads(
            (
                __import__("pathlib").Path(__file__).resolve().parents[2]
                / ".."
                / "shared"
                / "oicp"
                / "vectors"
                / "cpo_push_evse_data_request_01.json"
            ).read_text()
        )
    ).operator_evse_data.evse_data_record[0]
    data = rec.to_oicp()
    data["DynamicInfoAvailable"] = True
    assert o.EvseDataRecord.from_oicp(data).to_oicp()["DynamicInfoAvailable"] == "true"
    # §11.3 item 19: AuthorizeRemoteStart.SessionID optional on the model
    req = o.AuthorizeRemoteStartRequest.from_oicp(
        {
            "ProviderID": "DE-DCB",
            "EvseID": "DE*ABC*E1",
            "Identification": {"RemoteIdentification": {"EvcoID": "DE-DCB-C12345678-X"}},
        }
    )
    assert req.session_id is None
    # §11.3 item 20: ChargingNotification OperatorID required (CPO adoc + oas)
    with pytest.raises(ValidationError, match="OperatorID"):
        o.parse_charging_notification(
            {
                "Type": "Start",
                "SessionID": o.new_session_id(),
                "EvseID": "DE*ABC*E1",
                "ChargingStart": "2020-01-01T10:00:00Z",
            }
        )
    # Progress needs ChargingDuration or ConsumedEnergyProgress
    with pytest.raises(ValidationError, match="ChargingDuration"):
        o.parse_charging_notification(
            {
                "Type": "Progress",
                "SessionID": o.new_session_id(),
                "EvseID": "DE*ABC*E1",
                "OperatorID": "DE*ABC",
                "ChargingStart": "2020-01-01T10:00:00Z",
                "EventOccurred": "2020-01-01T10:05:00Z",
            }
        )
    with pytest.raises(ValidationError) as info:
        o.parse_charging_notification({"Type": "Bogus"})
    assert describe_validation_error(info.value).startswith("Type: ")


def test_dispatch_pull_evse_status() -> None:
    assert type(o.parse_pull_evse_status({"ProviderID": "DE-DCB"})) is o.PullEvseStatusRequest
    assert type(o.parse_pull_evse_status({"ProviderID": "DE-DCB", "EvseID": ["DE*ABC*E1"]})) is (
        o.PullEvseStatusByIdRequest
    )
    assert type(o.parse_pull_evse_status({"ProviderID": "DE-DCB", "OperatorID": ["DE*ABC"]})) is (
        o.PullEvseStatusByOperatorIdRequest
    )


def test_describe_validation_error_names_oicp_path() -> None:
    body = {
        "ActionType": "update",
        "OperatorEvseStatus": {
            "OperatorID": "DE*ABC",
            "EvseStatusRecord": [
                {"EvseID": "nonsense", "EvseStatus": "Available"},
                {"EvseID": "DE*ABC*E1", "EvseStatus": "Broken"},
            ],
        },
    }
    with pytest.raises(ValidationError) as info:
        o.PushEvseStatusRequest.from_oicp(body)
    text = describe_validation_error(info.value)
    assert text.startswith("OperatorEvseStatus.EvseStatusRecord[0].EvseID: String should match pattern")
    assert "OperatorEvseStatus.EvseStatusRecord[1].EvseStatus: Input should be" in text
    with pytest.raises(ValidationError) as info:
        o.PushEvseStatusRequest.from_oicp({})
    assert describe_validation_error(info.value) == "ActionType: Field required; OperatorEvseStatus: Field required"
    many = {"ActionType": "x", "OperatorEvseStatus": {"EvseStatusRecord": [{"EvseID": "y" * 2000}] * 50}}
    with pytest.raises(ValidationError) as info:
        o.PushEvseStatusRequest.from_oicp(many)
    text = describe_validation_error(info.value)
    assert len(text) < 1000 and text.endswith("more)")
