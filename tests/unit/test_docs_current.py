"""docs/configuration.md and docs/events.md are what the code generates, and cover every key, event,
command and request; deploy/config/example.yaml shows every section of the configuration."""

from __future__ import annotations

import inspect
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from shared import config_reference
from shared.bus import catalogue
from shared.bus.messages import CommandType, EventType, InternalRequest
from shared.settings import NodeSettings

REPO = Path(__file__).resolve().parents[2]
CONFIGURATION = REPO / "docs" / "configuration.md"
EVENTS = REPO / "docs" / "events.md"
EXAMPLE = REPO / "deploy" / "config" / "example.yaml"


# ---- configuration reference ---------------------------------------------------------------------


def nested_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """Written independently of the generator: (model, inside a list) for X, X | None, list[X]."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation, False
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list and args:
        model, _ = nested_model(args[0])
        return model, model is not None
    for arg in args if origin is not None and origin is not dict else ():
        model, in_list = nested_model(arg)
        if model is not None:
            return model, in_list
    return None, False


def map_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a map's values (dict[str, X]): documented as the section ``<key>.<name>``."""
    if get_origin(annotation) is dict:
        value = get_args(annotation)[1]
        return value if inspect.isclass(value) and issubclass(value, BaseModel) else None
    return None


def leaf_paths(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        if (mapped := map_model(info.annotation)) is not None:
            yield from leaf_paths(mapped, path + ".<name>.")
            continue
        child, in_list = nested_model(info.annotation)
        if child is None:
            yield path
        else:
            yield from leaf_paths(child, path + ("[]." if in_list else "."))


def section_paths(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, info in model.model_fields.items():
        if (mapped := map_model(info.annotation)) is not None:
            yield f"{prefix}{info.alias or name}.<name>"
            yield from section_paths(mapped, f"{prefix}{info.alias or name}.<name>.")
            continue
        child, in_list = nested_model(info.annotation)
        if child is not None:
            path = f"{prefix}{info.alias or name}" + ("[]" if in_list else "")
            yield path
            yield from section_paths(child, path + ".")


def test_configuration_reference_is_current() -> None:
    assert CONFIGURATION.exists(), "docs/configuration.md is missing: run `make docs`"
    assert CONFIGURATION.read_text(encoding="utf-8") == config_reference.render(), (
        "docs/configuration.md differs from what shared/settings.py generates: run `make docs` and commit it"
    )


def test_every_leaf_of_the_settings_is_documented() -> None:
    text = config_reference.render()
    leaves = list(leaf_paths(NodeSettings))
    assert {"oicp.tls.client_ca_file", "peers[].pull.page_size", "metrics.ports.cdr", "name"} <= set(leaves)
    missing = [path for path in leaves if f"| `{path}`" not in text]
    assert not missing, f"settings keys missing from docs/configuration.md: {missing}"
    documented = {key.path for section in config_reference.sections() for key in section.keys}
    assert documented == set(leaves), "the generator documents keys the settings do not have"


def test_every_nested_model_is_a_section_with_an_intro() -> None:
    text = config_reference.render()
    for path in section_paths(NodeSettings):
        assert f"\n## `{path}`\n" in text, f"section {path} missing from docs/configuration.md"
    sections = {s.path: s for s in config_reference.sections()}
    assert sections["oicp.tls"].intro[1].startswith("HTTPS on the OICP port"), "model docstrings introduce sections"


def test_keys_show_type_default_constraints_and_environment() -> None:
    keys = {key.path: key for section in config_reference.sections() for key in section.keys}
    page_size = keys["peers[].pull.page_size"]
    assert (page_size.type, page_size.default, page_size.env) == ("int", "`2000`", None)
    assert page_size.constraints == "≥ 1, ≤ 2000"
    assert keys["rabbitmq.url"].env == "OICP_P2P_RABBITMQ__URL"
    assert keys["oicp.tls.client_ca_file"].env == "OICP_P2P_OICP__TLS__CLIENT_CA_FILE"
    assert keys["oicp.port"].default == "**required**"
    assert keys["internal.token"].type == "secret string"
    assert keys["oicp.tls.client_certificates"].type == "one of `required`, `optional`, `none`"
    assert keys["authorization.fallback"].type == "one of `not_authorized`, `authorized`, `tokens`"
    assert keys["operator_ids"].type == "list of string" and "each item: pattern" in keys["operator_ids"].constraints
    assert keys["peers[].pull.provider_id"].constraints.startswith("pattern ")


@pytest.mark.parametrize(
    ("path", "value", "read", "expected"),
    [
        (
            "rabbitmq.url",
            "amqp://docs:secret@broker:5672/",
            lambda s: s.rabbitmq.url,
            "amqp://docs:secret@broker:5672/",
        ),
        ("metrics.ports.cdr", "9999", lambda s: s.metrics.ports.cdr, 9999),
        ("oicp.max_json_depth", "40", lambda s: s.oicp.max_json_depth, 40),
        ("rate_limits.enabled", "false", lambda s: s.rate_limits.enabled, False),
        ("operator_ids", '["DE*DOC"]', lambda s: s.operator_ids, ["DE*DOC"]),
        ("rate_limits.per_minute", '{"PullEvseData": 7}', lambda s: s.rate_limits.per_minute["PullEvseData"], 7),
    ],
)
def test_documented_environment_variables_override_the_file(
    monkeypatch: pytest.MonkeyPatch, path: str, value: str, read: Any, expected: Any
) -> None:
    """The variable the reference names for a key is the one the settings read."""
    keys = {key.path: key for section in config_reference.sections() for key in section.keys}
    assert keys[path].env is not None
    monkeypatch.setenv(keys[path].env, value)
    settings = NodeSettings(
        name="docs",
        operator_ids=["DE*ABC"],
        oicp={"port": 7001},
        internal={"port": 7101, "token": "t"},
        rate_limits={"per_minute": {"PullEvseStatus": 3}},
    )
    assert read(settings) == expected
    if path == "rate_limits.per_minute":  # a map from the environment is merged over the file's
        assert settings.rate_limits.per_minute["PullEvseStatus"] == 3


def test_peers_can_be_given_as_json_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    (peers,) = [s for s in config_reference.sections() if s.path == "peers[]"]
    assert any("`OICP_P2P_PEERS`" in paragraph for paragraph in peers.intro)
    monkeypatch.setenv("OICP_P2P_PEERS", '[{"id": "DE-ENV", "role": "emp", "base_url": "http://127.0.0.1:1"}]')
    settings = NodeSettings(
        name="docs",
        operator_ids=["DE*ABC"],
        oicp={"port": 7001},
        internal={"port": 7101, "token": "t"},
        peers=[{"id": "DE-FIL", "role": "emp", "base_url": "http://127.0.0.1:2"}],
    )
    assert [p.id for p in settings.peers] == ["DE-ENV"], "a list from the environment replaces the file's"


def test_example_file_shows_every_top_level_section() -> None:
    example = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    missing = [name for name in NodeSettings.model_fields if name not in example]
    assert not missing, f"{EXAMPLE.relative_to(REPO)} lacks the top-level keys {missing}"


# ---- event catalogue -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def events_markdown() -> Iterator[str]:
    def no_network(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"building the catalogue must not connect anywhere (tried {address})")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(socket.socket, "connect_ex", no_network)
        yield catalogue.render()


def test_event_catalogue_is_current(events_markdown: str) -> None:
    assert EVENTS.exists(), "docs/events.md is missing: run `make docs`"
    assert EVENTS.read_text(encoding="utf-8") == events_markdown, (
        "docs/events.md differs from what the AsyncAPI document generates: run `make docs` and commit it"
    )


@pytest.mark.parametrize("name", [*EventType, *CommandType, *InternalRequest], ids=str)
def test_every_message_type_has_its_section(events_markdown: str, name: str) -> None:
    assert f"\n### `{name}`\n" in events_markdown, f"{name} has no section in docs/events.md"
    assert f"[`{name}`](#" in events_markdown, f"{name} is missing from the summary tables"


def test_sections_name_exchange_publisher_and_payload(events_markdown: str) -> None:
    sections = events_markdown.split("\n### ")[1:]
    assert len(sections) == len(EventType) + len(CommandType) + len(InternalRequest)
    for section in sections:
        name = section.split("`", 2)[1]
        assert "- Exchange: `<prefix>oicp." in section, name
        assert "- Published by: " in section, name
        assert "- Payload (`data`): `" in section, name
        assert "| Field | Type | Required | Description |" in section, name
    received = next(s for s in sections if s.startswith("`cdr.received`"))
    assert "bind a queue of your own to `<prefix>oicp.events` with the routing key `cdr.received`" in received
    assert "| `session_id` | string | yes |" in received


def test_catalogue_reads_the_asyncapi_document() -> None:
    """Publishers and queues come from the document the services' brokers produce."""
    entries = {(m.exchange, m.routing_key): m for m in catalogue.messages(catalogue.load_document())}
    rejected = entries[("oicp.events", EventType.COMMAND_REJECTED.value)]
    assert rejected.publishers == ["evse_push", "authorization", "sessions", "cdr"]
    submit = entries[("oicp.commands", CommandType.CPO_CDR_SUBMIT.value)]
    assert submit.consumers == [("cdr", "cdr.cpo.cdr.submit")] and submit.publishers == ["gateway"]
    assert submit.payload["title"] == "CdrSubmit"
    decider = entries[("oicp.requests", InternalRequest.EMP_DECIDER_AUTHORIZE_START.value)]
    assert decider.publishers == ["authorization"]
