"""The AsyncAPI 3.0 document of a whole node, generated from the services' real brokers.

``python -m shared.bus.asyncapi > docs/asyncapi.yaml`` (``make docs``) writes it; a unit test fails
when the committed file differs from what this module generates.

Every service builds its broker exactly as it does when it runs (building connects to nothing: no
RabbitMQ, no Redis). FastStream can document several brokers in one document, but each service's
connection then becomes a server of its own, and a publisher and a subscriber with the same title
(the gateway sends ``command cpo.evse.status.set``, evse_push receives it) would overwrite each
other's channel. So, for the document only, every service broker is included into one documentation
broker (one server: the node's RabbitMQ) and every channel title is qualified with its service
(``gateway: command cpo.evse.status.set``). Channels, operations and components are sorted, so the
output does not depend on the order in which FastStream happens to keep its endpoints.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Callable
from typing import Any

import yaml
from faststream import FastStream
from faststream.rabbit import RabbitBroker
from faststream.specification import AsyncAPI
from pydantic import SecretStr

from shared.bus.envelope import Envelope
from shared.bus.messages import INTERNAL_COMMANDS, INTERNAL_REQUEST_REPLIES, CommandType, EventType, InternalRequest
from shared.bus.topology import (
    COMMAND_CONSUMERS,
    DEAD_LETTER_QUEUE,
    Topology,
)
from shared.settings import InternalApiSettings, NodeSettings, OicpApiSettings, RabbitSettings

TITLE = "oicp-p2p node"
# The order of the services in the document: the gateway first, then the workers.
SERVICES = ("gateway", "evse_push", "authorization", "sessions", "cdr")

ENVELOPE_FIELDS = {
    "event_id": "UUID of this message, also its AMQP message_id; an internal system may omit it on a "
    "command (filled in on arrival)",
    "type": "the message type, which is also its routing key (e.g. `cpo.evse.status.set`, `evse.status.changed`)",
    "occurred_at": "when it happened or was issued: ISO 8601 with a time zone; may be omitted on a command "
    "(filled in on arrival)",
    "node": "the name of the node that published it, or of the internal system that issued the command",
    "data": "the payload of the type, documented with each channel",
}


def documentation_settings() -> NodeSettings:
    """A node with both roles, for the document only: no file, no environment, no secrets."""
    return NodeSettings(
        name="asyncapi-docs",
        operator_ids=["DE*ABC"],
        provider_ids=["DE-XYZ"],
        oicp=OicpApiSettings(port=7001),
        internal=InternalApiSettings(port=7101, token=SecretStr("documentation-only")),
        rabbitmq=RabbitSettings(prefix=""),
    )


def _worker_broker(create_app: Callable[[NodeSettings], FastStream]) -> Callable[[NodeSettings], RabbitBroker]:
    def build(settings: NodeSettings) -> RabbitBroker:
        broker = create_app(settings).broker
        assert isinstance(broker, RabbitBroker)
        return broker

    return build


def _gateway_broker(settings: NodeSettings) -> RabbitBroker:
    from services.gateway.context import GatewayContext

    return GatewayContext.build(settings).broker


def service_brokers(settings: NodeSettings) -> dict[str, RabbitBroker]:
    """Every service's broker with its subscribers and publishers, built by the service's own code."""
    from services.authorization.app import create_app as authorization_app
    from services.cdr.app import create_app as cdr_app
    from services.evse_push.app import create_app as evse_push_app
    from services.sessions.app import create_app as sessions_app

    builders: dict[str, Callable[[NodeSettings], RabbitBroker]] = {
        "gateway": _gateway_broker,
        "evse_push": _worker_broker(evse_push_app),
        "authorization": _worker_broker(authorization_app),
        "sessions": _worker_broker(sessions_app),
        "cdr": _worker_broker(cdr_app),
    }
    assert tuple(builders) == SERVICES
    return {service: build(settings) for service, build in builders.items()}


def _code(value: str) -> str:
    return f"`{value}`"


def _description(topology: Topology) -> str:
    if set(Envelope.model_fields) != set(ENVELOPE_FIELDS):
        raise RuntimeError(f"ENVELOPE_FIELDS does not match the Envelope model's fields {list(Envelope.model_fields)}")
    commands = "\n".join(
        f"  - {_code(c.value)}: queue {_code(topology.command_queue(c).name)} of {COMMAND_CONSUMERS[c]}"
        + (", may be sent by internal systems" if c in INTERNAL_COMMANDS else ", issued by the gateway only")
        for c in CommandType
    )
    events = "\n".join(f"  - {_code(e.value)}" for e in EventType)
    requests = "\n".join(
        f"  - {_code(r.value)}: answered with {INTERNAL_REQUEST_REPLIES[r].__name__}" for r in InternalRequest
    )
    envelope = "\n".join(f"- {_code(name)}: {text}" for name, text in ENVELOPE_FIELDS.items())
    example = Topology("demo-cpo.")
    return f"""\
Every service of an oicp-p2p node (the gateway and the workers evse_push, authorization, sessions
and cdr) talks to the others only through RabbitMQ, on four durable topic exchanges. The routing
key of a message is its type: that is the address of each channel below.

- {_code(topology.events.name)}: events, facts that happened. Published persistent and not mandatory:
  anyone may bind a queue of its own (internal systems do); no listener is not an error.
{events}
- {_code(topology.commands.name)}: commands, each consumed by exactly one service from a durable quorum
  queue of its own. Published persistent and mandatory: a command that no queue takes is refused.
  Internal systems send commands over AMQP or with `POST /commands/{{type}}` of the internal API.
{commands}
- {_code(topology.requests.name)}: requests from the node to its internal systems (the charge point
  backend, the EMP's authorization decider), by request/reply: the system binds a queue of its own to
  the routing key and answers each message with a JSON object to its `reply_to`, with the same
  `correlation_id`, before the deadline in the `x-deadline` header (epoch seconds; the message also
  expires then). Published mandatory: when no queue is bound the node applies its fallback at once.
{requests}
- {_code(topology.dead_letter.name)}: the dead-letter exchange of every work queue. A command that can
  never be processed (invalid, or refused by its handler) is dead-lettered at once; one whose
  processing keeps failing at its last delivery (`x-delivery-limit`, `rabbitmq.delivery_limit`,
  {topology.delivery_limit} by default); each with a `command.rejected` event and, in its headers,
  `x-error` (the reason), `x-error-kind` (rejected or failed), `x-failed-service`, `x-failed-at`,
  `x-original-exchange` and `x-original-routing-key`. While Redis or RabbitMQ cannot be reached a
  handler is run again in place (`rabbitmq.outage_retry_seconds`) instead of using up deliveries. All
  end in the queue {_code(topology.dead_letters.name)} (bound with `#`), where they stay until the
  internal API replays or discards them (`/dead-letters`).

Every message body, command or event, is one JSON envelope:

{envelope}

The AMQP `correlation_id` of a command is carried over to the events it causes.

Names: every exchange and queue name carries the node's prefix (`rabbitmq.prefix` of its
configuration), so that several nodes share one broker; this document is generated with an empty
prefix. With the prefix `demo-cpo.` the exchanges are {", ".join(map(_code, example.exchange_names()))}
and the dead-letter queue is {_code(example.prefix + DEAD_LETTER_QUEUE)}. Routing keys carry no prefix.

Channels are named `<service>: <title>` after the service that sends (publisher) or receives
(subscriber) on them: a command appears twice, sent by the gateway to {_code(topology.commands.name)}
and received by its service from its queue.
"""


def _ordered(items: dict[str, Any]) -> dict[str, Any]:
    """Sorted by service (in SERVICES order), then by name; keys of no service last."""

    def key(name: str) -> tuple[int, str]:
        service = name.split(":", 1)[0]
        return (SERVICES.index(service) if service in SERVICES else len(SERVICES), name)

    return {name: items[name] for name in sorted(items, key=key)}


class _Dumper(yaml.SafeDumper):
    """FastStream's YAML, except that multi-line strings (the description) are literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _to_yaml(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=False)


def build_specification() -> str:
    """The AsyncAPI 3.0 document (YAML) of a node: every service's commands and events."""
    settings = documentation_settings()
    topology = Topology(settings.rabbitmq.prefix, settings.rabbitmq.delivery_limit)
    docs_broker = RabbitBroker(
        settings.rabbitmq.url,
        description="the node's RabbitMQ, shared by all services of the node (and possibly by other nodes)",
    )
    for service, broker in service_brokers(settings).items():
        for endpoint in (*broker.subscribers, *broker.publishers):
            config = endpoint.specification.config
            config.title_ = f"{service}: {config.title_ or endpoint.specification.name}"
        docs_broker.include_router(broker)

    with warnings.catch_warnings():
        # A channel, operation or schema overwritten by another one would silently drop it from
        # the document: fail instead.
        warnings.filterwarnings("error", message=".*[Oo]verwrit.*", category=RuntimeWarning)
        specification: Any = AsyncAPI(
            docs_broker,
            title=TITLE,
            version=importlib.metadata.version("oicp-p2p"),
            description=_description(topology),
            schema_version="3.0.0",
        ).to_specification()

    specification.channels = _ordered(specification.channels)
    specification.operations = _ordered(specification.operations)
    components = specification.components
    components.messages = _ordered(components.messages)
    components.schemas = dict(sorted(components.schemas.items()))
    return _to_yaml(specification.to_jsonable())


if __name__ == "__main__":
    print(build_specification(), end="")
