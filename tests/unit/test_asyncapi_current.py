"""docs/asyncapi.yaml is what the code generates, and documents every command and event of a node."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml

from shared.bus.asyncapi import build_specification
from shared.bus.messages import (
    COMMAND_PAYLOADS,
    EVENT_PAYLOADS,
    INTERNAL_REQUEST_PAYLOADS,
    INTERNAL_REQUEST_REPLIES,
    CommandType,
    EventType,
    InternalRequest,
)
from shared.bus.topology import (
    COMMAND_CONSUMERS,
    COMMANDS_EXCHANGE,
    DEAD_LETTER_EXCHANGE,
    EVENTS_EXCHANGE,
)

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
EVENT_PUBLISHERS = {
    EventType.EVSE_STATUS_CHANGED: {"evse_push"},
    EventType.EVSE_STATUS_RECEIVED: {"evse_push"},
    EventType.EVSE_DATA_RECEIVED: {"evse_push"},
    EventType.EVSE_DATA_CHANGED: {"evse_push"},
    EventType.PRICING_PRODUCTS_CHANGED: {"evse_push"},
    EventType.PRICING_PRODUCTS_RECEIVED: {"evse_push"},
    EventType.EVSE_PRICING_CHANGED: {"evse_push"},
    EventType.EVSE_PRICING_RECEIVED: {"evse_push"},
    EventType.PEER_DELIVERY_FAILED: {"evse_push"},
    EventType.COMMAND_REJECTED: {"evse_push", "authorization", "sessions", "cdr"},
    **{event: {"cdr"} for event in EventType if event.value.startswith("cdr.")},
    EventType.TOKENS_CHANGED: {"authorization"},
    EventType.AUTHORIZATION_DECIDED: {"authorization"},
    EventType.AUTH_DATA_RECEIVED: {"authorization"},
    EventType.SESSION_AUTHORIZED: {"authorization"},
    **{
        event: {"sessions"}
        for event in EventType
        if event.value.startswith("session.") and event is not EventType.SESSION_AUTHORIZED
    },
}


@pytest.fixture(scope="module")
def generated() -> Iterator[str]:
    def no_network(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"building the document must not connect anywhere (tried {address})")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(socket.socket, "connect_ex", no_network)
        yield build_specification()


@pytest.fixture(scope="module")
def spec(generated: str) -> dict[str, Any]:
    return yaml.safe_load(generated)


def resolve(spec: dict[str, Any], reference: dict[str, str]) -> Any:
    pointer = reference["$ref"]
    assert pointer.startswith("#/"), pointer
    node: Any = spec
    for part in pointer[2:].split("/"):
        node = node[unquote(part).replace("~1", "/").replace("~0", "~")]
    return node


def channels_at(spec: dict[str, Any], address: str) -> dict[str, dict[str, Any]]:
    return {name: ch for name, ch in spec["channels"].items() if ch.get("address") == address}


def operation_of(spec: dict[str, Any], channel_name: str) -> dict[str, Any]:
    ops = [op for op in spec["operations"].values() if resolve(spec, op["channel"]) is spec["channels"][channel_name]]
    assert len(ops) == 1, f"channel {channel_name!r} has {len(ops)} operations"
    return ops[0]


def payload_schema(spec: dict[str, Any], channel: dict[str, Any]) -> dict[str, Any]:
    (message_ref,) = channel["messages"].values()
    message = resolve(spec, message_ref)
    return resolve(spec, message["payload"])


def assert_envelope_of(spec: dict[str, Any], channel: dict[str, Any], payload_model: type) -> None:
    schema = payload_schema(spec, channel)
    assert schema["title"] == f"Envelope[{payload_model.__name__}]"
    assert set(schema["properties"]) == {"event_id", "type", "occurred_at", "node", "data"}
    data = resolve(spec, schema["properties"]["data"])
    assert data["title"] == payload_model.__name__
    assert data["properties"], f"{payload_model.__name__} is documented without its fields"


def test_document_is_current(generated: str) -> None:
    assert DOCUMENT.exists(), "docs/asyncapi.yaml is missing: run `make docs`"
    assert DOCUMENT.read_text(encoding="utf-8") == generated, (
        "docs/asyncapi.yaml differs from what the code generates: run `make docs` and commit the result"
    )


def test_generation_is_deterministic(generated: str) -> None:
    assert build_specification() == generated
    assert generated.isascii()


def test_document_header(spec: dict[str, Any]) -> None:
    assert spec["asyncapi"] == "3.0.0"
    assert spec["info"]["title"] == "oicp-p2p node"
    description = spec["info"]["description"]
    for word in (EVENTS_EXCHANGE, COMMANDS_EXCHANGE, DEAD_LETTER_EXCHANGE, "prefix"):
        assert word in description
    for field in ("event_id", "type", "occurred_at", "node", "data"):
        assert f"`{field}`" in description
    assert len(spec["servers"]) == 1


def test_every_reference_resolves(spec: dict[str, Any]) -> None:
    def walk(node: Any) -> Iterator[dict[str, str]]:
        if isinstance(node, dict):
            if "$ref" in node:
                yield node
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    refs = list(walk(spec))
    assert refs
    for reference in refs:
        resolve(spec, reference)


@pytest.mark.parametrize("command", list(CommandType))
def test_command_is_sent_by_gateway_and_received_by_its_service(spec: dict[str, Any], command: CommandType) -> None:
    channels = channels_at(spec, command.value)
    service = COMMAND_CONSUMERS[command]
    assert set(channels) == {f"gateway: command {command.value}", f"{service}: command {command.value}"}

    sent = channels[f"gateway: command {command.value}"]
    assert sent["bindings"]["amqp"]["exchange"]["name"] == COMMANDS_EXCHANGE
    assert operation_of(spec, f"gateway: command {command.value}")["action"] == "send"
    assert_envelope_of(spec, sent, COMMAND_PAYLOADS[command])

    received = channels[f"{service}: command {command.value}"]
    assert received["bindings"]["amqp"]["queue"]["name"] == f"{service}.{command.value}"
    assert operation_of(spec, f"{service}: command {command.value}")["action"] == "receive"
    assert_envelope_of(spec, received, COMMAND_PAYLOADS[command])


@pytest.mark.parametrize("event", list(EventType))
def test_event_is_published_to_the_events_exchange(spec: dict[str, Any], event: EventType) -> None:
    channels = channels_at(spec, event.value)
    assert set(channels) == {f"{service}: event {event.value}" for service in EVENT_PUBLISHERS[event]}
    for name, channel in channels.items():
        assert channel["bindings"]["amqp"]["exchange"]["name"] == EVENTS_EXCHANGE
        assert operation_of(spec, name)["action"] == "send"
        assert_envelope_of(spec, channel, EVENT_PAYLOADS[event])


@pytest.mark.parametrize("request_type", list(InternalRequest))
def test_internal_request_is_documented_with_its_reply(spec: dict[str, Any], request_type: InternalRequest) -> None:
    channels = channels_at(spec, request_type.value)
    assert len(channels) == 1, f"{request_type.value} is documented {len(channels)} times"
    (name, channel) = next(iter(channels.items()))
    assert operation_of(spec, name)["action"] == "send"
    assert_envelope_of(spec, channel, INTERNAL_REQUEST_PAYLOADS[request_type])
    reply = INTERNAL_REQUEST_REPLIES[request_type]
    assert f"Reply: {reply.__name__}" in channel["description"]
    assert f"answered with {reply.__name__}" in spec["info"]["description"]
