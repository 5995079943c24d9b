"""The event catalogue for internal subscribers (docs/events.md), generated from the AsyncAPI document.

``python -m shared.bus.catalogue > docs/events.md`` (``make docs``) writes it; a unit test fails when
the committed file differs from what this module generates.

The AsyncAPI document (``shared.bus.asyncapi.build_specification``, the same function that writes
docs/asyncapi.yaml) is the source: it is built from the services' real brokers, so it knows which
service publishes which event, which queue consumes which command, and every payload's JSON schema.
This module only regroups it for the people who connect their own systems to a node: per message its
exchange, routing key or queue, publisher or consumer, payload fields, and what to do to receive or
send it. What the document does not hold — which commands internal systems may send, and the JSON
objects that answer the node's requests — comes from ``shared.bus.messages``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import yaml
from pydantic import BaseModel

from shared.bus.asyncapi import ENVELOPE_FIELDS, SERVICES, build_specification
from shared.bus.messages import INTERNAL_COMMANDS, INTERNAL_REQUEST_REPLIES, CommandReply, CommandType, InternalRequest
from shared.bus.topology import COMMANDS_EXCHANGE, EVENTS_EXCHANGE, REQUESTS_EXCHANGE, Topology

#: The prefix used in examples: the demo CPO node's ``rabbitmq.prefix`` (deploy/config/demo-cpo.yaml).
EXAMPLE_PREFIX = "demo-cpo."
KINDS = {EVENTS_EXCHANGE: "event", COMMANDS_EXCHANGE: "command", REQUESTS_EXCHANGE: "request"}


@dataclass
class Message:
    """One routing key on one exchange, with everyone the document names around it."""

    kind: str  # event | command | request
    routing_key: str
    exchange: str  # without the node's prefix
    publishers: list[str] = field(default_factory=list)  # services
    consumers: list[tuple[str, str]] = field(default_factory=list)  # (service, queue without prefix)
    descriptions: list[str] = field(default_factory=list)
    payload: dict[str, Any] = field(default_factory=dict)  # the JSON schema of the envelope's data


# ---- reading the AsyncAPI document ---------------------------------------------------------------


def load_document() -> dict[str, Any]:
    """The AsyncAPI document, built in-process exactly as docs/asyncapi.yaml is."""
    document: dict[str, Any] = yaml.safe_load(build_specification())
    return document


def resolve(document: dict[str, Any], reference: str) -> Any:
    """A local JSON pointer (``#/components/schemas/Envelope%5BX%5D``) inside ``document``."""
    if not reference.startswith("#/"):
        raise ValueError(f"only local references are supported, not {reference!r}")
    node: Any = document
    for part in reference[2:].split("/"):
        node = node[unquote(part).replace("~1", "/").replace("~0", "~")]
    return node


def _deref(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = resolve(document, schema["$ref"])
    return schema


def _payload_of(document: dict[str, Any], channel: dict[str, Any]) -> dict[str, Any]:
    (message_ref,) = channel["messages"].values()
    envelope = _deref(document, resolve(document, message_ref["$ref"])["payload"])
    return _deref(document, envelope["properties"]["data"])


def messages(document: dict[str, Any]) -> list[Message]:
    """Every routing key of the document, merged over the services that publish or consume it."""
    actions = {op["channel"]["$ref"]: op["action"] for op in document["operations"].values()}
    found: dict[tuple[str, str], Message] = {}
    for name, channel in document["channels"].items():
        service = name.split(":", 1)[0]
        binding = channel["bindings"]["amqp"]
        action = actions["#/channels/" + name.replace(" ", "%20")]
        if binding["is"] == "routingKey":
            exchange = binding["exchange"]["name"]
        else:  # a work queue: in this node only commands are consumed from queues of their own
            exchange = COMMANDS_EXCHANGE
        entry = found.setdefault((exchange, channel["address"]), Message(KINDS[exchange], channel["address"], exchange))
        if action == "send":
            entry.publishers.append(service)
        else:
            entry.consumers.append((service, binding["queue"]["name"]))
        if channel.get("description") and channel["description"] not in entry.descriptions:
            entry.descriptions.append(channel["description"])
        entry.payload = entry.payload or _payload_of(document, channel)
    order = {service: index for index, service in enumerate(SERVICES)}
    for entry in found.values():
        entry.publishers.sort(key=lambda s: order.get(s, len(order)))
    return list(found.values())


# ---- payload schemas as tables --------------------------------------------------------------------


def _code_list(values: list[Any]) -> str:
    return ", ".join(f"`{v}`" for v in values)


def type_of(document: dict[str, Any], schema: dict[str, Any]) -> str:
    """A reader's name for a JSON schema: string (date-time), list of EvseStatusRecord, one of `a`, `b`."""
    if "$ref" in schema:
        target = resolve(document, schema["$ref"])
        if "enum" in target:
            return f"{target.get('title', 'enum')}: one of {_code_list(target['enum'])}"
        return f"`{target.get('title') or unquote(schema['$ref'].rsplit('/', 1)[-1])}` (object)"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"]
            text = " or ".join(type_of(document, s) for s in options)
            return text + (" or null" if len(options) < len(schema[key]) else "")
    if "enum" in schema:
        return f"one of {_code_list(schema['enum'])}"
    if "const" in schema:
        return f"`{schema['const']}`"
    kind = schema.get("type")
    if kind == "array":
        return f"list of {type_of(document, schema.get('items', {}))}"
    if kind == "object":
        return "object (any JSON)" if "properties" not in schema else "object"
    if kind == "string" and "format" in schema:
        return f"string ({schema['format']})"
    names = {"integer": "int", "number": "number", "boolean": "bool", "string": "string", "null": "null"}
    return names.get(str(kind), "any JSON")


def _constraints(schema: dict[str, Any]) -> list[str]:
    """Bounds worth knowing before sending (lists of at most 10 000 records, string lengths)."""
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return [c for s in schema[key] for c in _constraints(s)]
    words = {
        "minItems": "at least {} item{}",
        "maxItems": "at most {} item{}",
        "minLength": "at least {} character{}",
        "maxLength": "at most {} character{}",
        "minimum": "≥ {}{}",
        "maximum": "≤ {}{}",
        "pattern": "pattern `{}`{}",
    }
    plural = {"minItems", "maxItems", "minLength", "maxLength"}
    return [
        text.format(schema[key], "s" if key in plural and schema[key] != 1 else "")
        for key, text in words.items()
        if key in schema
    ]


def _one_line(text: str) -> str:
    return " ".join(text.replace("``", "`").split())


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or " "


def fields_table(document: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """The object's fields: name, type, required, description (with default and bounds)."""
    schema = _deref(document, schema)
    properties: dict[str, dict[str, Any]] = schema.get("properties", {})
    if not properties:
        return ["No fields: an empty JSON object.", ""]
    required = set(schema.get("required", ()))
    lines = ["| Field | Type | Required | Description |", "| --- | --- | --- | --- |"]
    for name, prop in properties.items():
        notes = [_one_line(prop["description"])] if prop.get("description") else []
        notes += _constraints(prop)
        if "default" in prop and prop["default"] is not None and name not in required:
            notes.append(f"default `{_json_scalar(prop['default'])}`")
        cells = (f"`{name}`", type_of(document, prop), "yes" if name in required else "no", "; ".join(notes))
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return [*lines, ""]


def _json_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value)


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A reply model's schema with its nested models under ``#/$defs`` (resolvable as a document)."""
    return model.model_json_schema(by_alias=True)


# ---- markdown ------------------------------------------------------------------------------------


def _anchor(text: str) -> str:
    """GitHub's heading anchor of a heading that is only a code span (``cdr.received`` -> cdrreceived)."""
    return "".join(c for c in text.lower() if c.isalnum() or c in "-_ ").replace(" ", "-")


def _prefixed(name: str) -> str:
    return f"`<prefix>{name}`"


def _services(names: list[str]) -> str:
    return ", ".join(names) if names else "(none)"


def _event_section(document: dict[str, Any], entry: Message) -> list[str]:
    lines = [f"### `{entry.routing_key}`", ""]
    if entry.payload.get("description"):
        lines += [_one_line(entry.payload["description"]), ""]
    lines += [
        f"- Exchange: {_prefixed(entry.exchange)} (topic), routing key `{entry.routing_key}`",
        f"- Published by: {_services(entry.publishers)}",
        f"- Payload (`data`): `{entry.payload.get('title', '?')}`",
        f"- Subscribe: bind a queue of your own to {_prefixed(entry.exchange)} with the routing key "
        f"`{entry.routing_key}`",
        "",
    ]
    return lines + fields_table(document, entry.payload)


def _command_section(document: dict[str, Any], entry: Message) -> list[str]:
    lines = [f"### `{entry.routing_key}`", ""]
    for text in entry.descriptions:
        lines += [_one_line(text), ""]
    if entry.payload.get("description"):
        lines += [_one_line(entry.payload["description"]), ""]
    queues = ", ".join(f"{_prefixed(queue)} of {service}" for service, queue in entry.consumers)
    internal = CommandType(entry.routing_key) in INTERNAL_COMMANDS
    lines += [
        f"- Exchange: {_prefixed(entry.exchange)} (topic), routing key `{entry.routing_key}`",
        f"- Consumed from: {queues or '(no queue)'}",
        f"- Published by: {_services(entry.publishers)}" + (" and internal systems" if internal else ""),
        f"- Payload (`data`): `{entry.payload.get('title', '?')}`",
    ]
    if internal:
        lines.append(
            f"- Send: `POST /commands/{entry.routing_key}` on the internal API with the payload as body, or publish "
            f"the envelope to {_prefixed(entry.exchange)} with the routing key `{entry.routing_key}`"
        )
    else:
        lines.append("- Issued by the gateway only, for OICP calls of peers: internal systems do not send it")
    return [*lines, "", *fields_table(document, entry.payload)]


def _request_section(document: dict[str, Any], entry: Message) -> list[str]:
    reply = INTERNAL_REQUEST_REPLIES[InternalRequest(entry.routing_key)]
    lines = [f"### `{entry.routing_key}`", ""]
    if entry.payload.get("description"):
        lines += [_one_line(entry.payload["description"]), ""]
    lines += [
        f"- Exchange: {_prefixed(entry.exchange)} (topic), routing key `{entry.routing_key}`",
        f"- Published by: {_services(entry.publishers)}",
        f"- Payload (`data`): `{entry.payload.get('title', '?')}`",
        f"- Answer it: bind a queue of your own to {_prefixed(entry.exchange)} with the routing key "
        f"`{entry.routing_key}` and publish a `{reply.__name__}` JSON object to the message's `reply_to`, "
        "with its `correlation_id`, before the `x-deadline` header's time",
        "",
        *fields_table(document, entry.payload),
        f"Reply `{reply.__name__}`: {_one_line(reply.__doc__ or '')}",
        "",
    ]
    reply_schema = _model_schema(reply)
    return lines + fields_table(reply_schema, reply_schema)


def _summary(entries: list[Message], who: str) -> list[str]:
    commands = who == "Consumed by"
    header = f"| Routing key | {who} | Payload |" + (" Internal systems may send |" if commands else "")
    lines = [header, "| --- | --- | --- |" + (" --- |" if commands else "")]
    for entry in entries:
        link = f"[`{entry.routing_key}`](#{_anchor(entry.routing_key)})"
        if commands:
            services = ", ".join(service for service, _ in entry.consumers)
            internal = "yes" if CommandType(entry.routing_key) in INTERNAL_COMMANDS else "no (gateway only)"
            lines.append(f"| {link} | {services} | `{entry.payload.get('title', '?')}` | {internal} |")
        else:
            lines.append(f"| {link} | {', '.join(entry.publishers)} | `{entry.payload.get('title', '?')}` |")
    return [*lines, ""]


def _group_by_publisher(events: list[Message]) -> dict[str, list[Message]]:
    """Events by the service that publishes them (in SERVICES order); one published by several
    services (command.rejected) goes to a group of its own."""
    groups: dict[str, list[Message]] = defaultdict(list)
    for entry in events:
        key = entry.publishers[0] if len(entry.publishers) == 1 else "several"
        groups[key].append(entry)
    order = [*SERVICES, "several"]
    return {key: sorted(groups[key], key=lambda e: e.routing_key) for key in order if key in groups}


def render(document: dict[str, Any] | None = None) -> str:
    """docs/events.md."""
    document = document or load_document()
    entries = messages(document)
    events = [e for e in entries if e.kind == "event"]
    consumer_order = {service: index for index, service in enumerate(SERVICES)}
    commands = sorted(
        (e for e in entries if e.kind == "command"),
        key=lambda e: (min((consumer_order.get(s, 99) for s, _ in e.consumers), default=99), e.routing_key),
    )
    requests = sorted((e for e in entries if e.kind == "request"), key=lambda e: e.routing_key)
    example = Topology(EXAMPLE_PREFIX)
    envelope = document["components"]["schemas"][_envelope_names(document)[0]]

    lines = [
        "# Events, commands and requests on the bus",
        "",
        "<!-- Generated by `python -m shared.bus.catalogue` (`make docs`) from the AsyncAPI document"
        " (docs/asyncapi.yaml): do not edit; a unit test fails when this file is out of date. -->",
        "",
        "Every service of a node talks to the others through RabbitMQ, and so can your own systems: a billing "
        "system that wants every CDR, a dashboard that follows EVSE statuses, the charge point backend that "
        "answers remote starts. This catalogue lists each message with its exchange, routing key, publisher or "
        "consumer and payload; the machine-readable form is [docs/asyncapi.yaml](asyncapi.yaml).",
        "",
        "Object types named in the tables (`EvseStatusRecord`, `PushEvseDataRequest`, ...) are OICP 2.3 "
        "structures with OICP's field names; their full JSON schemas are under `components.schemas` in "
        "[docs/asyncapi.yaml](asyncapi.yaml).",
        "",
        "## Names and prefix",
        "",
        "Every exchange and queue name starts with the node's `rabbitmq.prefix` (see "
        "[configuration.md](configuration.md#rabbitmq)), written `<prefix>` below, so that several nodes share "
        f"one broker. With the prefix `{EXAMPLE_PREFIX}` the exchanges are "
        f"{_code_list(example.exchange_names())}. Routing keys carry no prefix.",
        "",
        f"- `<prefix>{EVENTS_EXCHANGE}` (topic): events, facts that happened. Anyone may bind a queue of its own.",
        f"- `<prefix>{COMMANDS_EXCHANGE}` (topic): commands, each consumed by one service from a durable queue of "
        "its own.",
        f"- `<prefix>{REQUESTS_EXCHANGE}` (topic): requests from the node to your systems, answered by request/reply.",
        "",
        "## The envelope",
        "",
        "Every message body, event, command or request, is one JSON object:",
        "",
        "| Field | Type | Description |",
        "| --- | --- | --- |",
    ]
    for name, text in ENVELOPE_FIELDS.items():
        prop = envelope["properties"][name]
        data_type = "object (the payload below)" if name == "data" else type_of(document, prop)
        lines.append(f"| `{name}` | {_cell(data_type)} | {_cell(text)} |")
    lines += [
        "",
        "The AMQP `correlation_id` of a command is carried over to the events it causes, so a system can match "
        "the events to the command it sent.",
        "",
        "## Subscribing to events",
        "",
        "Declare a durable queue of your own, bind it to `<prefix>oicp.events` with the routing keys you want "
        "(topic patterns work: `cdr.*`, `session.#`, `#` for everything) and consume it. Acknowledge a message "
        "once you have processed it; a queue of your own keeps events while your system is down. Events are "
        "published persistent and not mandatory: with no queue bound they are dropped, which is not an error.",
        "",
        "With `rabbitmqadmin`:",
        "",
        "```sh",
        "rabbitmqadmin declare queue name=billing.cdrs durable=true",
        f"rabbitmqadmin declare binding source={example.events.name} destination=billing.cdrs routing_key=cdr.received",
        "```",
        "",
        "With Python (aio-pika):",
        "",
        "```python",
        "import json",
        "",
        "import aio_pika",
        "",
        "",
        "async def follow_cdrs(amqp_url: str) -> None:",
        "    connection = await aio_pika.connect_robust(amqp_url)",
        "    channel = await connection.channel()",
        f'    events = await channel.get_exchange("{example.events.name}")  # <prefix>oicp.events',
        '    queue = await channel.declare_queue("billing.cdrs", durable=True)',
        '    await queue.bind(events, routing_key="cdr.received")',
        "    async with queue.iterator() as messages:",
        "        async for message in messages:",
        "            async with message.process():  # acknowledged when the block ends without an error",
        "                envelope = json.loads(message.body)",
        '                print(envelope["type"], envelope["data"]["session_id"])',
        "```",
        "",
        "## Events",
        "",
        "Published to `<prefix>oicp.events` with the routing key shown.",
        "",
    ]
    events = [entry for members in _group_by_publisher(events).values() for entry in members]
    lines += _summary(events, "Published by")
    for entry in events:
        lines += _event_section(document, entry)

    lines += [
        "## Commands",
        "",
        "Published to `<prefix>oicp.commands` (persistent, mandatory: a command no queue takes is refused) and "
        "consumed by one service from its own durable quorum queue. Internal systems may send the commands "
        "marked so, over AMQP or with `POST /commands/{type}` of the internal API "
        "([docs/openapi/internal.json](openapi/internal.json)); the others are issued by the gateway for OICP "
        "calls of peers. A command sent with `reply_to` to a worker that replies is answered with a "
        "`CommandReply` JSON object with the same `correlation_id`:",
        "",
        *fields_table(_model_schema(CommandReply), _model_schema(CommandReply)),
        "A command that can never be processed is dead-lettered at once; one whose processing keeps failing, at "
        "the last of `rabbitmq.delivery_limit` deliveries (while Redis or RabbitMQ cannot be reached a handler is "
        "run again in place instead, for up to `rabbitmq.outage_retry_seconds`). Each gets a `command.rejected` "
        "event and ends, with its error in the `x-error` header, in the queue "
        f"`<prefix>{example.dead_letters.name.removeprefix(EXAMPLE_PREFIX)}`, listed, replayed and discarded "
        "by the internal API (`/dead-letters`).",
        "",
        *_summary(commands, "Consumed by"),
    ]
    for entry in commands:
        lines += _command_section(document, entry)

    lines += [
        "## Requests to internal systems",
        "",
        "The node asks your systems on `<prefix>oicp.requests`, by request/reply: bind a queue of your own to the "
        "routing key and answer every message with a JSON object published to its `reply_to` queue with its "
        "`correlation_id`, before the deadline in the `x-deadline` header (epoch seconds; the message also expires "
        "then). Requests are published mandatory: when no queue is bound the node applies its fallback at once.",
        "",
        *_summary(requests, "Published by"),
    ]
    for entry in requests:
        lines += _request_section(document, entry)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def _envelope_names(document: dict[str, Any]) -> list[str]:
    """Names of the envelope schemas (``Envelope[...]``): they all share the envelope's fields."""
    return [name for name in document["components"]["schemas"] if name.startswith("Envelope[")]


if __name__ == "__main__":
    print(render(), end="")
