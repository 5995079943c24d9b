"""The gateway's OpenAPI documents: valid OpenAPI, complete, faithful to Hubject's paths and to the
internal API's routes, and committed as generated (docs/openapi/*.json)."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from services.gateway.openapi import (
    INTERNAL_DOCUMENT_PATH,
    OICP_DOCUMENT_PATH,
    documents,
    internal_openapi,
    oicp_openapi,
    openapi_routes,
    request_models,
    response_models,
)
from shared.bus.asyncapi import documentation_settings
from shared.bus.messages import INTERNAL_COMMANDS
from shared.oicp.operations import OPERATIONS, Face
from tests.oicp_schema import find_path, load_spec

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
#: The Hubject file that holds each face's paths (shared.oicp.operations).
HUBJECT_FILE = {Face.CPO: "emp", Face.EMP: "cpo"}


@pytest.fixture(scope="module")
def generated() -> Iterator[dict[str, str]]:
    def no_network(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"building the documents must not connect anywhere (tried {address})")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(socket.socket, "connect_ex", no_network)
        yield documents()


@pytest.fixture(scope="module")
def oicp(generated: dict[str, str]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(generated["oicp.json"])
    return document


@pytest.fixture(scope="module")
def internal(generated: dict[str, str]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(generated["internal.json"])
    return document


def operations_of(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def resolve(document: dict[str, Any], reference: str) -> Any:
    node: Any = document
    for part in reference.removeprefix("#/").split("/"):
        node = node[part]
    return node


# ---- validity and currency -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["oicp.json", "internal.json"])
def test_committed_document_is_current(generated: dict[str, str], name: str) -> None:
    path = DOCS / name
    assert path.exists(), f"docs/openapi/{name} is missing: run `make docs`"
    assert path.read_text(encoding="utf-8") == generated[name], (
        f"docs/openapi/{name} differs from what the code generates: run `make docs` and commit the result"
    )


def test_generation_is_deterministic(generated: dict[str, str]) -> None:
    assert documents() == generated


@pytest.mark.parametrize("name", ["oicp.json", "internal.json"])
def test_document_is_valid_openapi(generated: dict[str, str], name: str) -> None:
    validate(json.loads(generated[name]))


@pytest.mark.parametrize("face", list(Face))
def test_single_face_document_is_valid_openapi(face: Face) -> None:
    document = oicp_openapi(face)
    validate(document)
    assert {op["tags"][0] for _, _, op in operations_of(document)} == {t["name"] for t in document["tags"]}


def test_every_reference_resolves(oicp: dict[str, Any], internal: dict[str, Any]) -> None:
    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for document in (oicp, internal):
        for reference in refs(document):
            resolve(document, reference)


# ---- the OICP faces ----------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.name)
def test_every_catalogue_operation_is_documented(oicp: dict[str, Any], operation: Any) -> None:
    assert operation.path in oicp["paths"], f"{operation.name}: {operation.path} is not in the OICP document"
    documented = oicp["paths"][operation.path]
    assert set(documented) == {"post"}, "OICP operations are POST requests"
    post = documented["post"]
    assert post["operationId"] == operation.name
    assert post["tags"] == [("CPO" if operation.face is Face.CPO else "EMP") + " face"]

    bodies = post["requestBody"]["content"]["application/json"]["schema"]
    titles = {resolve(oicp, ref["$ref"])["title"] for ref in bodies.get("oneOf", [bodies])}
    assert titles == {m.__name__ for m in request_models(operation)}

    answers = post["responses"]["200"]["content"]["application/json"]["schema"]
    answer_titles = {resolve(oicp, ref["$ref"])["title"] for ref in answers.get("oneOf", [answers])}
    assert {m.__name__ for m in response_models(operation)} <= answer_titles

    if operation.path_param is not None:
        assert [p["name"] for p in post["parameters"] if p["in"] == "path"] == [operation.path_param]
    if operation.paged:
        assert {p["name"] for p in post["parameters"] if p["in"] == "query"} == {"page", "size"}


def test_the_oicp_document_has_only_catalogue_paths(oicp: dict[str, Any]) -> None:
    assert set(oicp["paths"]) == {op.path for op in OPERATIONS}


@pytest.mark.parametrize("path", sorted(op.path for op in OPERATIONS))
def test_every_documented_path_is_one_of_hubjects(oicp: dict[str, Any], path: str) -> None:
    """Paths exactly as the node serves them: Hubject's (``/api/oicp`` + its paths key, placeholders by
    any name), in the Hubject file of the face; the snippet variants ``-by-id`` / ``-by-operator-id`` map
    to Hubject's ``status-records`` (DIGEST §11.1 item 1)."""
    assert path.startswith("/api/oicp/")
    face = Face.CPO if oicp["paths"][path]["post"]["tags"] == ["CPO face"] else Face.EMP
    spec, key = find_path(path, HUBJECT_FILE[face])
    assert "post" in load_spec(spec)["paths"][key]
    placeholders = re.sub(r"\{[^/]+\}", "{}", path.removeprefix("/api/oicp"))
    assert re.sub(r"\{[^/]+\}", "{}", key) == re.sub(r"-by-(id|operator-id)$", "", placeholders)


def test_oicp_security_is_bearer_or_mutual_tls(oicp: dict[str, Any]) -> None:
    schemes = oicp["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["mutualTLS"]["type"] == "mutualTLS"
    assert oicp["security"] == [{"bearerAuth": []}, {"mutualTLS": []}]


# ---- the internal API --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def internal_routes() -> list[Route]:
    """The internal API's routes, from the app the gateway builds (building connects to nothing); the
    documentation routes are part of it by design, whether or not they are wired in yet."""
    from services.gateway.context import GatewayContext
    from services.gateway.internal_api import create_internal_app

    app: Any = create_internal_app(GatewayContext.build(documentation_settings()))
    routes = [r for r in app.app.routes if isinstance(r, Route)]
    wired = {r.path for r in routes}
    return routes + [r for r in openapi_routes() if r.path not in wired]


def route_methods(route: Route) -> set[str]:
    return {m.lower() for m in route.methods or ()} - {"head"}


def test_every_internal_route_is_documented(internal: dict[str, Any], internal_routes: list[Route]) -> None:
    """A new route without documentation fails here. A templated route is documented under its own
    path, or (``/commands/{command}``) under concrete paths no other route serves."""
    route_paths = {r.path for r in internal_routes}
    documented = {(path, method) for path, method, _ in operations_of(internal)}
    missing = []
    for route in internal_routes:
        for method in route_methods(route):
            covered = any(
                m == method
                and (p == route.path or ("{" not in p and p not in route_paths and route.path_regex.match(p)))
                for p, m in documented
            )
            if not covered:
                missing.append(f"{method.upper()} {route.path}")
    assert not missing, f"internal API routes missing from the internal OpenAPI document: {missing}"


def test_every_documented_internal_path_is_served(internal: dict[str, Any], internal_routes: list[Route]) -> None:
    unserved = [
        f"{method.upper()} {path}"
        for path, method, _ in operations_of(internal)
        if not any(
            method in route_methods(r) and (r.path == path if "{" in path else r.path_regex.match(path))
            for r in internal_routes
        )
    ]
    assert not unserved, f"documented but not served by the internal API: {unserved}"


def test_every_internal_command_has_its_path(internal: dict[str, Any]) -> None:
    commands = {path.removeprefix("/commands/") for path in internal["paths"] if path.startswith("/commands/")}
    assert commands == {c.value for c in INTERNAL_COMMANDS}


def test_internal_answers_are_documented(internal: dict[str, Any]) -> None:
    for path, method, operation in operations_of(internal):
        responses = operation["responses"]
        assert any(code.startswith("2") for code in responses), f"{method} {path} has no success answer"
        if operation.get("security") != []:
            assert "401" in responses, f"{method} {path} takes a token but does not document 401"
        if "{" in path:
            names = set(re.findall(r"\{([^}]+)\}", path))
            parameters = internal["paths"][path].get("parameters", []) + operation.get("parameters", [])
            assert names == {p["name"] for p in parameters if p["in"] == "path"}
    for path in (OICP_DOCUMENT_PATH, INTERNAL_DOCUMENT_PATH, "/healthz"):
        assert internal["paths"][path]["get"]["security"] == [], f"{path} must need no token"


def test_internal_document_built_directly_matches(internal: dict[str, Any]) -> None:
    assert internal_openapi() == internal


# ---- serving ---------------------------------------------------------------------------------------


async def get(route: Route, path: str) -> tuple[int, dict[str, str], bytes]:
    """One GET through the route's ASGI app, without a token."""
    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b"", "path_params": {}}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await route.handle(scope, receive, send)
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


async def test_routes_serve_the_documents_without_a_token(generated: dict[str, str]) -> None:
    routes = {r.path: r for r in openapi_routes()}
    assert set(routes) == {OICP_DOCUMENT_PATH, INTERNAL_DOCUMENT_PATH}
    for path, name in ((OICP_DOCUMENT_PATH, "oicp.json"), (INTERNAL_DOCUMENT_PATH, "internal.json")):
        status, headers, body = await get(routes[path], path)
        assert status == 200
        assert headers["content-type"].startswith("application/json")
        assert body.decode() == generated[name]
