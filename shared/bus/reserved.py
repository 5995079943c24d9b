"""Workers whose OICP logic arrives with later issues (authorization #4, sessions #4, cdr #5).

They run as real processes on their real queues now, so the topology, the dead-lettering and the
process layout are in place: a command sent to them is rejected to the dead-letter queue at once
with a ``command.rejected`` event that says the service cannot do it yet — never silently lost and
never redelivered in a loop. The gateway answers their OICP operations with ``320``.
"""

from __future__ import annotations

from faststream import FastStream
from faststream.middlewares import AckPolicy
from faststream.rabbit.annotations import RabbitMessage
from faststream.specification import AsyncAPI

from shared.bus.client import Bus, create_broker
from shared.bus.messages import EventType
from shared.bus.middleware import PoisonMessage, reject_poison
from shared.bus.topology import Topology, declare_topology
from shared.settings import NodeSettings


def create_reserved_worker(settings: NodeSettings, service: str, planned: str) -> FastStream:
    topology = Topology(settings.rabbitmq.prefix, settings.rabbitmq.delivery_limit)
    broker = create_broker(settings, service)
    bus = Bus(broker, topology, settings.name, events=(EventType.COMMAND_REJECTED,))
    broker.add_middleware(reject_poison(bus))

    @broker.subscriber(
        topology.reserved_queue(service),
        topology.commands,
        ack_policy=AckPolicy.REJECT_ON_ERROR,
        title=f"commands for {service}",
    )
    async def not_available_yet(message: RabbitMessage) -> None:
        """Rejects every command to the dead-letter queue with command.rejected (not available yet)."""
        raise PoisonMessage(f"{service} cannot process {message.raw_message.routing_key} yet ({planned})")

    async def declare() -> None:
        await broker.connect()
        await declare_topology(broker, topology)

    return FastStream(broker, specification=AsyncAPI(broker, title=f"oicp-p2p {service}"), on_startup=[declare])
