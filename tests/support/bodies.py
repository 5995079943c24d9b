"""Minimal valid OICP bodies for every operation, with the demo pair's IDs (CPO DE*GEF, EMP DE-GDF)."""

from __future__ import annotations

from typing import Any

CPO = "DE*GEF"
EMP = "DE-GDF"
SESSION = "b2688855-7f00-0002-6d8e-48d883f6abb6"
EVSE = "DE*GEF*E1"
EVCO = "DE-GDF-C12345678-X"
RFID = {"RFIDMifareFamilyIdentification": {"UID": "1234ABCD"}}
REMOTE = {"RemoteIdentification": {"EvcoID": EVCO}}
T0, T1 = "2026-11-25T10:00:00+01:00", "2026-11-25T11:00:00+01:00"


def valid_body(operation: str) -> dict[str, Any]:
    """A body that passes validation and the caller-ID checks for the named operation."""
    bodies: dict[str, dict[str, Any]] = {
        # CPO face, called by the EMP
        "AuthorizeRemoteStart": {"ProviderID": EMP, "EvseID": EVSE, "Identification": REMOTE, "SessionID": SESSION},
        "AuthorizeRemoteStop": {"SessionID": SESSION, "ProviderID": EMP, "EvseID": EVSE},
        "AuthorizeRemoteReservationStart": {
            "ProviderID": EMP,
            "EvseID": EVSE,
            "Identification": REMOTE,
            "SessionID": SESSION,
            "Duration": 10,
        },
        "AuthorizeRemoteReservationStop": {"SessionID": SESSION, "ProviderID": EMP, "EvseID": EVSE},
        "PullEvseData": {"ProviderID": EMP, "GeoCoordinatesResponseFormat": "DecimalDegree"},
        "PullEvseStatus": {"ProviderID": EMP},
        "PullEvseStatusById": {"ProviderID": EMP, "EvseID": [EVSE]},
        "PullEvseStatusByOperatorId": {"ProviderID": EMP, "OperatorID": [CPO]},
        "PullPricingProductData": {"OperatorIDs": [CPO]},
        "PullEVSEPricing": {"ProviderID": EMP, "OperatorIDs": [CPO]},
        "GetChargeDetailRecords": {"ProviderID": EMP, "From": T0, "To": T1},
        "PushAuthenticationData": {
            "ActionType": "fullLoad",
            "ProviderAuthenticationData": {"ProviderID": EMP, "AuthenticationDataRecord": [{"Identification": RFID}]},
        },
        # EMP face, called by the CPO
        "AuthorizeStart": {"OperatorID": CPO, "Identification": RFID, "EvseID": EVSE},
        "AuthorizeStop": {"SessionID": SESSION, "OperatorID": CPO, "Identification": RFID, "EvseID": EVSE},
        "ChargeDetailRecord": {
            "SessionID": SESSION,
            "EvseID": EVSE,
            "Identification": RFID,
            "ChargingStart": T0,
            "ChargingEnd": T1,
            "SessionStart": T0,
            "SessionEnd": T1,
            "ConsumedEnergy": 10.5,
        },
        "ChargingNotification": {
            "Type": "Start",
            "SessionID": SESSION,
            "Identification": RFID,
            "EvseID": EVSE,
            "ChargingStart": T0,
            "OperatorID": CPO,
        },
        "PushEvseData": {
            "ActionType": "insert",
            "OperatorEvseData": {"OperatorID": CPO, "OperatorName": "GEF", "EvseDataRecord": []},
        },
        # delete never conflicts (DIGEST §9.1), so these bodies stay valid whatever a node holds
        "PushEvseStatus": {
            "ActionType": "delete",
            "OperatorEvseStatus": {
                "OperatorID": CPO,
                "EvseStatusRecord": [{"EvseID": EVSE, "EvseStatus": "Available"}],
            },
        },
        "PushPricingProductData": {
            "ActionType": "fullLoad",
            "PricingProductData": {
                "OperatorID": CPO,
                "ProviderID": "*",
                "PricingDefaultPrice": 0.3,
                "PricingDefaultPriceCurrency": "EUR",
                "PricingDefaultReferenceUnit": "KILOWATT_HOUR",
                "PricingProductDataRecords": [],
            },
        },
        "PushEVSEPricing": {
            "ActionType": "fullLoad",
            "EVSEPricing": [{"EvseID": EVSE, "ProviderID": EMP, "EvseIDProductList": ["AC1"]}],
        },
    }
    return bodies[operation]


def evse_record(evse_id: str, name: str = "Station") -> dict[str, Any]:
    """A complete, valid EvseDataRecord; ``name`` makes a changed version tell apart."""
    return {
        "EvseID": evse_id,
        "ChargingStationNames": [{"lang": "en", "value": name}],
        "Address": {
            "Country": "DEU",
            "City": "Berlin",
            "Street": "Main street",
            "PostalCode": "10115",
            "HouseNum": "1",
            "TimeZone": "UTC+01:00",
        },
        "GeoCoordinates": {"DecimalDegree": {"Latitude": "52.520008", "Longitude": "13.404954"}},
        "Plugs": ["Type 2 Outlet"],
        "ChargingFacilities": [{"PowerType": "AC_3_PHASE", "Power": 22}],
        "RenewableEnergy": True,
        "CalibrationLawDataAvailability": "Local",
        "AuthenticationModes": ["NFC RFID Classic"],
        "PaymentOptions": ["Contract"],
        "ValueAddedServices": ["None"],
        "Accessibility": "Free publicly accessible",
        "HotlinePhoneNumber": "+4930123456",
        "IsOpen24Hours": True,
        "IsHubjectCompatible": True,
        "DynamicInfoAvailable": "true",
    }
