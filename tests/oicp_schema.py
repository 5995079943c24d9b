"""Validate OICP bodies against Hubject's bundled OpenAPI 3.0 files (test helper).

The files live outside the repository, in ``<repo>/../shared/oicp/`` (read-only reference material):
``oicp-2.3-cpo-hub.yaml`` (paths an EMP peer serves, called by CPOs) and ``oicp-2.3-emp-hub.yaml``
(paths a CPO peer serves, called by EMPs).

``path`` arguments may be
* an OpenAPI ``paths`` key (``/charging/v21/operators/{operatorID}/authorize/start``),
* the same with the ``/api/oicp`` prefix,
* a concrete request path or full URL (``https://node:8443/api/oicp/evsepull/v23/providers/DE-ABC/
  data-records?page=0&size=20``) - placeholders match any single segment, query strings are ignored,
* the snippet-only variants ``.../status-records-by-id`` and ``.../status-records-by-operator-id``
  (DIGEST §11.1 item 1), which map to the OpenAPI ``.../status-records`` path.

``spec`` is ``"cpo"``, ``"emp"`` or None (= whichever file has the path, CPO file first).

For the two ``oneOf`` bodies (charging notifications, PullEvseStatus request and response) the body is
validated against the ONE matching alternative (DIGEST §11.4 item 38: the alternatives overlap, so a
strict ``oneOf`` check refuses valid messages): notifications by ``Type``, the others by which
alternative-specific required member is present.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from openapi_schema_validator import OAS30Validator, oas30_format_checker

__all__ = [
    "OICP_SHARED_DIR",
    "SchemaValidationError",
    "find_path",
    "load_spec",
    "request_schema",
    "response_schema",
    "select_alternative",
    "validate_request",
    "validate_response",
]

OICP_SHARED_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "oicp"
SPECS = ("cpo", "emp")
API_PREFIX = "/api/oicp"

# Charging-notification alternative per Type: the member that only that alternative requires.
_NOTIFICATION_SIGNATURE = {
    "Start": ("ChargingStart", ("EventOccurred",)),
    "Progress": ("EventOccurred", ()),
    "End": ("ChargingEnd", ()),
    "Error": ("ErrorType", ()),
}


class SchemaValidationError(AssertionError):
    """A body does not conform to the OpenAPI schema (an AssertionError, so pytest shows it well)."""

    def __init__(self, message: str, errors: list[str]) -> None:
        super().__init__(message)
        self.errors = errors


@functools.cache
def load_spec(spec: str) -> dict[str, Any]:
    """The bundled OpenAPI document of ``spec`` (``"cpo"`` or ``"emp"``), loaded once."""
    if spec not in SPECS:
        raise ValueError(f"spec must be one of {SPECS}, not {spec!r}")
    path = (OICP_SHARED_DIR / f"oicp-2.3-{spec}-hub.yaml").resolve()
    with path.open(encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    if not isinstance(doc, dict) or "paths" not in doc:
        raise ValueError(f"{path} is not an OpenAPI document")
    return doc


def _clean_path(path: str) -> str:
    parts = urlsplit(path)
    p = parts.path if (parts.scheme or parts.netloc) else path.split("?", 1)[0].split("#", 1)[0]
    p = p.rstrip("/") or "/"
    if p.startswith(API_PREFIX):
        p = p[len(API_PREFIX) :] or "/"
    p = re.sub(r"/status-records-by-(id|operator-id)$", "/status-records", p)
    return p


@functools.cache
def _path_regexes(spec: str) -> tuple[tuple[re.Pattern[str], str], ...]:
    out = []
    for key in load_spec(spec)["paths"]:
        rx = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(key)) + "$"
        out.append((re.compile(rx), key))
    return tuple(out)


def find_path(path: str, spec: str | None = None) -> tuple[str, str]:
    """(spec, OpenAPI paths key) for a template or concrete path; KeyError if no file has it."""
    wanted = _clean_path(path)
    for candidate in (spec,) if spec else SPECS:
        paths = load_spec(candidate)["paths"]
        if wanted in paths:
            return candidate, wanted
        for rx, key in _path_regexes(candidate):
            if rx.match(wanted):
                return candidate, key
    raise KeyError(f"no OpenAPI path matches {path!r} (spec={spec or 'cpo|emp'})")


def _operation(path: str, spec: str | None) -> dict[str, Any]:
    found_spec, key = find_path(path, spec)
    item = load_spec(found_spec)["paths"][key]
    op = item.get("post")
    if op is None:  # every OICP operation is a POST
        raise KeyError(f"{key} has no POST operation in the {found_spec} file")
    return op  # type: ignore[no-any-return]


def request_schema(path_template: str, spec: str | None = None) -> dict[str, Any]:
    """The JSON schema of the request body (may be a ``oneOf``)."""
    op = _operation(path_template, spec)
    return op["requestBody"]["content"]["application/json"]["schema"]  # type: ignore[no-any-return]


def response_schema(path_template: str, spec: str | None = None) -> dict[str, Any]:
    """The JSON schema of the (only) HTTP 200 response body (may be a ``oneOf``)."""
    op = _operation(path_template, spec)
    responses = op["responses"]
    resp = responses.get("200") or responses.get(200)
    return resp["content"]["application/json"]["schema"]  # type: ignore[no-any-return]


def select_alternative(schema: dict[str, Any], body: object) -> dict[str, Any]:
    """The ``oneOf`` alternative that ``body`` is meant to be (``schema`` itself if not a oneOf)."""
    alts = schema.get("oneOf")
    if not alts:
        return schema
    if not isinstance(body, dict):
        return alts[0]  # type: ignore[no-any-return]
    reqs = [set(alt.get("required", ())) for alt in alts]
    if isinstance(body.get("Type"), str) and all("Type" in r for r in reqs):
        sig = _NOTIFICATION_SIGNATURE.get(body["Type"])
        if sig is None:
            return alts[0]  # type: ignore[no-any-return]  # Type enum violation will be reported
        must, must_not = sig
        for alt, req in zip(alts, reqs, strict=True):
            if must in req and not any(x in req for x in must_not):
                return alt  # type: ignore[no-any-return]
    common = set.intersection(*reqs) if reqs else set()
    specific = [r - common for r in reqs]
    for alt, spec_keys in zip(alts, specific, strict=True):
        if spec_keys and spec_keys <= body.keys():
            return alt  # type: ignore[no-any-return]
    for alt, spec_keys in zip(alts, specific, strict=True):
        if not spec_keys:
            return alt  # type: ignore[no-any-return]
    return alts[0]  # type: ignore[no-any-return]


def _validate(schema: dict[str, Any], body: object, what: str) -> None:
    alt = select_alternative(schema, body)
    validator = OAS30Validator(alt, format_checker=oas30_format_checker)
    errors = sorted(validator.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        lines = [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors]
        raise SchemaValidationError(f"{what} does not conform:\n  " + "\n  ".join(lines[:20]), lines)


def validate_request(path_template: str, body: object, spec: str | None = None) -> None:
    """Raise SchemaValidationError unless ``body`` conforms to the request schema of the path."""
    _validate(request_schema(path_template, spec), body, f"request body for {path_template}")


def validate_response(
    path_template: str, body: object, spec: str | None = None, *, acknowledgement_ok: bool = False
) -> None:
    """Raise SchemaValidationError unless ``body`` conforms to the response schema of the path.

    ``acknowledgement_ok=True`` also accepts an eRoamingAcknowledgement (``Result`` present) for
    operations whose declared answer is something else: per the business-process diagrams, refusals of
    pull operations come back as acknowledgements (DIGEST §6.3), which the OpenAPI does not declare.
    """
    schema = response_schema(path_template, spec)
    if (
        acknowledgement_ok
        and isinstance(body, dict)
        and "Result" in body
        and "Result" not in (schema.get("properties") or {})
    ):
        schema = _acknowledgement_schema(find_path(path_template, spec)[0])
    _validate(schema, body, f"response body for {path_template}")


@functools.cache
def _acknowledgement_schema(spec: str) -> dict[str, Any]:
    for item in load_spec(spec)["paths"].values():
        schema = item["post"]["responses"]["200"]["content"]["application/json"]["schema"]
        if "Result" in (schema.get("properties") or {}):
            return schema  # type: ignore[no-any-return]
    raise KeyError("no eRoamingAcknowledgement response in the spec")  # pragma: no cover
