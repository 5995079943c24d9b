"""Property-based tests of the OICP models (issue #9): whatever a partner sends, parsing it gives a
model or a validation error that says what is wrong — never another exception (the gateway would
answer 3000 "internal error"; a worker re-validating a command would fail it). A body that parses
serialises to a document that parses again to the same model: what the node sends on (pushes,
forwarded pulls, stored and served records) is what it accepts.

Two sources of input: arbitrary JSON for every operation's request, and the specification's own
example bodies (``../shared/oicp/vectors``, requests and responses) with one member replaced by
arbitrary JSON, a near-miss string or number, or dropped — which reaches deep into the models,
where random JSON never gets past the first required field.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.oicp import OICPModel, describe_validation_error
from shared.oicp.operations import OPERATIONS, Operation

# The vector index and the operation → model table of the conformance test, not a second copy.
_spec = importlib.util.spec_from_file_location("oicp_vectors", Path(__file__).with_name("test_oicp_vectors.py"))
assert _spec is not None and _spec.loader is not None
vectors = sys.modules.setdefault("oicp_vectors", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(vectors)

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    # near misses of the formats the models check: IDs, dates, decimals
    | st.sampled_from(["DE*ABC*E123", "DE-ABC-C12345678-X", "2026-13-01T00:00:00Z", "1e309", "-0", "", " ", "\u0000"])
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=15,
)

#: Examples per operation and per vector (``make soak`` runs 1,000).
EXAMPLES = int(os.environ.get("OICP_P2P_PROPERTY_EXAMPLES", "40"))

# Conforming vectors we have a model for (the conformance test checks they parse unchanged).
CASES = [
    (v.file, vectors.MODELS[(v.operation, v.direction)][0])
    for v in vectors.VECTORS
    if v.conforms and (v.operation, v.direction) in vectors.MODELS
]


def parse_or_refuse(parser: Any, data: Any) -> OICPModel | None:
    """The model, or None after a refusal that names something; any other exception fails the test."""
    try:
        model = parser(data)
    except ValidationError as exc:
        assert describe_validation_error(exc).strip()
        return None
    except ValueError as exc:  # the dispatch helpers (no variant matches): the gateway answers 4004 too
        assert str(exc).strip()
        return None
    assert isinstance(model, OICPModel)
    assert parser(model.to_oicp()) == model  # what we send on is what we accept, unchanged
    return model


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every member and list element of a JSON document, as a path of keys and indexes."""
    found = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += paths(value, (*prefix, index))
    return found


def mutate(doc: Any, path: tuple[Any, ...], replacement: Any, drop: bool) -> Any:
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return doc


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.name)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=JSON)
def test_arbitrary_json_is_parsed_or_refused(operation: Operation, data: Any) -> None:
    parse_or_refuse(operation.request, data)


@pytest.mark.parametrize(("file", "parser"), CASES, ids=[file for file, _ in CASES])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_spec_example_with_one_member_changed_is_parsed_or_refused(file: str, parser: Any, data: Any) -> None:
    doc = json.loads((vectors.VECTORS_DIR / file).read_text(encoding="utf-8"))
    candidates = paths(doc)
    if not candidates:
        pytest.skip(f"{file} has no members")
    path = data.draw(st.sampled_from(candidates), label="path")
    drop = data.draw(st.booleans(), label="drop")
    replacement = None if drop else data.draw(JSON, label="replacement")
    parse_or_refuse(parser, mutate(doc, path, replacement, drop))


def test_every_operation_and_many_examples_are_covered() -> None:
    """The cases are not silently empty (a moved vector directory would make them so)."""
    assert len(OPERATIONS) >= 20
    assert len(CASES) >= 40
