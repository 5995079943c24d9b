"""Per-peer compatibility profiles (issue #10 point 2): adapt the node to one peer's OICP dialect by
configuration, without code changes.

A peer's ``profile`` names one of the built-in profiles (``strict``, the default: OICP 2.3 as this
node's catalogue writes it; ``hubject``: the hub as a peer, per DIGEST) or a profile of the settings'
top-level ``profiles`` section. What a profile changes, and on which side:

* outbound (``PeerClient.call``, every call to the peer, in one place): the path of an operation
  (``paths``), how the ``{operatorID}``/``{providerID}`` segment is spelled (``id_segment``), where the
  PullEvseStatus variants go (``status_variants``), field names (``field_names``) and date-time values
  (``datetime``) of the body;
* delivery lanes: records per push request (``batch_limits``, with the peer's ``batch_size``);
* inbound (the gateway): the extra paths it serves for the peer's calls (``inbound_paths``, only to
  peers with that profile) and the peer's field names read back to the spec's (``field_names``
  reversed, before validation). Date-time values in any RFC 3339 spelling, IDs with or without
  separators and the DIGEST §11.2 spelling variants are accepted from every peer anyway.

See docs/compatibility.md for how to write one.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from functools import cached_property
from typing import Any, get_args
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.oicp.base import OICPModel, format_oicp_datetime
from shared.oicp.messages import PullEvseStatusByIdRequest, PullEvseStatusByOperatorIdRequest
from shared.oicp.operations import OPERATIONS, OPERATIONS_BY_NAME, Operation

STRICT = "strict"
HUBJECT = "hubject"
DEFAULT_PROFILE = STRICT

#: The operations the delivery lanes push in batches of records (PeerConfig.batch_size).
BATCHED_OPERATIONS = frozenset(
    {"PushEvseData", "PushEvseStatus", "PushPricingProductData", "PushEVSEPricing", "PushAuthenticationData"}
)
ALL_OPERATIONS = "*"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,99}$")
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
STATUS_VARIANTS = ("PullEvseStatusById", "PullEvseStatusByOperatorId")


class IdSegment(StrEnum):
    """How the OperatorID/ProviderID in a path is spelled."""

    AS_IS = "as_is"  # as the node has it (DE*GEF)
    WITHOUT_SEPARATORS = "without_separators"  # * and - removed (DEGEF)
    URL_ENCODED = "url_encoded"  # percent-encoded (DE%2AGEF)


class StatusVariants(StrEnum):
    """Where PullEvseStatusById / PullEvseStatusByOperatorId are sent (DIGEST §11.1 item 1)."""

    SEPARATE_PATHS = "separate_paths"  # …/status-records-by-id and …/status-records-by-operator-id (snippets)
    SINGLE_PATH = "single_path"  # all three bodies to …/status-records (Hubject's OpenAPI)


class DateTimeFormat(StrEnum):
    AS_IS = "as_is"  # RFC 3339 as the node writes it: the value's offset (UTC as Z), fraction only if any
    ISO_Z = "iso_z"  # UTC, whole seconds: 2026-11-29T19:17:29Z
    ISO_MILLIS_Z = "iso_millis_z"  # UTC, milliseconds: 2026-11-29T19:17:29.000Z (Hubject's examples)
    ISO_OFFSET = "iso_offset"  # whole seconds, numeric offset always: 2026-11-29T20:17:29+01:00
    ISO_MILLIS_OFFSET = "iso_millis_offset"  # milliseconds, numeric offset: 2026-11-29T20:17:29.000+01:00


_UTC_FORMATS = frozenset({DateTimeFormat.ISO_Z, DateTimeFormat.ISO_MILLIS_Z})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin, or UTC)") from exc


class DateTimeStyle(_Model):
    """Only the date-time fields of the OICP models (SessionStart, ChargingEnd, EventOccurred, LastCall, From,
    To, lastUpdate, ...) are rewritten; no other string is touched, and a value without an offset is left
    as it is."""

    format: DateTimeFormat = Field(
        default=DateTimeFormat.AS_IS,
        description="how each value is spelled: as_is (this node's RFC 3339), iso_z (UTC, seconds, Z), "
        "iso_millis_z (UTC, milliseconds, Z), iso_offset (seconds, +hh:mm), iso_millis_offset",
    )
    timezone: str | None = Field(
        default=None,
        description="UTC or an IANA zone (Europe/Berlin) every value is converted to (absent: each value keeps "
        "its own offset); the *_z formats are always UTC",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            _zone(value)
        return value

    @model_validator(mode="after")
    def _z_is_utc(self) -> DateTimeStyle:
        if self.format in _UTC_FORMATS and self.timezone is not None and _zone(self.timezone) is not UTC:
            raise ValueError(f"format {self.format.value} writes UTC; timezone {self.timezone} contradicts it")
        return self

    @property
    def unchanged(self) -> bool:
        return self.format is DateTimeFormat.AS_IS and self.timezone is None

    def write(self, text: str) -> str:
        """``text`` in this style; a value that is not an aware RFC 3339 date-time is left alone."""
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return text
        if value.tzinfo is None:
            return text
        if self.timezone is not None:
            value = value.astimezone(_zone(self.timezone))
        if self.format is DateTimeFormat.AS_IS:
            return format_oicp_datetime(value)
        millis = self.format in (DateTimeFormat.ISO_MILLIS_Z, DateTimeFormat.ISO_MILLIS_OFFSET)
        if self.format in _UTC_FORMATS:
            value = value.astimezone(UTC)
        written = value.replace(tzinfo=None).isoformat(timespec="milliseconds" if millis else "seconds")
        if self.format in _UTC_FORMATS:
            return written + "Z"
        offset = value.utcoffset() or timedelta(0)
        sign = "-" if offset < timedelta(0) else "+"
        hours, rest = divmod(abs(int(offset.total_seconds())), 3600)
        return f"{written}{sign}{hours:02d}:{rest // 60:02d}"


def _check_template(operation: str, template: str) -> str:
    op = OPERATIONS_BY_NAME[operation]
    if not template.startswith("/") or any(c in template for c in "?# \t") or "//" in template:
        raise ValueError(f"{operation}: {template!r} is not an absolute path without query or spaces")
    placeholders = set(_PLACEHOLDER.findall(template))
    allowed = {op.path_param} if op.path_param else set()
    if extra := placeholders - allowed:
        wanted = f"only {{{op.path_param}}}" if op.path_param else "none"
        raise ValueError(f"{operation}: placeholder {{{sorted(extra)[0]}}} in {template!r} ({wanted} allowed)")
    return template


def _check_operation(name: str, allowed: Collection[str], what: str) -> None:
    if name not in allowed:
        raise ValueError(f"{name!r} is not {what} (known: {', '.join(sorted(allowed))})")


class CompatibilityProfile(_Model):
    """One peer implementation's OICP dialect. Every key is optional: what is not given is the spec
    as written (or the ``base`` profile's)."""

    description: str = Field(default="", description="what implementation this profile is for")
    base: str | None = Field(
        default=None, description="a built-in profile (strict, hubject) this one starts from; its keys override"
    )
    paths: dict[str, str] = Field(
        default_factory=dict,
        description="outbound: operation -> the path the peer serves it at, with {operatorID}/{providerID} where "
        "the catalogue path has it (e.g. AuthorizeRemoteReservationStart: "
        "/api/oicp/charging/v21/providers/{providerID}/authorize-remote-reservation/start)",
    )
    inbound_paths: dict[str, list[str]] = Field(
        default_factory=dict,
        description="inbound: operation -> further paths this node serves it at, to peers with this profile only "
        "(the catalogue path is always served)",
    )
    id_segment: IdSegment = Field(
        default=IdSegment.AS_IS,
        description="outbound: the {operatorID}/{providerID} path segment as_is (DE*GEF), without_separators "
        "(DEGEF) or url_encoded (DE%2AGEF)",
    )
    field_names: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="operation (or * for all) -> {spec name: the peer's name}: renamed at any depth of outbound "
        "bodies, read back from inbound ones",
    )
    datetime: DateTimeStyle = Field(
        default_factory=DateTimeStyle, description="outbound: how date-time values in bodies are written"
    )
    status_variants: StatusVariants = Field(
        default=StatusVariants.SEPARATE_PATHS,
        description="outbound: separate_paths (…/status-records-by-id, …-by-operator-id) or single_path (every "
        "PullEvseStatus body to …/status-records)",
    )
    batch_limits: dict[str, int] = Field(
        default_factory=dict,
        description="push operation -> most records per request (the lower of this and the peer's batch_size)",
    )

    @field_validator("paths")
    @classmethod
    def _check_paths(cls, value: dict[str, str]) -> dict[str, str]:
        for operation, template in value.items():
            _check_operation(operation, OPERATIONS_BY_NAME, "an OICP operation")
            _check_template(operation, template)
        return value

    @field_validator("inbound_paths")
    @classmethod
    def _check_inbound_paths(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        catalogue = {op.path for op in OPERATIONS}
        for operation, templates in value.items():
            _check_operation(operation, OPERATIONS_BY_NAME, "an OICP operation")
            for template in templates:
                _check_template(operation, template)
                if template in catalogue:
                    raise ValueError(f"{operation}: {template} is a catalogue path already")
        return value

    @field_validator("field_names")
    @classmethod
    def _check_field_names(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for scope, renames in value.items():
            if scope != ALL_OPERATIONS:
                _check_operation(scope, OPERATIONS_BY_NAME, "an OICP operation or *")
            for spec_name, peer_name in renames.items():
                for name in (spec_name, peer_name):
                    if not _FIELD_NAME.match(name):
                        raise ValueError(f"{scope}: {name!r} is not an OICP field name")
            if len(set(renames.values())) != len(renames):
                raise ValueError(f"{scope}: two spec names renamed to the same name cannot be read back")
        return value

    @field_validator("batch_limits")
    @classmethod
    def _check_batch_limits(cls, value: dict[str, int]) -> dict[str, int]:
        for operation, limit in value.items():
            _check_operation(operation, BATCHED_OPERATIONS, "a push operation sent in batches")
            if not 1 <= limit <= 10_000:
                raise ValueError(f"{operation}: {limit} records per request is not within 1..10000")
        return value

    @field_validator("base")
    @classmethod
    def _check_base(cls, value: str | None) -> str | None:
        if value is not None:
            _check_operation(value, BUILTIN_PROFILE_NAMES, "a built-in profile")
        return value

    # ---- derived, computed once per profile ---------------------------------------------------

    def on(self, base: CompatibilityProfile) -> CompatibilityProfile:
        """This profile's keys over ``base``'s (maps merged key by key)."""
        # Built anew from plain values: a copy would carry the base's cached properties along.
        merged = base.model_dump()
        merged.update(description=self.description or base.description, base=self.base)
        merged["paths"] = {**base.paths, **self.paths}
        merged["inbound_paths"] = {**base.inbound_paths, **self.inbound_paths}
        scopes = base.field_names.keys() | self.field_names.keys()
        merged["field_names"] = {s: {**base.field_names.get(s, {}), **self.field_names.get(s, {})} for s in scopes}
        merged["batch_limits"] = {**base.batch_limits, **self.batch_limits}
        for key in ("id_segment", "datetime", "status_variants"):
            if key in self.model_fields_set:
                merged[key] = getattr(self, key).model_dump() if key == "datetime" else getattr(self, key)
        return CompatibilityProfile.model_validate(merged)

    @cached_property
    def _identity(self) -> bool:
        """Nothing outbound changes (strict): calls go out exactly as the callers built them."""
        return (
            not self.paths
            and self.id_segment is IdSegment.AS_IS
            and not self.field_names
            and self.datetime.unchanged
            and self.status_variants is StatusVariants.SEPARATE_PATHS
        )

    @cached_property
    def _renames(self) -> dict[str, dict[str, str]]:
        common = self.field_names.get(ALL_OPERATIONS, {})
        return {op.name: {**common, **self.field_names.get(op.name, {})} for op in OPERATIONS}

    def batch_limit(self, operation: str) -> int | None:
        return self.batch_limits.get(operation)

    # ---- outbound -----------------------------------------------------------------------------

    def outbound(self, path: str, body: Any) -> tuple[str, dict[str, Any]]:
        """The path and JSON document of a call to a peer with this profile. ``path`` is the catalogue
        path the caller formatted; one outside the catalogue is sent as it is, body unchanged."""
        document = body.to_oicp()
        variant_body = isinstance(body, PullEvseStatusByIdRequest | PullEvseStatusByOperatorIdRequest)
        if self._identity and not variant_body:
            return path, document
        matched = match_catalogue_path(path)
        if matched is None:
            return path, document
        operation, id_value = matched
        name = variant_of(operation.name, body)
        return self.path_of(name, id_value), self.outbound_document(name, document)

    def path_of(self, operation: str, id_value: str | None) -> str:
        template = self.paths.get(operation)
        if template is None:
            if operation in STATUS_VARIANTS and self.status_variants is StatusVariants.SINGLE_PATH:
                template = OPERATIONS_BY_NAME["PullEvseStatus"].path
            else:
                template = OPERATIONS_BY_NAME[operation].path
        param = OPERATIONS_BY_NAME[operation].path_param
        if param is None or id_value is None:
            return template
        return template.replace(f"{{{param}}}", self.spell_id(id_value))

    def spell_id(self, value: str) -> str:
        if self.id_segment is IdSegment.WITHOUT_SEPARATORS:
            return value.replace("*", "").replace("-", "")
        if self.id_segment is IdSegment.URL_ENCODED:
            return quote(value, safe="")
        return value

    def outbound_document(self, operation: str, document: dict[str, Any]) -> dict[str, Any]:
        renames = self._renames.get(operation, {})
        style = None if self.datetime.unchanged else self.datetime
        if not renames and style is None:
            return document
        keys = datetime_keys()

        def walk(value: Any) -> Any:
            if isinstance(value, dict):
                out = {}
                for key, item in value.items():
                    if style is not None and key in keys and isinstance(item, str):
                        item = style.write(item)
                    else:
                        item = walk(item)
                    out[renames.get(key, key)] = item
                return out
            if isinstance(value, list):
                return [walk(item) for item in value]
            return value

        result: dict[str, Any] = walk(document)
        return result

    # ---- inbound ------------------------------------------------------------------------------

    def inbound_document(self, operation: str, document: dict[str, Any]) -> dict[str, Any]:
        """A body the peer sent, with its field names read back to the spec's (at any depth; a key the
        body also has under the spec's name is left as it is)."""
        renames = self._renames.get(operation, {})
        if not renames:
            return document
        back = {peer: spec for spec, peer in renames.items()}

        def walk(value: Any) -> Any:
            if isinstance(value, dict):
                return {(back[k] if k in back and back[k] not in value else k): walk(v) for k, v in value.items()}
            if isinstance(value, list):
                return [walk(item) for item in value]
            return value

        result: dict[str, Any] = walk(document)
        return result


# ---- the catalogue path of a call ---------------------------------------------------------------


def _template_pattern(template: str) -> re.Pattern[str]:
    parts = _PLACEHOLDER.split(template)
    # split keeps the placeholder names at odd positions
    pattern = "".join(re.escape(p) if i % 2 == 0 else "([^/]+)" for i, p in enumerate(parts))
    return re.compile(pattern + "/?")


_CATALOGUE = tuple((_template_pattern(op.path), op) for op in OPERATIONS)


def match_catalogue_path(path: str) -> tuple[Operation, str | None] | None:
    """The catalogue operation of a formatted path, and the ID in it (None without a path parameter)."""
    for pattern, operation in _CATALOGUE:
        if match := pattern.fullmatch(path):
            return operation, match.group(1) if match.groups() else None
    return None


def variant_of(operation: str, body: object) -> str:
    """The PullEvseStatus variant a body asks for (the dispatching path takes all three)."""
    if operation == "PullEvseStatus":
        if isinstance(body, PullEvseStatusByIdRequest):
            return "PullEvseStatusById"
        if isinstance(body, PullEvseStatusByOperatorIdRequest):
            return "PullEvseStatusByOperatorId"
    return operation


def _is_datetime(annotation: Any) -> bool:
    if annotation is datetime or (isinstance(annotation, type) and issubclass(annotation, datetime)):
        return True
    if "AwareDatetime" in repr(annotation):
        return True
    return any(_is_datetime(arg) for arg in get_args(annotation))


_DATETIME_KEYS: frozenset[str] | None = None


def datetime_keys() -> frozenset[str]:
    """The OICP names of every date-time field of the models (read from the models, once)."""
    global _DATETIME_KEYS
    if _DATETIME_KEYS is None:
        import shared.oicp  # noqa: F401  (every model module imported, so every subclass exists)

        keys: set[str] = set()
        pending: list[type[OICPModel]] = [OICPModel]
        while pending:
            model = pending.pop()
            pending.extend(model.__subclasses__())
            for name, info in model.model_fields.items():
                if _is_datetime(info.annotation):
                    keys.add(info.alias or name)
        _DATETIME_KEYS = frozenset(keys)
    return _DATETIME_KEYS


# ---- the built-in profiles ----------------------------------------------------------------------

_STRICT = CompatibilityProfile(
    description="OICP 2.3 as written: the catalogue's paths and this node's spelling (the default)"
)
# Each difference from strict with the DIGEST line that supports it (docs/compatibility.md has the table):
_HUBJECT = CompatibilityProfile(
    description="Hubject's hub as a peer (HBS, OICP 2.3 OpenAPI)",
    # §1.1 rows 13/14 and §11.1 item 1: the hub's OpenAPI has no …-by-id / …-by-operator-id paths; the
    # three PullEvseStatus bodies are all posted to …/status-records.
    status_variants=StatusVariants.SINGLE_PATH,
    # §2 (ChargeDetailRecord row) and §11.1 item 3: the CPO OpenAPI says the hub forwards CDRs to
    # …/cdrmgmt/v21/…; the snippets say v22. The hub is served both.
    inbound_paths={"ChargeDetailRecord": ["/api/oicp/cdrmgmt/v21/operators/{operatorID}/charge-detail-record"]},
    # §11.2 item 10: the push record is ChargingStationId in the CPO asciidoc (EvseDataRecordType) and in
    # both OpenAPI schemas: every source of the hub's push interface.
    field_names={"PushEvseData": {"ChargingStationID": "ChargingStationId"}},
)
BUILTIN_PROFILES: dict[str, CompatibilityProfile] = {STRICT: _STRICT, HUBJECT: _HUBJECT}
BUILTIN_PROFILE_NAMES = frozenset(BUILTIN_PROFILES)


def check_profile_name(name: str) -> str:
    if not _PROFILE_NAME.match(name):
        raise ValueError(f"{name!r} is not a profile name (letters, digits, _ . -, at most 64)")
    return name


def resolve_profiles(defined: Mapping[str, CompatibilityProfile]) -> dict[str, CompatibilityProfile]:
    """The built-in profiles and the settings' own, each merged over its ``base``. A settings profile
    may not take a built-in's name (a peer naming ``strict`` must get the spec)."""
    resolved = dict(BUILTIN_PROFILES)
    for name, profile in defined.items():
        check_profile_name(name)
        if name in BUILTIN_PROFILES:
            raise ValueError(f"{name!r} is a built-in profile; give yours another name (and base: {name})")
        resolved[name] = profile.on(BUILTIN_PROFILES[profile.base]) if profile.base else profile
    return resolved


def inbound_aliases(
    profiles: Mapping[str, CompatibilityProfile],
) -> dict[tuple[str, str], frozenset[str]]:
    """(operation, path) -> the profiles that call this node there, over every profile's ``inbound_paths``.
    A path given to two different operations is refused."""
    aliases: dict[tuple[str, str], set[str]] = {}
    owner: dict[str, str] = {}
    for name, profile in profiles.items():
        for operation, templates in profile.inbound_paths.items():
            for template in templates:
                if owner.setdefault(template, operation) != operation:
                    raise ValueError(
                        f"profiles.{name}.inbound_paths: {template} is {owner[template]}'s in another profile"
                    )
                aliases.setdefault((operation, template), set()).add(name)
    return {key: frozenset(names) for key, names in aliases.items()}
