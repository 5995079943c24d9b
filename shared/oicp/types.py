"""Nested OICP 2.3 data types (DIGEST §5, §7) and enumerations (§8)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import AliasChoices, BeforeValidator, Field, StrictBool, StringConstraints, model_validator

from shared.oicp.base import Km, KWh, OICPDateTime, OICPDecimal, OICPModel
from shared.oicp.ids import (
    CHARGING_POOL_ID_PATTERN,
    COUNTRY_CODE_PATTERN,
    CURRENCY_PATTERN,
    DECIMAL_DEGREE_PATTERN,
    DEGREE_MINUTE_SECONDS_PATTERN,
    EVCO_ID_PATTERN,
    EVSE_ID_PATTERN,
    GOOGLE_COORDINATES_PATTERN,
    HASH_VALUE_PATTERN,
    LANGUAGE_CODE_PATTERN,
    OPERATOR_ID_PATTERN,
    PERIOD_TIME_PATTERN,
    PHONE_NUMBER_PATTERN,
    PROVIDER_ID_OR_ASTERISK_PATTERN,
    PROVIDER_ID_PATTERN,
    TIME_ZONE_PATTERN,
    UID_PATTERN,
)

# --------------------------------------------------------------------------------------------------
# Constrained scalar types
# --------------------------------------------------------------------------------------------------

OperatorId = Annotated[str, StringConstraints(pattern=OPERATOR_ID_PATTERN)]
ProviderId = Annotated[str, StringConstraints(pattern=PROVIDER_ID_PATTERN)]
ProviderIdOrAsterisk = Annotated[str, StringConstraints(pattern=PROVIDER_ID_OR_ASTERISK_PATTERN)]
EvseId = Annotated[str, StringConstraints(pattern=EVSE_ID_PATTERN)]
EvcoId = Annotated[str, StringConstraints(pattern=EVCO_ID_PATTERN)]
Uid = Annotated[str, StringConstraints(pattern=UID_PATTERN)]
ChargingPoolId = Annotated[str, StringConstraints(pattern=CHARGING_POOL_ID_PATTERN)]
ProductId = Annotated[str, StringConstraints(max_length=50)]
PhoneNumber = Annotated[str, StringConstraints(pattern=PHONE_NUMBER_PATTERN)]
CountryCode = Annotated[str, StringConstraints(pattern=COUNTRY_CODE_PATTERN)]
CurrencyCode = Annotated[str, StringConstraints(pattern=CURRENCY_PATTERN)]


def _str(max_length: int, min_length: int = 0) -> Any:
    """String with the adoc "Field Length" (the oas writes it as a numeric ``maximum``, §11.4 item 30)."""
    return Annotated[str, StringConstraints(max_length=max_length, min_length=min_length)]


# --------------------------------------------------------------------------------------------------
# Enumerations (§8)
# --------------------------------------------------------------------------------------------------


class ActionType(StrEnum):
    FULL_LOAD = "fullLoad"
    UPDATE = "update"
    INSERT = "insert"
    DELETE = "delete"


class DeltaType(StrEnum):
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


class EvseStatus(StrEnum):
    AVAILABLE = "Available"
    RESERVED = "Reserved"
    OCCUPIED = "Occupied"
    OUT_OF_SERVICE = "OutOfService"
    EVSE_NOT_FOUND = "EvseNotFound"
    UNKNOWN = "Unknown"


class AuthorizationStatus(StrEnum):
    AUTHORIZED = "Authorized"
    NOT_AUTHORIZED = "NotAuthorized"


class RFIDType(StrEnum):
    MIFARE_CLS = "mifareCls"
    MIFARE_DES = "mifareDes"
    CALYPSO = "calypso"
    NFC = "nfc"
    MIFARE_FAMILY = "mifareFamily"


class HashFunction(StrEnum):
    BCRYPT = "Bcrypt"


class LegacyHashFunction(StrEnum):
    MD5 = "MD5"
    SHA_1 = "SHA-1"


class PlugType(StrEnum):
    SMALL_PADDLE_INDUCTIVE = "Small Paddle Inductive"
    LARGE_PADDLE_INDUCTIVE = "Large Paddle Inductive"
    AVCON_CONNECTOR = "AVCON Connector"
    TESLA_CONNECTOR = "Tesla Connector"
    NEMA_5_20 = "NEMA 5-20"
    TYPE_E_FRENCH_STANDARD = "Type E French Standard"
    TYPE_F_SCHUKO = "Type F Schuko"
    TYPE_G_BRITISH_STANDARD = "Type G British Standard"
    TYPE_J_SWISS_STANDARD = "Type J Swiss Standard"
    TYPE_1_CONNECTOR_CABLE_ATTACHED = "Type 1 Connector (Cable Attached)"
    TYPE_2_OUTLET = "Type 2 Outlet"
    TYPE_2_CONNECTOR_CABLE_ATTACHED = "Type 2 Connector (Cable Attached)"
    TYPE_3_OUTLET = "Type 3 Outlet"
    IEC_60309_SINGLE_PHASE = "IEC 60309 Single Phase"
    IEC_60309_THREE_PHASE = "IEC 60309 Three Phase"
    CCS_COMBO_2_PLUG_CABLE_ATTACHED = "CCS Combo 2 Plug (Cable Attached)"
    CCS_COMBO_1_PLUG_CABLE_ATTACHED = "CCS Combo 1 Plug (Cable Attached)"
    CHADEMO = "CHAdeMO"


class PowerType(StrEnum):
    AC_1_PHASE = "AC_1_PHASE"
    AC_3_PHASE = "AC_3_PHASE"
    DC = "DC"


class ChargingMode(StrEnum):
    MODE_1 = "Mode_1"
    MODE_2 = "Mode_2"
    MODE_3 = "Mode_3"
    MODE_4 = "Mode_4"
    CHADEMO = "CHAdeMO"


class AuthenticationMode(StrEnum):
    NFC_RFID_CLASSIC = "NFC RFID Classic"
    NFC_RFID_DESFIRE = "NFC RFID DESFire"
    PNC = "PnC"
    REMOTE = "REMOTE"
    DIRECT_PAYMENT = "Direct Payment"
    NO_AUTHENTICATION_REQUIRED = "No Authentication Required"


class PaymentOption(StrEnum):
    NO_PAYMENT = "No Payment"
    DIRECT = "Direct"
    CONTRACT = "Contract"


class ValueAddedService(StrEnum):
    RESERVATION = "Reservation"
    DYNAMIC_PRICING = "DynamicPricing"
    PARKING_SENSORS = "ParkingSensors"
    MAXIMUM_POWER_CHARGING = "MaximumPowerCharging"
    PREDICTIVE_CHARGE_POINT_USAGE = "PredictiveChargePointUsage"
    CHARGING_PLANS = "ChargingPlans"
    ROOF_PROVIDED = "RoofProvided"
    NONE = "None"


class Accessibility(StrEnum):
    FREE_PUBLICLY_ACCESSIBLE = "Free publicly accessible"
    RESTRICTED_ACCESS = "Restricted access"
    PAYING_PUBLICLY_ACCESSIBLE = "Paying publicly accessible"
    TEST_STATION = "Test Station"


class AccessibilityLocation(StrEnum):
    ON_STREET = "OnStreet"
    PARKING_LOT = "ParkingLot"
    PARKING_GARAGE = "ParkingGarage"
    UNDERGROUND_PARKING_GARAGE = "UndergroundParkingGarage"


class CalibrationLawDataAvailability(StrEnum):
    LOCAL = "Local"
    EXTERNAL = "External"
    NOT_AVAILABLE = "Not Available"


class EnergyType(StrEnum):
    SOLAR = "Solar"
    WIND = "Wind"
    HYDRO_POWER = "HydroPower"
    GEOTHERMAL_ENERGY = "GeothermalEnergy"
    BIOMASS = "Biomass"
    COAL = "Coal"
    NUCLEAR_ENERGY = "NuclearEnergy"
    PETROLEUM = "Petroleum"
    NATURAL_GAS = "NaturalGas"


class DynamicInfoAvailable(StrEnum):
    """ERRATUM §11.4 item 37: a STRING enum ("true"/"false"/"auto"), not a boolean.  JSON booleans are
    accepted on input and converted; output is always the string."""

    TRUE = "true"
    FALSE = "false"
    AUTO = "auto"


class ChargingNotificationType(StrEnum):
    START = "Start"
    PROGRESS = "Progress"
    END = "End"
    ERROR = "Error"


class ErrorClass(StrEnum):
    """ErrorType of the Error notification.  ERRATUM §11.2 item 14: the oas enum (``ConnectorError``,
    ``CriticalError``) is OUTPUT; the CPO adoc / EMP snippet spellings with a blank are accepted on input
    and normalised."""

    CONNECTOR_ERROR = "ConnectorError"
    CRITICAL_ERROR = "CriticalError"


class MeteringStatus(StrEnum):
    START = "Start"
    PROGRESS = "Progress"
    END = "End"


class GeoCoordinatesResponseFormat(StrEnum):
    GOOGLE = "Google"
    DEGREE_MINUTE_SECONDS = "DegreeMinuteSeconds"
    DECIMAL_DEGREE = "DecimalDegree"


class DayOfWeek(StrEnum):
    EVERYDAY = "Everyday"
    WORKDAYS = "Workdays"
    WEEKEND = "Weekend"
    MONDAY = "Monday"
    TUESDAY = "Tuesday"
    WEDNESDAY = "Wednesday"
    THURSDAY = "Thursday"
    FRIDAY = "Friday"
    SATURDAY = "Saturday"
    SUNDAY = "Sunday"


class ReferenceUnit(StrEnum):
    """ERRATUM §11.4 item 34: the oas has no enum; the adoc values are enforced."""

    HOUR = "HOUR"
    KILOWATT_HOUR = "KILOWATT_HOUR"
    MINUTE = "MINUTE"


class AdditionalReference(StrEnum):
    START_FEE = "START FEE"
    FIXED_FEE = "FIXED FEE"
    PARKING_FEE = "PARKING FEE"
    MINIMUM_FEE = "MINIMUM FEE"
    MAXIMUM_FEE = "MAXIMUM FEE"


def _error_class_variants(value: Any) -> Any:
    if isinstance(value, str):
        return {"Connector Error": "ConnectorError", "Critical Error": "CriticalError"}.get(value, value)
    return value


def _dynamic_info_from_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


ErrorClassField = Annotated[ErrorClass, BeforeValidator(_error_class_variants)]
DynamicInfoAvailableField = Annotated[DynamicInfoAvailable, BeforeValidator(_dynamic_info_from_bool)]

# --------------------------------------------------------------------------------------------------
# Identification (§5)
# --------------------------------------------------------------------------------------------------


class LegacyHashData(OICPModel):
    function: LegacyHashFunction = Field(alias="Function")
    salt: _str(100) | None = Field(None, alias="Salt")
    value: _str(20) | None = Field(None, alias="Value")


class HashedPIN(OICPModel):
    value: Annotated[str, StringConstraints(pattern=HASH_VALUE_PATTERN)] = Field(alias="Value")
    function: HashFunction = Field(alias="Function")
    legacy_hash_data: LegacyHashData | None = Field(None, alias="LegacyHashData")


class RFIDMifareFamilyIdentification(OICPModel):
    uid: Uid = Field(alias="UID")


class RFIDIdentification(OICPModel):
    uid: Uid = Field(alias="UID")
    rfid: RFIDType = Field(alias="RFID")
    evco_id: EvcoId | None = Field(None, alias="EvcoID")
    printed_number: _str(150) | None = Field(None, alias="PrintedNumber")
    # ERRATUM §11.4 item 36: adoc Date/Time, oas plain string -> we follow the adoc (Date/Time).
    expiry_date: OICPDateTime | None = Field(None, alias="ExpiryDate")


class QRCodeIdentification(OICPModel):
    """``PIN`` (clear text, 0-20 chars, adoc) or ``HashedPIN``.  Which one is allowed depends on the
    message (authorization: PIN only; upload: either) and is checked by the service layer, not here (the
    published examples send both)."""

    evco_id: EvcoId = Field(alias="EvcoID")
    pin: _str(20) | None = Field(None, alias="PIN")
    hashed_pin: HashedPIN | None = Field(None, alias="HashedPIN")


class PlugAndChargeIdentification(OICPModel):
    evco_id: EvcoId = Field(alias="EvcoID")


class RemoteIdentification(OICPModel):
    evco_id: EvcoId = Field(alias="EvcoID")


_IDENTIFICATION_MEMBERS = (
    "RFIDMifareFamilyIdentification",
    "RFIDIdentification",
    "QRCodeIdentification",
    "PlugAndChargeIdentification",
    "RemoteIdentification",
)


class Identification(OICPModel):
    """IdentificationType.

    ERRATUM §11.3 item 25: the adoc says EXACTLY ONE of the five members MUST be present; the oas does
    not express it and the published examples fill all five.  DECISION: we enforce exactly one (a
    message with several media is ambiguous - which EvcoID is to be authorized or billed?).  Which member
    is allowed in which message (e.g. RemoteIdentification only for remote start, no RFIDIdentification in
    authorization) is left to the service layer.
    """

    rfid_mifare_family_identification: RFIDMifareFamilyIdentification | None = Field(
        None, alias="RFIDMifareFamilyIdentification"
    )
    rfid_identification: RFIDIdentification | None = Field(None, alias="RFIDIdentification")
    qr_code_identification: QRCodeIdentification | None = Field(None, alias="QRCodeIdentification")
    plug_and_charge_identification: PlugAndChargeIdentification | None = Field(
        None, alias="PlugAndChargeIdentification"
    )
    remote_identification: RemoteIdentification | None = Field(None, alias="RemoteIdentification")

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        filled = (
            self.rfid_mifare_family_identification,
            self.rfid_identification,
            self.qr_code_identification,
            self.plug_and_charge_identification,
            self.remote_identification,
        )
        if sum(value is not None for value in filled) == 1:
            return self  # the usual case, without the by-name lookups (once per authorization)
        present = [name for name in _IDENTIFICATION_MEMBERS if self._member(name) is not None]
        if len(present) != 1:
            raise ValueError(
                "Identification must contain exactly one of "
                f"{', '.join(_IDENTIFICATION_MEMBERS)} (found {len(present)}"
                + (f": {', '.join(present)})" if present else ")")
            )
        return self

    def _member(self, oicp_name: str) -> OICPModel | None:
        for field_name, info in type(self).model_fields.items():
            if info.alias == oicp_name:
                return getattr(self, field_name)  # type: ignore[no-any-return]
        raise KeyError(oicp_name)  # pragma: no cover

    @property
    def kind(self) -> str:
        """OICP name of the member that is present, e.g. ``"RemoteIdentification"``."""
        return next(name for name in _IDENTIFICATION_MEMBERS if self._member(name) is not None)

    @property
    def evco_id(self) -> str | None:
        """The EvcoID carried by the identification (None for RFID without EvcoID)."""
        member = self._member(self.kind)
        return getattr(member, "evco_id", None)

    @property
    def uid(self) -> str | None:
        """The RFID UID carried by the identification (None for EvcoID-based media)."""
        member = self._member(self.kind)
        return getattr(member, "uid", None)

    @classmethod
    def rfid_mifare(cls, uid: str) -> Self:
        return cls(rfid_mifare_family_identification=RFIDMifareFamilyIdentification(uid=uid))

    @classmethod
    def remote(cls, evco_id: str) -> Self:
        return cls(remote_identification=RemoteIdentification(evco_id=evco_id))

    @classmethod
    def plug_and_charge(cls, evco_id: str) -> Self:
        return cls(plug_and_charge_identification=PlugAndChargeIdentification(evco_id=evco_id))

    @classmethod
    def qr_code(cls, evco_id: str, pin: str | None = None, hashed_pin: HashedPIN | None = None) -> Self:
        return cls(qr_code_identification=QRCodeIdentification(evco_id=evco_id, pin=pin, hashed_pin=hashed_pin))


# --------------------------------------------------------------------------------------------------
# Geo coordinates, address, texts (§7.2, §7.3, §7.6)
# --------------------------------------------------------------------------------------------------


class GoogleCoordinates(OICPModel):
    coordinates: Annotated[str, StringConstraints(pattern=GOOGLE_COORDINATES_PATTERN)] = Field(
        alias="Coordinates",
        # ERRATUM §11.2 item 16: "Coordinatea" is a typo of the CPO adoc; accepted, never output.
        validation_alias=AliasChoices("Coordinates", "Coordinatea"),
    )


class DecimalDegreeCoordinates(OICPModel):
    longitude: Annotated[str, StringConstraints(pattern=DECIMAL_DEGREE_PATTERN)] = Field(alias="Longitude")
    latitude: Annotated[str, StringConstraints(pattern=DECIMAL_DEGREE_PATTERN)] = Field(alias="Latitude")


class DegreeMinuteSecondsCoordinates(OICPModel):
    longitude: Annotated[str, StringConstraints(pattern=DEGREE_MINUTE_SECONDS_PATTERN)] = Field(alias="Longitude")
    latitude: Annotated[str, StringConstraints(pattern=DEGREE_MINUTE_SECONDS_PATTERN)] = Field(alias="Latitude")


class GeoCoordinates(OICPModel):
    """GeoCoordinatesType.  ERRATUM §11.3 item 25: EXACTLY ONE of the three formats (adoc); the oas does
    not say so and one published example fills all three.  DECISION: enforced."""

    google: GoogleCoordinates | None = Field(None, alias="Google")
    decimal_degree: DecimalDegreeCoordinates | None = Field(None, alias="DecimalDegree")
    degree_minute_seconds: DegreeMinuteSecondsCoordinates | None = Field(None, alias="DegreeMinuteSeconds")

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.google is None) + (self.decimal_degree is None) + (self.degree_minute_seconds is None) == 2:
            return self  # the usual case, without building the message (once per EVSE record)
        present = [
            name
            for name, value in (
                ("Google", self.google),
                ("DecimalDegree", self.decimal_degree),
                ("DegreeMinuteSeconds", self.degree_minute_seconds),
            )
            if value is not None
        ]
        if len(present) != 1:
            raise ValueError(
                "GeoCoordinates must contain exactly one of Google, DecimalDegree, DegreeMinuteSeconds "
                f"(found {len(present)}" + (f": {', '.join(present)})" if present else ")")
            )
        return self

    @classmethod
    def from_decimal(cls, latitude: float | str, longitude: float | str) -> Self:
        return cls(decimal_degree=DecimalDegreeCoordinates(latitude=str(latitude), longitude=str(longitude)))


class SearchCenter(OICPModel):
    geo_coordinates: GeoCoordinates = Field(alias="GeoCoordinates")
    radius: Km = Field(alias="Radius")


class InfoText(OICPModel):
    lang: Annotated[str, StringConstraints(pattern=LANGUAGE_CODE_PATTERN)] = Field(alias="lang")
    value: _str(150) = Field(alias="value")


class Address(OICPModel):
    """AddressIso19773Type (lengths from the adoc)."""

    country: CountryCode = Field(alias="Country")
    city: _str(50, 1) = Field(alias="City")
    street: _str(100, 2) = Field(alias="Street")
    postal_code: _str(10) = Field(alias="PostalCode")
    house_num: _str(10) = Field(alias="HouseNum")
    floor: _str(5) | None = Field(None, alias="Floor")
    region: _str(50) | None = Field(None, alias="Region")
    parking_facility: StrictBool | None = Field(None, alias="ParkingFacility")
    parking_spot: _str(5) | None = Field(None, alias="ParkingSpot")
    # TimeZone: anchored pattern, see ids.TIME_ZONE_PATTERN.
    time_zone: Annotated[str, StringConstraints(pattern=TIME_ZONE_PATTERN)] | None = Field(None, alias="TimeZone")


class ChargingFacility(OICPModel):
    """ChargingFacilityType.

    ERRATUM §11.4 item 32: ``Power`` is an integer 0-999 in the CPO oas and the adoc, a ``number`` in
    the EMP oas.  DECISION: accept any number 0-999 (EMP oas; real AC powers such as 7.4 or 3.7 kW are
    not integers); integral values are written as JSON integers (CPO-oas valid), others as numbers.
    """

    power_type: PowerType = Field(alias="PowerType")
    power: Annotated[OICPDecimal, Field(ge=0, le=999, allow_inf_nan=False)] = Field(alias="Power")
    voltage: Annotated[int, Field(ge=0, le=999)] | None = Field(None, alias="Voltage")
    amperage: Annotated[int, Field(ge=0, le=99)] | None = Field(None, alias="Amperage")
    charging_modes: list[ChargingMode] | None = Field(None, alias="ChargingModes")


class EnergySource(OICPModel):
    """ERRATUM §11.4 item 33: Percentage is "2 digits" (adoc) / maximum 99 (oas), so 100 % cannot be
    expressed.  DECISION: 0-99 as both sources agree (a peer validating against the oas would refuse
    100)."""

    energy: EnergyType | None = Field(None, alias="Energy")
    percentage: Annotated[int, Field(ge=0, le=99)] | None = Field(None, alias="Percentage")


class EnvironmentalImpact(OICPModel):
    co2_emission: Annotated[OICPDecimal, Field(ge=0, le=99999)] | None = Field(None, alias="CO2Emission")
    nuclear_waste: Annotated[OICPDecimal, Field(ge=0, le=99999)] | None = Field(None, alias="NuclearWaste")


PeriodTime = Annotated[str, StringConstraints(pattern=PERIOD_TIME_PATTERN)]


class Period(OICPModel):
    begin: PeriodTime = Field(alias="begin")
    end: PeriodTime = Field(alias="end")


class OpeningTimes(OICPModel):
    """OpeningTimesType: ``Period`` everywhere (``Periods`` accepted on input)."""

    period: list[Period] = Field(alias="Period", validation_alias=AliasChoices("Period", "Periods"))
    on: DayOfWeek = Field(alias="on")


class ProductAvailabilityTimes(OICPModel):
    """ERRATUM §11.2 item 13: adoc ``Period`` vs oas schema + every example ``Periods``.  DECISION:
    output ``Periods`` (what the oas requires), accept both."""

    periods: list[Period] = Field(alias="Periods", validation_alias=AliasChoices("Periods", "Period"))
    on: DayOfWeek = Field(alias="on")


# --------------------------------------------------------------------------------------------------
# EVSE data and status (§7.1, §7.7)
# --------------------------------------------------------------------------------------------------


class EvseDataRecord(OICPModel):
    """EvseDataRecordType (push, eRoamingPushEvseData).  ``deltaType``/``lastUpdate`` are set by the
    data holder on pulls; the oas declares them on the push record too (and the examples send them), so
    they are kept here as optional fields."""

    delta_type: DeltaType | None = Field(None, alias="deltaType")
    last_update: OICPDateTime | None = Field(None, alias="lastUpdate")
    evse_id: EvseId = Field(alias="EvseID")
    charging_pool_id: ChargingPoolId | None = Field(None, alias="ChargingPoolID")
    # ERRATUM §11.2 item 10: ChargingStationID (EMP adoc, all examples, consistent "ID" casing) is OUTPUT;
    # ChargingStationId (CPO adoc, both oas schemas) accepted.
    charging_station_id: _str(50) | None = Field(
        None,
        alias="ChargingStationID",
        validation_alias=AliasChoices("ChargingStationID", "ChargingStationId"),
    )
    charging_station_names: list[InfoText] = Field(alias="ChargingStationNames")
    hardware_manufacturer: _str(50) | None = Field(None, alias="HardwareManufacturer")
    charging_station_image: _str(200) | None = Field(None, alias="ChargingStationImage")
    sub_operator_name: _str(100) | None = Field(None, alias="SubOperatorName")
    address: Address = Field(alias="Address")
    geo_coordinates: GeoCoordinates = Field(alias="GeoCoordinates")
    plugs: list[PlugType] = Field(alias="Plugs")
    dynamic_power_level: StrictBool | None = Field(None, alias="DynamicPowerLevel")
    charging_facilities: list[ChargingFacility] = Field(alias="ChargingFacilities")
    renewable_energy: StrictBool = Field(alias="RenewableEnergy")
    energy_source: list[EnergySource] | None = Field(None, alias="EnergySource")
    environmental_impact: EnvironmentalImpact | None = Field(None, alias="EnvironmentalImpact")
    calibration_law_data_availability: CalibrationLawDataAvailability = Field(alias="CalibrationLawDataAvailability")
    authentication_modes: list[AuthenticationMode] = Field(alias="AuthenticationModes")
    max_capacity: Annotated[int, Field(ge=0)] | None = Field(None, alias="MaxCapacity")
    payment_options: list[PaymentOption] = Field(alias="PaymentOptions")
    value_added_services: list[ValueAddedService] = Field(alias="ValueAddedServices")
    accessibility: Accessibility = Field(alias="Accessibility")
    accessibility_location: AccessibilityLocation | None = Field(None, alias="AccessibilityLocation")
    hotline_phone_number: PhoneNumber = Field(alias="HotlinePhoneNumber")
    additional_info: list[InfoText] | None = Field(None, alias="AdditionalInfo")
    charging_station_location_reference: list[InfoText] | None = Field(None, alias="ChargingStationLocationReference")
    geo_charging_point_entrance: GeoCoordinates | None = Field(None, alias="GeoChargingPointEntrance")
    is_open_24_hours: StrictBool = Field(alias="IsOpen24Hours")
    opening_times: list[OpeningTimes] | None = Field(None, alias="OpeningTimes")
    hub_operator_id: OperatorId | None = Field(None, alias="HubOperatorID")
    clearinghouse_id: _str(20) | None = Field(None, alias="ClearinghouseID")
    is_hubject_compatible: StrictBool = Field(alias="IsHubjectCompatible")
    dynamic_info_available: DynamicInfoAvailableField = Field(alias="DynamicInfoAvailable")

    @model_validator(mode="after")
    def _payment_options(self) -> Self:
        if PaymentOption.NO_PAYMENT in self.payment_options and len(set(self.payment_options)) > 1:
            raise ValueError("PaymentOptions: 'No Payment' cannot be combined with other options")
        return self


class PullEvseDataRecord(EvseDataRecord):
    """PullEvseDataRecordType: EvseDataRecordType (incl. deltaType, lastUpdate) + OperatorID M,
    OperatorName M."""

    # ERRATUM §11.2 item 11: OperatorID (adoc, oas) is OUTPUT; OperatorId (EMP snippet) accepted.
    operator_id: OperatorId = Field(alias="OperatorID", validation_alias=AliasChoices("OperatorID", "OperatorId"))
    operator_name: _str(100) = Field(alias="OperatorName")


class OperatorEvseData(OICPModel):
    operator_id: OperatorId = Field(alias="OperatorID")
    operator_name: _str(100) = Field(alias="OperatorName")
    evse_data_record: list[EvseDataRecord] = Field(alias="EvseDataRecord")


class EvseStatusRecord(OICPModel):
    evse_id: EvseId = Field(alias="EvseID")
    evse_status: EvseStatus = Field(alias="EvseStatus")


class OperatorEvseStatus(OICPModel):
    operator_id: OperatorId = Field(alias="OperatorID")
    operator_name: _str(100) | None = Field(None, alias="OperatorName")
    evse_status_record: list[EvseStatusRecord] = Field(alias="EvseStatusRecord")


# --------------------------------------------------------------------------------------------------
# Pricing (§7.8, §7.9)
# --------------------------------------------------------------------------------------------------


class AdditionalReferenceRecord(OICPModel):
    additional_reference: AdditionalReference = Field(alias="AdditionalReference")
    additional_reference_unit: ReferenceUnit = Field(alias="AdditionalReferenceUnit")
    price_per_additional_reference_unit: OICPDecimal = Field(alias="PricePerAdditionalReferenceUnit")


class PricingProductDataRecord(OICPModel):
    product_id: ProductId = Field(alias="ProductID")
    reference_unit: ReferenceUnit = Field(alias="ReferenceUnit")
    product_price_currency: CurrencyCode = Field(alias="ProductPriceCurrency")
    price_per_reference_unit: OICPDecimal = Field(alias="PricePerReferenceUnit")
    maximum_product_charging_power: OICPDecimal = Field(alias="MaximumProductChargingPower")
    is_valid_24_hours: StrictBool = Field(alias="IsValid24hours")
    product_availability_times: list[ProductAvailabilityTimes] = Field(alias="ProductAvailabilityTimes")
    additional_references: list[AdditionalReferenceRecord] | None = Field(None, alias="AdditionalReferences")


class PricingProductData(OICPModel):
    operator_id: OperatorId = Field(alias="OperatorID")
    operator_name: _str(100) | None = Field(None, alias="OperatorName")
    provider_id: ProviderIdOrAsterisk = Field(alias="ProviderID")
    pricing_default_price: OICPDecimal = Field(alias="PricingDefaultPrice")
    pricing_default_price_currency: CurrencyCode = Field(alias="PricingDefaultPriceCurrency")
    pricing_default_reference_unit: ReferenceUnit = Field(alias="PricingDefaultReferenceUnit")
    pricing_product_data_records: list[PricingProductDataRecord] = Field(alias="PricingProductDataRecords")


class EvsePricing(OICPModel):
    """EVSEPricingType.  ProviderID may be ``*`` (all EMPs) - note that the PullEVSEPricing response
    schema of the oas uses the plain ProviderID pattern, so ``*`` there fails strict oas validation."""

    evse_id: EvseId = Field(alias="EvseID")
    provider_id: ProviderIdOrAsterisk = Field(alias="ProviderID")
    evse_id_product_list: Annotated[list[ProductId], Field(min_length=1)] = Field(alias="EvseIDProductList")


class OperatorEvsePricing(OICPModel):
    operator_id: OperatorId = Field(alias="OperatorID")
    operator_name: _str(100) | None = Field(None, alias="OperatorName")
    evse_pricing: list[EvsePricing] = Field(alias="EVSEPricing")


# --------------------------------------------------------------------------------------------------
# CDR pieces (§7.10)
# --------------------------------------------------------------------------------------------------


class SignedMeteringValue(OICPModel):
    signed_metering_value: _str(3000) | None = Field(None, alias="SignedMeteringValue")
    metering_status: MeteringStatus | None = Field(None, alias="MeteringStatus")


class CalibrationLawVerification(OICPModel):
    calibration_law_certificate_id: _str(100) | None = Field(None, alias="CalibrationLawCertificateID")
    public_key: _str(1000) | None = Field(None, alias="PublicKey")
    metering_signature_url: _str(200) | None = Field(None, alias="MeteringSignatureUrl")
    metering_signature_encoding_format: _str(50) | None = Field(None, alias="MeteringSignatureEncodingFormat")
    signed_metering_values_verification_instruction: _str(400) | None = Field(
        None, alias="SignedMeteringValuesVerificationInstruction"
    )


def _meter_values_from_list(value: Any) -> Any:
    # ERRATUM §11.4 item 35: adoc "list of meter values" vs oas/examples {"meterValues": [...]}.
    # DECISION: accept both, OUTPUT the oas object.
    if isinstance(value, list | tuple):
        return {"meterValues": list(value)}
    return value


class MeterValueInBetween(OICPModel):
    meter_values: list[KWh] = Field(alias="meterValues")


MeterValueInBetweenField = Annotated[MeterValueInBetween, BeforeValidator(_meter_values_from_list)]


class AuthenticationDataRecord(OICPModel):
    identification: Identification = Field(alias="Identification")


class ProviderAuthenticationData(OICPModel):
    provider_id: ProviderId = Field(alias="ProviderID")
    authentication_data_record: list[AuthenticationDataRecord] = Field(alias="AuthenticationDataRecord")


__all__ = [
    "Accessibility",
    "AccessibilityLocation",
    "ActionType",
    "AdditionalReference",
    "AdditionalReferenceRecord",
    "Address",
    "AuthenticationDataRecord",
    "AuthenticationMode",
    "AuthorizationStatus",
    "CalibrationLawDataAvailability",
    "CalibrationLawVerification",
    "ChargingFacility",
    "ChargingMode",
    "ChargingNotificationType",
    "ChargingPoolId",
    "CountryCode",
    "CurrencyCode",
    "DayOfWeek",
    "DecimalDegreeCoordinates",
    "DegreeMinuteSecondsCoordinates",
    "DeltaType",
    "DynamicInfoAvailable",
    "DynamicInfoAvailableField",
    "EnergySource",
    "EnergyType",
    "EnvironmentalImpact",
    "ErrorClass",
    "ErrorClassField",
    "EvcoId",
    "EvseDataRecord",
    "EvseId",
    "EvsePricing",
    "EvseStatus",
    "EvseStatusRecord",
    "GeoCoordinates",
    "GeoCoordinatesResponseFormat",
    "GoogleCoordinates",
    "HashFunction",
    "HashedPIN",
    "Identification",
    "InfoText",
    "KWh",
    "LegacyHashData",
    "LegacyHashFunction",
    "MeterValueInBetween",
    "MeterValueInBetweenField",
    "MeteringStatus",
    "OpeningTimes",
    "OperatorEvseData",
    "OperatorEvsePricing",
    "OperatorEvseStatus",
    "OperatorId",
    "PaymentOption",
    "Period",
    "PhoneNumber",
    "PlugAndChargeIdentification",
    "PlugType",
    "PowerType",
    "PricingProductData",
    "PricingProductDataRecord",
    "ProductAvailabilityTimes",
    "ProductId",
    "ProviderAuthenticationData",
    "ProviderId",
    "ProviderIdOrAsterisk",
    "PullEvseDataRecord",
    "QRCodeIdentification",
    "RFIDIdentification",
    "RFIDMifareFamilyIdentification",
    "RFIDType",
    "ReferenceUnit",
    "RemoteIdentification",
    "SearchCenter",
    "SignedMeteringValue",
    "Uid",
    "ValueAddedService",
]
