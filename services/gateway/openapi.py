"""OpenAPI 3.1 documents of the gateway: the OICP faces and the internal API.

* ``oicp_openapi(face)``: the OICP operations a node serves to its peers, from the operation catalogue
  (shared.oicp.operations) and the pydantic models' JSON schemas. Paths are exactly those the node
  serves (Hubject's paths with the ``/api/oicp`` prefix); a node with both roles serves both faces on
  one port, so one document holds both, tagged ``CPO face`` and ``EMP face`` (``face`` narrows it).
* ``internal_openapi()``: every route of the internal API (services/gateway/internal_api.py) with
  its parameters, bodies and answers, the problem answers (401, 400, 404, 409, 422, 503) included.
  ``POST /commands/{command}`` is documented once per command internal systems may send, each with
  its own body schema, since that is how it is called.
* ``openapi_routes()``: ``GET /openapi/oicp.json`` and ``GET /openapi/internal.json`` for the internal
  API's route list. They need no token: the documents describe the node's software, not its data.

``python -m services.gateway.openapi`` writes docs/openapi/oicp.json and docs/openapi/internal.json
(``make docs``); unit tests fail when they are out of date, when an OICP operation or an internal
route is missing from its document, or when a document is not valid OpenAPI.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import inspect
import json
import sys
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.gateway.evse_data_pulls import MAX_EVSE_DATA_PAGE_SIZE, MAX_PAGE_NUMBER
from shared.bus.messages import COMMAND_PAYLOADS, INTERNAL_COMMANDS, CommandReply, CommandType, Token
from shared.oicp import DEFAULT_PAGE_SIZE, Acknowledgement
from shared.oicp.ids import OPERATOR_ID_PATTERN, PROVIDER_ID_PATTERN
from shared.oicp.messages import AuthorizationStartResponse, AuthorizationStopResponse
from shared.oicp.operations import OPERATIONS, ErrorShape, Face, Operation
from shared.peers.probe import ProbeResult
from shared.settings import PeerConfig
from shared.stores.cdr_inbox import InboxCdr
from shared.stores.cdr_outbox import OutboxCdr
from shared.stores.delivery import LaneState
from shared.stores.sessions import Session, SessionState

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"
DOCS_DIR = Path(__file__).resolve().parents[2] / "docs" / "openapi"
OICP_DOCUMENT_PATH = "/openapi/oicp.json"
INTERNAL_DOCUMENT_PATH = "/openapi/internal.json"

FACE_TAGS = {
    Face.CPO: (
        "CPO face",
        "Served by a node with the CPO role (operator_ids), called by its EMP peers: the paths of Hubject's "
        "oicp-2.3-emp-hub.yaml.",
    ),
    Face.EMP: (
        "EMP face",
        "Served by a node with the EMP role (provider_ids), called by its CPO peers: the paths of Hubject's "
        "oicp-2.3-cpo-hub.yaml.",
    ),
}
PATH_PARAMETERS = {
    "operatorID": ("the calling CPO peer's own OperatorID (another ID is refused with 017)", OPERATOR_ID_PATTERN),
    "providerID": ("the calling EMP peer's own ProviderID (another ID is refused with 017)", PROVIDER_ID_PATTERN),
}
ERROR_MODELS: dict[ErrorShape, type[BaseModel]] = {
    ErrorShape.ACKNOWLEDGEMENT: Acknowledgement,
    ErrorShape.AUTHORIZATION_START: AuthorizationStartResponse,
    ErrorShape.AUTHORIZATION_STOP: AuthorizationStopResponse,
}
#: The answers of the OICP pipeline (services/gateway/oicp_face.py) to requests that never were OICP;
#: their body is still the operation's refusal (an eRoamingAcknowledgement or NotAuthorized).
OICP_HTTP_ERRORS = {
    "400": "the body is not JSON, not a JSON object, or nests deeper than `oicp.max_json_depth`",
    "408": "the body was not received within `oicp.read_timeout_seconds`",
    "413": "the body is larger than `oicp.max_body_bytes`",
    "415": "the Content-Type is not application/json",
    "429": "the peer called this operation more often than its rate limit allows (`rate_limits`); "
    "the Retry-After header says when to call again",
    "431": "the request headers are larger than `oicp.max_header_bytes`",
}


# ---- shared helpers --------------------------------------------------------------------------------


def _version() -> str:
    return importlib.metadata.version("oicp-p2p")


def _doc(obj: object) -> str:
    """An object's own docstring as one markdown paragraph per block (reST ``code`` -> `code`)."""
    text = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    if not text:
        return ""
    blocks = inspect.cleandoc(text).replace("``", "`").split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in block.splitlines()) for block in blocks)


def _schemas(inputs: list[tuple[str, str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """JSON schemas of several types, generated together so that shared nested models are one component
    each: (references by key, component schemas sorted by name)."""
    keys, defs = TypeAdapter.json_schemas(
        [(key, mode, TypeAdapter(tp)) for key, mode, tp in inputs],  # type: ignore[misc]
        by_alias=True,
        ref_template=REF,
    )
    references = {key: schema for (key, _mode), schema in keys.items()}
    return references, dict(sorted(defs.get("$defs", {}).items()))


def _one_of(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    return schemas[0] if len(schemas) == 1 else {"oneOf": schemas}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _component(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


# ---- the OICP faces ----------------------------------------------------------------------------------


def request_models(operation: Operation) -> list[type[BaseModel]]:
    """The body models of an operation: the model whose ``model_validate`` it uses, or the alternatives a
    dispatching parser (PullEvseStatus, ChargingNotification) returns, read from its return type."""
    owner = getattr(operation.request, "__self__", None)
    if isinstance(owner, type) and issubclass(owner, BaseModel):
        return [owner]
    returned = typing.get_type_hints(operation.request)["return"]
    return list(typing.get_args(returned)) or [returned]


def response_models(operation: Operation) -> list[type[BaseModel]]:
    """The success answers of an operation. A dispatching path answers each variant's answer: the
    PullEvseStatus path answers eRoamingEVSEStatusByID to a body with EvseID, like the snippet path of
    that variant (the catalogue's operations with the same path in Hubject's files)."""
    if len(request_models(operation)) == 1:
        return [operation.response]
    models: list[type[BaseModel]] = []
    for other in OPERATIONS:
        if other.openapi_path == operation.openapi_path and other.response not in models:
            models.append(other.response)
    return models


def _faces(face: Face | None) -> list[Face]:
    return [face] if face is not None else list(Face)


def _oicp_operation(operation: Operation, refs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    error_model = ERROR_MODELS[operation.error_shape]
    answers = [refs[f"response:{m.__name__}"] for m in response_models(operation)]
    refusal = refs[f"response:{error_model.__name__}"]
    ok_description = "The OICP answer; its StatusCode says whether the operation succeeded."
    if refusal not in answers:
        # pull operations refuse with an eRoamingAcknowledgement (DIGEST §6.3), which Hubject's files omit
        answers.append(refusal)
        ok_description += f" A refusal (017 unknown caller, 022 invalid body, ...) is an {error_model.__name__}."
    request_docs = [_doc(m) for m in request_models(operation)]
    description = "\n\n".join(d for d in request_docs if d)
    parameters: list[dict[str, Any]] = []
    if operation.path_param is not None:
        text, pattern = PATH_PARAMETERS[operation.path_param]
        parameters.append(
            {
                "name": operation.path_param,
                "in": "path",
                "required": True,
                "description": text,
                "schema": {"type": "string", "pattern": pattern},
            }
        )
    if operation.paged:
        # Hubject's files do not list the paging parameters; Hubject and this node take them (Spring paging)
        parameters += [
            {
                "name": "page",
                "in": "query",
                "required": False,
                "description": "page number, from 0 (a page past the end is empty, not an error)",
                "schema": {"type": "integer", "minimum": 0, "maximum": MAX_PAGE_NUMBER, "default": 0},
            },
            {
                "name": "size",
                "in": "query",
                "required": False,
                "description": "records per page (more than the maximum is refused with 022, not clamped)",
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_EVSE_DATA_PAGE_SIZE,
                    "default": DEFAULT_PAGE_SIZE,
                },
            },
        ]
    responses: dict[str, Any] = {"200": {"description": ok_description, "content": _json_content(_one_of(answers))}}
    for status, text in OICP_HTTP_ERRORS.items():
        response: dict[str, Any] = {"description": f"Refused: {text}.", "content": _json_content(refusal)}
        if status == "429":
            response["headers"] = {
                "Retry-After": {"description": "seconds to wait before calling again", "schema": {"type": "integer"}}
            }
        responses[status] = response
    result: dict[str, Any] = {
        "tags": [FACE_TAGS[operation.face][0]],
        "operationId": operation.name,
        "summary": operation.name,
        "description": description,
    }
    if parameters:
        result["parameters"] = parameters
    bodies = [refs[f"request:{m.__name__}"] for m in request_models(operation)]
    result["requestBody"] = {"required": True, "content": _json_content(_one_of(bodies))}
    result["responses"] = responses
    return result


def oicp_openapi(face: Face | None = None) -> dict[str, Any]:
    """The OpenAPI document of the OICP face(s): both faces, or only ``face``."""
    faces = _faces(face)
    operations = [op for op in OPERATIONS if op.face in faces]
    inputs: list[tuple[str, str, Any]] = []
    for op in operations:
        inputs += [(f"request:{m.__name__}", "validation", m) for m in request_models(op)]
        inputs += [(f"response:{m.__name__}", "serialization", m) for m in response_models(op)]
        error_model = ERROR_MODELS[op.error_shape]
        inputs.append((f"response:{error_model.__name__}", "serialization", error_model))
    refs, components = _schemas(list(dict.fromkeys(inputs)))
    description = (
        "The OICP 2.3 operations an oicp-p2p node serves to its peers, with Hubject's paths and bodies. "
        "A node with the CPO role serves the CPO face, one with the EMP role the EMP face; a node with "
        "both roles serves both on its one OICP port (`oicp.host`, `oicp.port`).\n\n"
        "Every answer is HTTP 200 with an OICP body whose StatusCode says what happened: a caller that is "
        "no registered peer, an ID in path or body that is not the caller's, or a body that does not "
        "validate is refused with an OICP status code (017, 018, 022), not an HTTP error. Only requests "
        "that never were OICP (wrong content type, not JSON, too large, too slow) and calls beyond the rate "
        "limit get an HTTP 4xx, still with an OICP refusal as body. An unknown path answers 404, another "
        "method than POST 405.\n\n"
        "Callers are identified by their bearer token (`peers[].inbound_token`) or, with `oicp.tls`, by "
        "their TLS client certificate (`peers[].certificate_identity`); `peers[].auth` says which a peer may use."
    )
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "oicp-p2p node: OICP 2.3 faces",
            "version": _version(),
            "description": description,
        },
        "servers": [
            {
                "url": "{scheme}://{host}:{port}",
                "description": "the node's OICP port",
                "variables": {
                    "scheme": {"enum": ["https", "http"], "default": "https", "description": "https with oicp.tls"},
                    "host": {"default": "localhost", "description": "the node's address"},
                    "port": {"default": "7001", "description": "oicp.port"},
                },
            }
        ],
        "tags": [{"name": FACE_TAGS[f][0], "description": FACE_TAGS[f][1]} for f in faces],
        "security": [{"bearerAuth": []}, {"mutualTLS": []}],
        "paths": {op.path: {"post": _oicp_operation(op, refs)} for op in operations},
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the token the peer presents: `peers[].inbound_token` (or its SHA-256, "
                    "`peers[].inbound_token_sha256`) of this node's configuration",
                },
                "mutualTLS": {
                    "type": "mutualTLS",
                    "description": "a client certificate that chains to `oicp.tls.client_ca_file` and whose "
                    "`oicp.tls.identity_field` is the peer's `peers[].certificate_identity`",
                },
            },
        },
    }


# ---- the internal API --------------------------------------------------------------------------------


PAGE_LIMIT = 1_000_000  # the largest ``page`` the internal API takes (internal_api._int_param)
PROBLEM = _component("Problem")
ACCEPTED: dict[str, Any] = {
    "type": "object",
    "properties": {
        "accepted": {"const": True},
        "event_id": {"type": "string", "format": "uuid", "description": "the command's envelope event_id"},
        "type": {"type": "string", "description": "the command"},
    },
    "required": ["accepted", "event_id", "type"],
}
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "Every error answer of the internal API.",
    "properties": {
        "error": {"type": "string", "description": "what is wrong, in one line"},
        "errors": {
            "type": "array",
            "description": "with 422 for an invalid body: each field and what is wrong with it",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                "required": ["field", "message"],
            },
        },
    },
    "required": ["error"],
}
OPERATION_STATE_SCHEMA: dict[str, Any] = {
    "title": "OperationState",
    "type": "object",
    "description": "What the pulls or fetches of one operation from one peer did (times ISO 8601, UTC).",
    "properties": {
        "last_success": {"type": ["string", "null"]},
        "last_success_started": {"type": ["string", "null"]},
        "last_kind": {"type": ["string", "null"], "description": "full or delta"},
        "last_error": {"type": ["string", "null"]},
        "last_error_at": {"type": ["string", "null"]},
        "consecutive_failures": {"type": "integer"},
        "next_attempt": {"type": ["string", "null"]},
        "pages": {"type": "integer"},
        "records_received": {"type": "integer"},
        "records_applied": {"type": "integer"},
        "records_invalid": {"type": "integer"},
        "records_applied_total": {"type": "integer"},
        "operators": {"type": "array", "items": {"type": "string"}},
        "cursor": {
            "type": ["string", "null"],
            "description": "PullEvseData and GetChargeDetailRecords: the next LastCall / From",
        },
    },
}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json_content(PROBLEM)}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": _json_content(schema)}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _path(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _paging(default: int, maximum: int) -> list[dict[str, Any]]:
    return [
        _query("page", {"type": "integer", "minimum": 0, "maximum": PAGE_LIMIT, "default": 0}, "page number, from 0"),
        _query("size", {"type": "integer", "minimum": 0, "maximum": maximum, "default": default}, "entries per page"),
    ]


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _object(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    schema["required"] = required if required is not None else list(properties)
    return schema


def _view(
    components: dict[str, Any],
    reference: dict[str, str],
    title: str,
    description: str,
    add: dict[str, Any] | None = None,
    remove: tuple[str, ...] = (),
    optional: dict[str, Any] | None = None,
) -> dict[str, str]:
    """A component as the internal API shows it: a model's schema with fields removed (secrets) and added
    (``has_inbound_token``, present always, or ``optional`` ones), as the handler's
    ``as_dict``/``public_view`` builds it. A copy, not an ``allOf``: the models forbid extra fields."""
    name = reference["$ref"].rsplit("/", 1)[-1]
    schema = copy.deepcopy(components[name])
    schema["title"], schema["description"] = title, description
    for field in remove:
        schema["properties"].pop(field, None)
    schema["properties"].update({**(add or {}), **(optional or {})})
    required = [r for r in schema.get("required", []) if r not in remove] + list(add or {})
    schema["required"] = list(dict.fromkeys(required))
    components[title] = schema
    return _component(title)


def _command_operation(command: CommandType, body: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """``POST /commands/<command>``: queued (202), or with the worker's reply for the commands the
    internal API waits for (internal_api.REPLYING_COMMANDS)."""
    from services.gateway import internal_api  # not at the top: internal_api imports this module

    invalid = "The body does not validate (`errors` names the fields)"
    if command is CommandType.CPO_EVSE_STATUS_SET:
        invalid += ", or an EvseID is not of one of this node's operator_ids"
    responses: dict[str, Any] = {
        "400": _problem("The body is not valid JSON."),
        "401": _problem("Missing or wrong bearer token."),
        "404": _problem("This node does not have the command's role (its `cpo.`/`emp.` prefix)."),
        "422": _problem(invalid + "."),
        "503": _problem("The broker did not confirm the command, or no worker replied in time."),
    }
    if command not in internal_api.REPLYING_COMMANDS:
        responses["202"] = _ok("Queued: the command is on the broker; its outcome comes as events.", ACCEPTED)
    elif command in internal_api.OUTCOME_COMMANDS:
        responses["200"] = _ok("The worker's reply: the outcome, a refusal included (`ok` false, OICP `code`).", answer)
    else:
        responses["200"] = _ok("Done: the worker's reply (`changed`, `deleted`).", answer)
        for code, status in internal_api.REPLY_HTTP_STATUS.items():
            responses[str(status)] = _ok(f"Refused by the worker with OICP {code.value}: its reply.", answer)
        # the same status carries an invalid body or a worker's refusal: both shapes
        responses["422"] = {
            "description": invalid + "; or refused by the worker (`ok` false): its reply.",
            "content": _json_content({"oneOf": [PROBLEM, answer]}),
        }
    return {
        "tags": ["commands"],
        "operationId": f"command_{command.value.replace('.', '_')}",
        "summary": f"Send {command.value}",
        "description": _doc(COMMAND_PAYLOADS[command])
        + "\n\nThe body is the command's payload, the `data` of its envelope on the bus (docs/events.md).",
        "parameters": [
            {
                "name": "X-Correlation-ID",
                "in": "header",
                "required": False,
                "description": "carried over to the command and the events it causes",
                "schema": {"type": "string"},
            }
        ],
        "requestBody": {"required": True, "content": _json_content(body)},
        "responses": dict(sorted(responses.items())),
    }


def _journal_paths(bad_query: dict[str, Any], unauthorized: dict[str, Any]) -> dict[str, Any]:
    """The exchange journal (services/gateway/journal_api.py; README, Exchange journal)."""
    text = {"type": "string"}
    nullable_text = {"type": ["string", "null"]}
    entry = _object(
        {
            "seq": {"type": "integer", "minimum": 1, "description": "position in the node's hash chain"},
            "prev_hash": {**text, "description": "the previous entry's hash (64 zeros for the first)"},
            "hash": {**text, "description": "SHA-256 (hex) of prev_hash + the entry's canonical JSON without hash"},
            "ts": {"type": "number", "description": "Unix seconds"},
            "node": text,
            "direction": {"type": "string", "enum": ["inbound", "outbound"]},
            "peer": {**text, "description": "the peer's ID (anonymous: an unidentified caller)"},
            "operation": text,
            "path": text,
            "http_status": {"type": ["integer", "null"]},
            "status_code": {**nullable_text, "description": "OICP StatusCode.Code of the answer"},
            "error": {**nullable_text, "description": "an outbound call's transport failure (timeout, connect, http)"},
            "duration_ms": {"type": ["number", "null"]},
            "session_ids": _array(text),
            "evse_ids": _array(text),
            "cdr_keys": _array(text),
            "request_digest": {**nullable_text, "description": "SHA-256 (hex) of the request body"},
            "response_digest": {**nullable_text, "description": "SHA-256 (hex) of the response body"},
            "request_body": {**nullable_text, "description": "base64 of the zlib-compressed request body"},
            "response_body": {**nullable_text, "description": "base64 of the zlib-compressed response body"},
        },
        required=["seq", "prev_hash", "hash", "ts", "direction", "peer", "operation", "path"],
        title="JournalEntry",
    )
    moment = {"type": "string", "description": "ISO 8601 (UTC without an offset) or Unix seconds"}
    no_key = _problem("No signing key configured (journal.signing_key_file).")
    return {
        "/journal": {
            "get": {
                "tags": ["journal"],
                "summary": "Search the exchange journal",
                "description": "Sealed entries matching every filter, newest first.",
                "parameters": [
                    _query("session", text, "a SessionID (also CPO/EMP partner session IDs)"),
                    _query("evse", text, "an EvseID"),
                    _query("cdr", text, "a CDR's SessionID"),
                    _query("peer", text, "a peer's ID"),
                    _query("operation", text, "an OICP operation, e.g. PushEvseStatus"),
                    _query("status", text, "an OICP StatusCode (000, 017, …), http-<status> or none"),
                    _query("from", moment, "entries at or after"),
                    _query("to", moment, "entries at or before"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "at most"),
                    _query(
                        "bodies", {"type": "boolean", "default": False}, "add the decoded bodies (request, response)"
                    ),
                ],
                "responses": {
                    "200": _ok(
                        "The entries.",
                        _object({"entries": _array(entry), "count": {"type": "integer", "minimum": 0}}),
                    ),
                    "400": bad_query,
                    "401": unauthorized,
                },
            }
        },
        "/journal/verify": {
            "get": {
                "tags": ["journal"],
                "summary": "Verify the hash chain",
                "description": "Walks the whole chain from its first kept entry; `broken` is the first broken link.",
                "parameters": [
                    _query(
                        "from_seq",
                        {"type": "integer", "minimum": 1},
                        "start at this seq, trusting the hash of the entry before it (default: the first kept entry)",
                    )
                ],
                "responses": {
                    "200": _ok(
                        "The outcome.",
                        _object(
                            {
                                "ok": {"type": "boolean"},
                                "checked": {"type": "integer"},
                                "first_seq": {"type": "integer"},
                                "last_seq": {"type": "integer"},
                                "head": text,
                                "broken": {
                                    "oneOf": [
                                        {"type": "null"},
                                        _object(
                                            {
                                                "seq": {"type": "integer"},
                                                "reason": {
                                                    "type": "string",
                                                    "enum": ["hash", "prev_hash", "gap", "unreadable", "head"],
                                                },
                                                "expected": text,
                                                "found": text,
                                            }
                                        ),
                                    ]
                                },
                            }
                        ),
                    ),
                    "400": bad_query,
                    "401": unauthorized,
                },
            }
        },
        "/journal/public-key": {
            "get": {
                "tags": ["journal"],
                "summary": "The node's public key",
                "description": "The Ed25519 public key (PEM) that verifies the node's exported bundles.",
                "responses": {
                    "200": _ok(
                        "The key.",
                        _object(
                            {"algorithm": {"type": "string", "enum": ["Ed25519"]}, "public_key": text, "node": text}
                        ),
                    ),
                    "401": unauthorized,
                    "404": no_key,
                    "503": _problem("The key file cannot be read."),
                },
            }
        },
        "/journal/export": {
            "get": {
                "tags": ["journal"],
                "summary": "Export a peer's entries, signed",
                "description": "JSON lines: a header, then the peer's sealed entries in the range, oldest first. "
                "The header `X-Journal-Signature` is the Ed25519 signature (base64) over the exact bytes; "
                "`oicp-p2p journal verify-bundle` checks it offline.",
                "parameters": [
                    {"name": "peer", "in": "query", "required": True, "description": "the peer's ID", "schema": text},
                    _query("from", moment, "entries at or after"),
                    _query("to", moment, "entries at or before"),
                ],
                "responses": {
                    "200": {
                        "description": "The bundle.",
                        "headers": {
                            "X-Journal-Signature": {
                                "description": "detached Ed25519 signature, base64",
                                "schema": text,
                            }
                        },
                        "content": {"application/x-ndjson": {"schema": text}},
                    },
                    "400": bad_query,
                    "401": unauthorized,
                    "409": no_key,
                    "503": _problem("The key file cannot be read."),
                },
            }
        },
    }


def internal_openapi() -> dict[str, Any]:
    """The OpenAPI document of the internal API: every route of internal_api.create_internal_app."""
    from services.gateway import internal_api  # not at the top: internal_api imports this module

    commands = [c for c in CommandType if c in INTERNAL_COMMANDS]
    inputs: list[tuple[str, str, Any]] = [
        ("peer:in", "validation", PeerConfig),
        ("peer:out", "serialization", PeerConfig),
        ("token", "serialization", Token),
        ("reply", "serialization", CommandReply),
        ("session", "serialization", Session),
        ("lane", "serialization", LaneState),
        ("probe", "serialization", ProbeResult),
        ("cdr:out", "serialization", OutboxCdr),
        ("cdr:in", "serialization", InboxCdr),
        *((f"command:{c.value}", "validation", COMMAND_PAYLOADS[c]) for c in commands),
    ]
    refs, components = _schemas(inputs)
    components["Problem"] = PROBLEM_SCHEMA
    components["OperationState"] = OPERATION_STATE_SCHEMA
    components["PullState"] = _object(
        {
            "peer_id": {"type": "string"},
            "schedule": {"anyOf": [_component("PullSchedule"), {"type": "null"}]},
            "PullEvseData": _component("OperationState"),
            "PullEvseStatus": _component("OperationState"),
        },
        description="A pull-only CPO peer's schedule (`peers[].pull`) and what its pulls did.",
    )
    components["Readiness"] = _object(
        {
            "ready": {"type": "boolean"},
            "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
        },
        description="Whether the gateway reaches RabbitMQ and Redis.",
    )
    peer = _view(
        components,
        refs["peer:out"],
        "PeerView",
        "A peer as the internal API shows it: its configuration without secrets.",
        add={
            "has_inbound_token": {"type": "boolean", "description": "an inbound token (or its digest) is set"},
            "has_outbound_token": {"type": "boolean", "description": "an outbound token is set"},
        },
        remove=("inbound_token", "outbound_token", "inbound_token_sha256"),
    )
    peer_detail = _view(
        components,
        peer,
        "PeerDetail",
        "A peer with the state of its delivery lanes (EMP peers) or of its scheduled pulls (CPO peers), and "
        "its latest probe (once probed).",
        optional={"delivery": _array(refs["lane"]), "pulls": _component("PullState"), "probe": refs["probe"]},
    )
    token = _view(
        components,
        refs["token"],
        "TokenView",
        "A token of the EMP's store under its key (the upper-cased UID or EvcoID); PINs are never shown.",
        add={"key": {"type": "string"}},
        optional={"has_pin": {"type": "boolean", "description": "present (true) when a QR code medium has a PIN"}},
    )
    cdr_out = _view(
        components,
        refs["cdr:out"],
        "OutboxCdrView",
        "A CDR this CPO node submitted, with its delivery state.",
        add={"forwarded": {"type": "boolean", "description": "the EMP acknowledged it (state delivered)"}},
        remove=("extra",),
    )
    cdr_in = _view(
        components,
        refs["cdr:in"],
        "InboxCdrView",
        "A CDR this EMP node received from a CPO peer (pushed or fetched).",
        add={"direction": {"const": "in"}},
    )
    answer = _view(
        components,
        refs["reply"],
        "CommandAnswer",
        "The worker's reply to a command, with the command's type.",
        add={"type": {"type": "string", "description": "the command"}},
    )
    lane = refs["lane"]
    session = refs["session"]
    session_detail = _view(
        components,
        session,
        "SessionDetail",
        "A session with the history of its transitions.",
        add={"history": _array({"type": "object", "description": "one entry per transition"})},
    )
    pull_state = _component("PullState")
    route_reading = _object(
        {
            "id": {"type": "string"},
            "kind": {"enum": ["EvseID", "EvcoID", "OperatorID", "ProviderID"]},
            "role": {"enum": ["cpo", "emp"], "description": "the role of the peer that serves the ID"},
            "key": {"type": "string", "description": "the normalised OperatorID or ProviderID"},
            "peer_id": {"type": ["string", "null"]},
            "via": {"enum": ["direct", "default_route", None], "description": "null: no route"},
        }
    )
    evse_scope = _query(
        "scope",
        {"enum": ["own", "roaming"]},
        "own: this CPO node's EVSEs; roaming: what CPO peers pushed or were pulled (default: roaming with the "
        "EMP role, else own)",
    )
    direction = _query(
        "direction",
        {"enum": ["in", "out"]},
        "in: CDRs received from CPO peers; out: CDRs submitted to EMP peers (default: in with the EMP role, else out)",
    )
    paging = _paging(DEFAULT_PAGE_SIZE, internal_api.MAX_PAGE_SIZE)
    limit = _query(
        "limit",
        {"type": "integer", "minimum": 0, "maximum": internal_api.MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE},
        "at most this many sessions",
    )
    role = _path("role", "the peer's role", {"enum": ["cpo", "emp"]})
    peer_id = _path("peer_id", "the peer's OperatorID or ProviderID (separators and case do not matter)")
    unauthorized = _problem("Missing or wrong bearer token.")
    bad_query = _problem("A query parameter is invalid (the message names it).")
    no_peer = _problem("No such peer.")
    cdr_list = _array({"oneOf": [cdr_out, cdr_in]})
    monitoring: list[dict[str, list[str]]] = [{"internalToken": []}, {"monitoringToken": []}]
    dead_letter = _object(
        {
            "message_id": {"type": ["string", "null"], "description": "the command's event id"},
            "correlation_id": {"type": ["string", "null"]},
            "exchange": {"type": "string", "description": "the exchange it was published to"},
            "routing_key": {"type": "string", "description": "the command (its routing key)"},
            "kind": {
                "type": "string",
                "description": "rejected (the message is wrong), failed (its handler kept failing), or RabbitMQ's "
                "reason (expired, delivery_limit)",
            },
            "error": {"type": ["string", "null"], "description": "the last error, e.g. the field that is invalid"},
            "service": {"type": ["string", "null"], "description": "the worker that gave up"},
            "failed_at": {"type": ["string", "null"], "format": "date-time"},
            "deliveries": {"type": "integer", "description": "how often it was delivered"},
            "replayable": {"type": "boolean", "description": "false for requests (their sender was answered)"},
            "body": {"description": "the message body: its JSON, or the start of its text"},
        }
    )
    settle_body = {
        "oneOf": [
            _object(
                {"message_ids": {**_array({"type": "string"}), "minItems": 1}},
                ["message_ids"],
                additionalProperties=False,
            ),
            _object({"all": {"const": True}}, ["all"], additionalProperties=False),
        ]
    }

    paths: dict[str, dict[str, Any]] = {
        "/healthz": {
            "get": {
                "tags": ["monitoring"],
                "summary": "Liveness",
                "description": "The gateway process answers; no token (for liveness probes).",
                "security": [],
                "responses": {
                    "200": _ok("Alive.", _object({"status": {"const": "ok"}, "node": {"type": "string"}})),
                },
            }
        },
        "/readyz": {
            "get": {
                "tags": ["monitoring"],
                "summary": "Readiness",
                "description": "RabbitMQ and Redis are reachable. The internal token or `internal.monitoring_token`.",
                "security": monitoring,
                "responses": {
                    "200": _ok("Ready.", _component("Readiness")),
                    "401": unauthorized,
                    "503": _ok("Not ready: `checks` says what is down.", _component("Readiness")),
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["monitoring"],
                "summary": "Prometheus metrics",
                "description": "The gateway's metrics in Prometheus' text format. The internal token or "
                "`internal.monitoring_token`.",
                "security": monitoring,
                "responses": {
                    "200": {"description": "Metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "401": unauthorized,
                },
            }
        },
        OICP_DOCUMENT_PATH: {
            "get": {
                "tags": ["documentation"],
                "summary": "OpenAPI document of the OICP faces",
                "description": "This node's OICP operations (both faces); no token.",
                "security": [],
                "responses": {"200": _ok("An OpenAPI 3.1 document.", {"type": "object"})},
            }
        },
        INTERNAL_DOCUMENT_PATH: {
            "get": {
                "tags": ["documentation"],
                "summary": "OpenAPI document of the internal API",
                "description": "This document; no token.",
                "security": [],
                "responses": {"200": _ok("An OpenAPI 3.1 document.", {"type": "object"})},
            }
        },
        "/peers": {
            "get": {
                "tags": ["peers"],
                "summary": "List peers",
                "description": "Every peer, from the file and added with the API, without secrets.",
                "responses": {"200": _ok("The peers.", _array(peer)), "401": unauthorized},
            },
            "post": {
                "tags": ["peers"],
                "summary": "Add a peer",
                "description": "Registers a peer (the P2P counterpart of Hubject's RegisterProvider / "
                "RegisterOperator); the body is one `peers[]` entry of the configuration (docs/configuration.md).",
                "requestBody": {"required": True, "content": _json_content(refs["peer:in"])},
                "responses": {
                    "201": _ok("Added.", peer),
                    "400": _problem("The body is not valid JSON."),
                    "401": unauthorized,
                    "409": _problem("The peer is registered already, or defined in the configuration file."),
                    "422": _problem("The body does not validate (`errors` names the fields)."),
                },
            },
        },
        "/peers/{role}/{peer_id}": {
            "parameters": [role, peer_id],
            "get": {
                "tags": ["peers"],
                "summary": "Show a peer",
                "description": "The peer, with the state of its delivery lanes (EMP peers) or of its scheduled "
                "pulls (CPO peers with `pull`).",
                "responses": {
                    "200": _ok("The peer.", peer_detail),
                    "400": _problem("role is not cpo or emp."),
                    "401": unauthorized,
                    "404": no_peer,
                },
            },
            "delete": {
                "tags": ["peers"],
                "summary": "Remove a peer",
                "responses": {
                    "204": {"description": "Removed."},
                    "400": _problem("role is not cpo or emp."),
                    "401": unauthorized,
                    "404": no_peer,
                    "409": _problem("The peer is defined in the configuration file: disable it (PATCH) instead."),
                },
            },
            "patch": {
                "tags": ["peers"],
                "summary": "Enable or disable a peer",
                "description": '`{"enabled": false}` stops all traffic with a peer (file or API peer) '
                "without deleting it.",
                "requestBody": {
                    "required": True,
                    "content": _json_content(_object({"enabled": {"type": "boolean"}}, additionalProperties=False)),
                },
                "responses": {
                    "200": _ok("The peer.", peer),
                    "400": _problem("The body is not valid JSON, or role is not cpo or emp."),
                    "401": unauthorized,
                    "404": no_peer,
                    "422": _problem('The body is not {"enabled": true} or {"enabled": false}.'),
                },
            },
        },
    }
    for command in commands:
        paths[f"/commands/{command.value}"] = {
            "post": _command_operation(command, refs[f"command:{command.value}"], answer)
        }
    evse_id = _path("evse_id", "an EvseID")
    paths |= {
        "/evses": {
            "get": {
                "tags": ["look-ups"],
                "summary": "List EVSEs",
                "description": "EVSE data records with their status, by operator and/or by area, paged.",
                "parameters": [
                    evse_scope,
                    *paging,
                    _query("operator", _array({"type": "string"}), "OperatorIDs (repeat the parameter)"),
                    _query("lat", {"type": "number"}, "area centre latitude (with lon and radius_km)"),
                    _query("lon", {"type": "number"}, "area centre longitude"),
                    _query("radius_km", {"type": "number"}, "area radius in km"),
                ],
                "responses": {
                    "200": _ok(
                        "A page of EVSEs.",
                        _object(
                            {
                                "scope": {"enum": ["own", "roaming"]},
                                "page": {"type": "integer"},
                                "size": {"type": "integer"},
                                "totalElements": {"type": "integer"},
                                "content": _array(
                                    {
                                        "type": "object",
                                        "description": "an OICP EvseDataRecord with its EvseStatus (null: none known)",
                                    }
                                ),
                            }
                        ),
                    ),
                    "400": bad_query,
                    "401": unauthorized,
                },
            }
        },
        "/evses/{evse_id}": {
            "parameters": [evse_id],
            "get": {
                "tags": ["look-ups"],
                "summary": "Show an EVSE",
                "description": "Its data and status, from this node's own EVSEs or from what CPO peers pushed.",
                "responses": {
                    "200": _ok(
                        "The EVSE.",
                        _object(
                            {
                                "EvseID": {"type": "string"},
                                "scope": {"enum": ["own", "roaming"]},
                                "OperatorID": {"type": ["string", "null"]},
                                "OperatorName": {"type": ["string", "null"]},
                                "lastUpdate": {"type": ["string", "null"]},
                                "data": {"type": ["object", "null"], "description": "the OICP EvseDataRecord"},
                                "EvseStatus": {"type": ["string", "null"]},
                                "status_changed_at": {"type": ["string", "null"]},
                            }
                        ),
                    ),
                    "401": unauthorized,
                    "404": _problem("No data or status known for the EVSE."),
                    "422": _problem("Not an EvseID."),
                },
            },
        },
        "/evses/{evse_id}/status": {
            "parameters": [evse_id],
            "get": {
                "tags": ["look-ups"],
                "summary": "An EVSE's status",
                "responses": {
                    "200": _ok(
                        "The status.",
                        _object(
                            {
                                "EvseID": {"type": "string"},
                                "EvseStatus": {"type": "string"},
                                "changed_at": {"type": ["string", "null"]},
                                "source": {"enum": ["own", "roaming"]},
                            }
                        ),
                    ),
                    "401": unauthorized,
                    "404": _problem("No status known for the EVSE."),
                    "422": _problem("Not an EvseID."),
                },
            },
        },
        "/delivery": {
            "get": {
                "tags": ["look-ups"],
                "summary": "Delivery lanes",
                "description": "Every push lane (enabled EMP peer x pushed operation): backlog, last success, "
                "errors, next attempt.",
                "responses": {"200": _ok("The lanes.", _array(lane)), "401": unauthorized},
            }
        },
        "/pulls": {
            "get": {
                "tags": ["look-ups"],
                "summary": "Scheduled pulls",
                "description": "The scheduled pulls from pull-only CPO peers: cursor, last success, last error, "
                "next attempt.",
                "responses": {"200": _ok("One entry per peer with `pull`.", _array(pull_state)), "401": unauthorized},
            }
        },
        "/peers/{role}/{peer_id}/probe": {
            "parameters": [role, peer_id],
            "post": {
                "tags": ["peers"],
                "summary": "Probe a peer now",
                "description": "DNS, TCP, the TLS handshake with the peer's configured certificates (https) and "
                "an OICP round trip that changes nothing at the peer (`probe.operation`: PullEvseStatusById of an "
                "unknown EVSE to CPO peers, AuthorizeStop of an unknown session to EMP peers), its answer checked "
                "against the OICP schema. The result is stored (`GET /probes`, the metrics) and returned; a "
                "failed probe is a 200 too, with `ok: false`, `failed_step` and `reason`. No body.",
                "responses": {
                    "200": _ok("The probe's result.", refs["probe"]),
                    "400": _problem("role is not cpo or emp."),
                    "401": unauthorized,
                    "404": no_peer,
                },
            },
        },
        "/probes": {
            "get": {
                "tags": ["look-ups"],
                "summary": "Latest peer probes",
                "description": "The latest probe of every registered peer (the periodic one, "
                "`probes.interval_seconds`, or one on demand); peers never probed are absent.",
                "responses": {"200": _ok("One result per probed peer.", _array(refs["probe"])), "401": unauthorized},
            }
        },
        "/routes/{id}": {
            "parameters": [_path("id", "an EvseID, EvcoID, OperatorID or ProviderID")],
            "get": {
                "tags": ["look-ups"],
                "summary": "Where a call for an ID goes",
                "description": "Its direct peer, the default route (the hub), or none; one entry per reading of "
                "the ID (`DE*ABC` is an OperatorID and a ProviderID alike).",
                "responses": {
                    "200": _ok("The readings.", _array(route_reading)),
                    "401": unauthorized,
                    "422": _problem("Not an EvseID, EvcoID, OperatorID or ProviderID."),
                },
            },
        },
        "/tokens": {
            "get": {
                "tags": ["tokens"],
                "summary": "List tokens",
                "description": "The EMP's token store in key order, paged (PINs are never shown). Change it with "
                "the command emp.token.set.",
                "parameters": paging,
                "responses": {
                    "200": _ok(
                        "A page of tokens.",
                        _object(
                            {
                                "total": {"type": "integer"},
                                "page": {"type": "integer"},
                                "size": {"type": "integer"},
                                "tokens": _array(token),
                            }
                        ),
                    ),
                    "400": bad_query,
                    "401": unauthorized,
                },
            }
        },
        "/tokens/{key}": {
            "parameters": [_path("key", "the token's UID or EvcoID")],
            "get": {
                "tags": ["tokens"],
                "summary": "Show a token",
                "responses": {"200": _ok("The token.", token), "401": unauthorized, "404": _problem("No such token.")},
            },
        },
        "/cdrs": {
            "get": {
                "tags": ["cdrs"],
                "summary": "List CDRs",
                "description": "CDRs by time or by peer, oldest first, paged.",
                "parameters": [
                    direction,
                    *paging,
                    _query("from", {"type": "string", "format": "date-time"}, "from this time (ISO 8601)"),
                    _query("to", {"type": "string", "format": "date-time"}, "until this time (ISO 8601)"),
                    _query("peer", {"type": "string"}, "only this peer's"),
                ],
                "responses": {
                    "200": _ok(
                        "A page of CDRs.",
                        _object({"page": {"type": "integer"}, "size": {"type": "integer"}, "cdrs": cdr_list}),
                    ),
                    "400": bad_query,
                    "401": unauthorized,
                },
            }
        },
        "/dead-letters": {
            "get": {
                "tags": ["dead letters"],
                "summary": "Read the dead-letter queue",
                "description": "The oldest `limit` dead letters, left in the queue: commands that were wrong "
                "(`kind` rejected, at their first delivery) or whose handler kept failing until the last delivery "
                "`rabbitmq.delivery_limit` allows (`kind` failed), each with its error, the service that gave up "
                "and its body; a message RabbitMQ dead-lettered itself shows its reason (e.g. `delivery_limit`).",
                "parameters": [
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 0, "maximum": internal_api.MAX_PAGE_SIZE},
                        f"at most this many messages (default {DEFAULT_PAGE_SIZE})",
                    )
                ],
                "responses": {
                    "200": _ok(
                        "How many dead letters there are, and the oldest of them.",
                        _object({"total": {"type": "integer"}, "messages": _array(dead_letter)}),
                    ),
                    "400": bad_query,
                    "401": unauthorized,
                    "503": _problem("RabbitMQ cannot be reached."),
                },
            }
        },
        "/dead-letters/replay": {
            "post": {
                "tags": ["dead letters"],
                "summary": "Replay dead letters",
                "description": "Publishes each chosen dead letter again to the exchange and routing key it "
                "failed from (without its death headers, with its message id: a worker applies a command once), "
                "then removes it from the dead-letter queue. Requests (`replayable` false) are left: their "
                "sender was answered with an error and sends again.",
                "requestBody": {"required": True, "content": _json_content(settle_body)},
                "responses": {
                    "200": _ok(
                        "The ids replayed, and those left because they cannot be.",
                        _object({"replayed": _array({"type": "string"}), "not_replayable": _array({"type": "string"})}),
                    ),
                    "400": _problem("The body is not valid JSON or names no messages."),
                    "401": unauthorized,
                    "503": _problem("RabbitMQ cannot be reached."),
                },
            }
        },
        "/dead-letters/discard": {
            "post": {
                "tags": ["dead letters"],
                "summary": "Discard dead letters",
                "description": "Removes the chosen dead letters for good.",
                "requestBody": {"required": True, "content": _json_content(settle_body)},
                "responses": {
                    "200": _ok(
                        "The ids discarded.",
                        _object(
                            {"discarded": _array({"type": "string"}), "not_replayable": _array({"type": "string"})}
                        ),
                    ),
                    "400": _problem("The body is not valid JSON or names no messages."),
                    "401": unauthorized,
                    "503": _problem("RabbitMQ cannot be reached."),
                },
            }
        },
        "/cdrs/parked": {
            "get": {
                "tags": ["cdrs"],
                "summary": "Parked CDRs",
                "description": "CDRs whose delivery was given up after `cdr.max_attempts` (or refused): replay "
                "them with the command cpo.cdr.replay.",
                "parameters": paging,
                "responses": {
                    "200": _ok(
                        "A page of parked CDRs.",
                        _object(
                            {
                                "total": {"type": "integer"},
                                "page": {"type": "integer"},
                                "size": {"type": "integer"},
                                "cdrs": _array(cdr_out),
                            }
                        ),
                    ),
                    "400": bad_query,
                    "401": unauthorized,
                },
            }
        },
        "/cdrs/unknown-sessions": {
            "get": {
                "tags": ["cdrs"],
                "summary": "CDRs without a known session",
                "description": "CDRs whose SessionID the ledger did not know when they came (offline sessions, "
                "errors).",
                "parameters": [direction, *paging],
                "responses": {
                    "200": _ok("The CDRs.", _object({"total": {"type": "integer"}, "cdrs": cdr_list})),
                    "400": bad_query,
                    "401": unauthorized,
                },
            }
        },
        "/cdrs/fetches": {
            "get": {
                "tags": ["cdrs"],
                "summary": "CDR fetches",
                "description": "Scheduled and on-demand GetChargeDetailRecords from CPO peers: window cursor, "
                "outcome, errors.",
                "responses": {
                    "200": _ok(
                        "One entry per enabled CPO peer.",
                        _array(
                            _view(
                                components,
                                _component("OperationState"),
                                "CdrFetchState",
                                "A CPO peer's GetChargeDetailRecords fetches.",
                                add={
                                    "peer_id": {"type": "string"},
                                    "interval_seconds": {
                                        "type": ["number", "null"],
                                        "description": "peers[].cdr_fetch_interval_seconds",
                                    },
                                },
                            )
                        ),
                    ),
                    "401": unauthorized,
                },
            }
        },
        "/cdrs/{session_id}": {
            "parameters": [_path("session_id", "the CDR's SessionID")],
            "get": {
                "tags": ["cdrs"],
                "summary": "Show a CDR",
                "description": "A CDR by SessionID: as submitted and delivered (out), as received (in), or both.",
                "responses": {
                    "200": _ok(
                        "The CDR.",
                        _object(
                            {
                                "out": {"anyOf": [cdr_out, {"type": "null"}]},
                                "in": {"anyOf": [cdr_in, {"type": "null"}]},
                            }
                        ),
                    ),
                    "401": unauthorized,
                    "404": _problem("No CDR for the session."),
                },
            },
        },
        "/sessions": {
            "get": {
                "tags": ["sessions"],
                "summary": "List sessions",
                "description": "Sessions by state (most recently changed first) or by EVSE; without a filter, "
                "the number of sessions in each state.",
                "parameters": [
                    _query("state", {"enum": [s.value for s in SessionState]}, "only sessions in this state"),
                    _query("evse", {"type": "string"}, "only sessions at this EvseID"),
                    limit,
                ],
                "responses": {
                    "200": _ok(
                        "The sessions, or the counts.",
                        {
                            "oneOf": [
                                _object({"sessions": _array(session)}),
                                _object(
                                    {"counts": {"type": "object", "additionalProperties": {"type": "integer"}}},
                                    description="without state and evse",
                                ),
                            ]
                        },
                    ),
                    "400": bad_query,
                    "401": unauthorized,
                },
            }
        },
        "/sessions/without-cdr": {
            "get": {
                "tags": ["sessions"],
                "summary": "Ended sessions without a CDR",
                "description": "Ended sessions still waiting for their CDR for longer than `older_than`.",
                "parameters": [
                    _query(
                        "older_than",
                        {"type": "number", "minimum": 0},
                        "seconds (default: sessions.cdr_missing_after_seconds)",
                    ),
                    limit,
                ],
                "responses": {
                    "200": _ok("The sessions.", _object({"sessions": _array(session)})),
                    "400": bad_query,
                    "401": unauthorized,
                },
            }
        },
        "/sessions/{session_id}": {
            "parameters": [_path("session_id", "the session's SessionID")],
            "get": {
                "tags": ["sessions"],
                "summary": "Show a session",
                "description": "The session ledger's record with the history of its transitions.",
                "responses": {
                    "200": _ok("The session.", session_detail),
                    "401": unauthorized,
                    "404": _problem("No such session."),
                },
            },
        },
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "oicp-p2p node: internal API",
            "version": _version(),
            "description": _doc(internal_api)
            + "\n\nThe OpenAPI documents under `/openapi/` need no token either: they describe the software, "
            "not the node's data. Errors are JSON problems (`Problem`). Commands are documented one path each; "
            "their payloads and the events they cause are in docs/events.md.",
        },
        "servers": [{"url": "/", "description": "the node's internal API (`internal.host`, `internal.port`)"}],
        "tags": [
            {"name": "monitoring", "description": "Probes and Prometheus"},
            {"name": "documentation", "description": "The OpenAPI documents (no token)"},
            {"name": "peers", "description": "Roaming partners"},
            {"name": "commands", "description": "The commands of the bus that internal systems may send"},
            {"name": "look-ups", "description": "EVSEs, delivery and pull state, routing"},
            {"name": "tokens", "description": "The EMP's token store"},
            {"name": "cdrs", "description": "Charge detail records"},
            {"name": "sessions", "description": "The session ledger"},
            {"name": "dead letters", "description": "Commands the workers gave up on, with their errors"},
            {"name": "journal", "description": "The exchange journal: search, verification, signed export"},
        ],
        "security": [{"internalToken": []}],
        "paths": {**paths, **_journal_paths(bad_query, unauthorized)},
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "internalToken": {"type": "http", "scheme": "bearer", "description": "`internal.token`"},
                "monitoringToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`internal.monitoring_token`: only /readyz and /metrics",
                },
            },
        },
    }


# ---- serving and writing ---------------------------------------------------------------------------


def render(document: dict[str, Any]) -> str:
    """The committed and served form: stable key order as built, two-space indent, final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _endpoint(build: Callable[[], dict[str, Any]]) -> Callable[[Request], Awaitable[Response]]:
    @functools.cache
    def rendered() -> bytes:
        # built once per process, on the first request: the schemas take a moment to generate
        return render(build()).encode()

    async def endpoint(request: Request) -> Response:
        return Response(rendered(), media_type="application/json")

    return endpoint


def openapi_routes() -> list[Route]:
    """The documents' routes for the internal API; no token (documentation, no data)."""
    return [
        Route(OICP_DOCUMENT_PATH, _endpoint(oicp_openapi), methods=["GET"]),
        Route(INTERNAL_DOCUMENT_PATH, _endpoint(internal_openapi), methods=["GET"]),
    ]


def documents() -> dict[str, str]:
    """File name under docs/openapi/ -> content."""
    return {"oicp.json": render(oicp_openapi()), "internal.json": render(internal_openapi())}


def main(argv: list[str]) -> int:
    directory = Path(argv[0]) if argv else DOCS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in documents().items():
        (directory / name).write_text(text, encoding="utf-8")
        print(f"wrote {directory / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
