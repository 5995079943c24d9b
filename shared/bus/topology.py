"""Exchanges, queues and bindings of a node (ARCHITECTURE §4), in one place.

Every name carries the node's prefix, so two nodes (or two test runs) share one broker without
seeing each other's messages. Work queues are durable quorum queues with a dead-letter exchange and
an explicit delivery limit: RabbitMQ 3.10 has no default limit, so without one a poison message
would be redelivered forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue

from shared.bus.messages import CommandType

EVENTS_EXCHANGE = "oicp.events"
COMMANDS_EXCHANGE = "oicp.commands"
DEAD_LETTER_EXCHANGE = "oicp.dead-letter"
# Requests from the node to its internal systems (the charge point backend, the EMP's authorization
# decider), answered by request/reply: the systems bind their own queues, see InternalRequest.
REQUESTS_EXCHANGE = "oicp.requests"
DEAD_LETTER_QUEUE = "oicp.dead-letters"

# Which service consumes which command. One queue per command: a poison message of one kind never
# blocks another, and each queue documents one payload type in the AsyncAPI file.
COMMAND_CONSUMERS: dict[CommandType, str] = {
    CommandType.CPO_EVSE_STATUS_SET: "evse_push",
    CommandType.EMP_EVSE_STATUS_INGEST: "evse_push",
    CommandType.EMP_EVSE_DATA_INGEST: "evse_push",
    CommandType.CPO_EVSE_DATA_SET: "evse_push",
    CommandType.CPO_PRICING_PRODUCTS_SET: "evse_push",
    CommandType.CPO_EVSE_PRICING_SET: "evse_push",
    CommandType.EMP_PRICING_PRODUCTS_INGEST: "evse_push",
    CommandType.EMP_EVSE_PRICING_INGEST: "evse_push",
    CommandType.EMP_TOKEN_SET: "authorization",
    CommandType.EMP_AUTHORIZE_START: "authorization",
    CommandType.EMP_AUTHORIZE_STOP: "authorization",
    CommandType.CPO_AUTHORIZE_START: "authorization",
    CommandType.CPO_AUTHORIZE_STOP: "authorization",
    CommandType.CPO_AUTH_DATA_INGEST: "authorization",
    CommandType.EMP_REMOTE_START: "sessions",
    CommandType.EMP_REMOTE_STOP: "sessions",
    CommandType.EMP_RESERVATION_START: "sessions",
    CommandType.EMP_RESERVATION_STOP: "sessions",
    CommandType.EMP_NOTIFICATION_INGEST: "sessions",
    CommandType.CPO_REMOTE_START_INGEST: "sessions",
    CommandType.CPO_REMOTE_STOP_INGEST: "sessions",
    CommandType.CPO_RESERVATION_START_INGEST: "sessions",
    CommandType.CPO_RESERVATION_STOP_INGEST: "sessions",
    CommandType.CPO_SESSION_NOTIFY: "sessions",
    CommandType.CPO_CDR_SUBMIT: "cdr",
    CommandType.CPO_CDR_REPLAY: "cdr",
    CommandType.EMP_CDR_INGEST: "cdr",
    CommandType.EMP_CDR_FETCH: "cdr",
}


@dataclass(frozen=True)
class Topology:
    prefix: str = ""
    delivery_limit: int = 5
    events: RabbitExchange = field(init=False)
    commands: RabbitExchange = field(init=False)
    dead_letter: RabbitExchange = field(init=False)
    requests: RabbitExchange = field(init=False)

    def __post_init__(self) -> None:
        def exchange(name: str) -> RabbitExchange:
            return RabbitExchange(self.prefix + name, type=ExchangeType.TOPIC, durable=True)

        object.__setattr__(self, "events", exchange(EVENTS_EXCHANGE))
        object.__setattr__(self, "commands", exchange(COMMANDS_EXCHANGE))
        object.__setattr__(self, "dead_letter", exchange(DEAD_LETTER_EXCHANGE))
        object.__setattr__(self, "requests", exchange(REQUESTS_EXCHANGE))

    def work_queue(self, name: str, routing_key: str) -> RabbitQueue:
        return RabbitQueue(
            self.prefix + name,
            queue_type=QueueType.QUORUM,
            durable=True,
            routing_key=routing_key,
            arguments={
                "x-dead-letter-exchange": self.dead_letter.name,
                "x-delivery-limit": self.delivery_limit,
            },
        )

    def command_queue(self, command: CommandType) -> RabbitQueue:
        service = COMMAND_CONSUMERS[command]
        return self.work_queue(f"{service}.{command.value}", command.value)

    @property
    def dead_letters(self) -> RabbitQueue:
        # The dead-letter queue itself has no DLX: a message that dies there stays there.
        return RabbitQueue(self.prefix + DEAD_LETTER_QUEUE, queue_type=QueueType.QUORUM, durable=True, routing_key="#")

    def queue_names(self) -> list[str]:
        names = [self.command_queue(c).name for c in COMMAND_CONSUMERS]
        names.append(self.dead_letters.name)
        return names

    def exchange_names(self) -> list[str]:
        return [self.events.name, self.commands.name, self.dead_letter.name, self.requests.name]


async def declare_topology(broker: RabbitBroker, topology: Topology) -> None:
    """Declare every exchange, queue and binding of the node; idempotent, run by every service.

    Declaring all of it everywhere means a publisher never hits an undeclared exchange or an
    unbound queue, whichever service starts first.
    """
    for exchange in (topology.events, topology.commands, topology.dead_letter, topology.requests):
        await broker.declare_exchange(exchange)
    commands = await broker.declare_exchange(topology.commands)
    dead_letter = await broker.declare_exchange(topology.dead_letter)
    dlq = await broker.declare_queue(topology.dead_letters)
    await dlq.bind(dead_letter, routing_key="#")
    for command in COMMAND_CONSUMERS:
        queue = await broker.declare_queue(topology.command_queue(command))
        await queue.bind(commands, routing_key=command.value)
