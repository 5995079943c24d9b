"""The evse_push service: app factory and composition root.

CPO role: keeps the node's own EVSE statuses and fans every change out to every EMP peer that takes
pushes (delivery lanes). EMP role: ingests the pushes the gateway accepted from CPO peers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import redis.asyncio as aioredis
from faststream import FastStream
from faststream.rabbit import RabbitBroker
from faststream.specification import AsyncAPI

from services.evse_push.delivery import DeliveryManager
from shared.bus.client import Bus, create_broker
from shared.bus.messages import EventType
from shared.bus.middleware import reject_poison
from shared.bus.topology import Topology, declare_topology
from shared.peers.client import PeerClient
from shared.peers.registry import PeerRegistry
from shared.settings import NodeSettings
from shared.stores.delivery import DeliveryStore
from shared.stores.evse_data import EvseDataStore
from shared.stores.evse_status import EvseStatusStore
from shared.stores.redis import KeySpace, create_redis

SERVICE = "evse_push"
EVENTS = (
    EventType.EVSE_STATUS_CHANGED,
    EventType.EVSE_STATUS_RECEIVED,
    EventType.EVSE_DATA_RECEIVED,
    EventType.PEER_DELIVERY_FAILED,
    EventType.COMMAND_REJECTED,
)


@dataclass
class EvsePushDeps:
    settings: NodeSettings
    broker: RabbitBroker
    topology: Topology
    bus: Bus
    redis: aioredis.Redis
    registry: PeerRegistry
    own_status: EvseStatusStore
    roaming_status: EvseStatusStore
    roaming_data: EvseDataStore
    delivery_store: DeliveryStore
    client: PeerClient | None = None
    delivery: DeliveryManager | None = None

    @classmethod
    def build(cls, settings: NodeSettings) -> EvsePushDeps:
        topology = Topology(settings.rabbitmq.prefix, settings.rabbitmq.delivery_limit)
        broker = create_broker(settings, SERVICE)
        bus = Bus(broker, topology, settings.name, events=EVENTS)
        broker.add_middleware(reject_poison(bus))
        redis = create_redis(settings.redis, f"{settings.name}-{SERVICE}")
        keys = KeySpace(settings.redis.key_prefix)
        return cls(
            settings=settings,
            broker=broker,
            topology=topology,
            bus=bus,
            redis=redis,
            registry=PeerRegistry(redis, keys, settings.peers),
            own_status=EvseStatusStore(redis, keys, "own"),
            roaming_status=EvseStatusStore(redis, keys, "roaming"),
            roaming_data=EvseDataStore(redis, keys, "roaming"),
            delivery_store=DeliveryStore(redis, keys),
        )

    async def start(self) -> None:
        """Before the subscribers start: topology declared, delivery lanes running."""
        await self.broker.connect()
        await declare_topology(self.broker, self.topology)
        self.client = PeerClient.create()
        self.delivery = DeliveryManager(
            self.settings.delivery, self.delivery_store, self.registry, self.client, self.bus, self.own_status
        )
        await self.delivery.start()

    async def stop(self) -> None:
        if self.delivery:
            await self.delivery.stop()
        if self.client:
            await self.client.close()
        with contextlib.suppress(Exception):
            await self.redis.aclose()


def create_app(settings: NodeSettings) -> FastStream:
    from services.evse_push.handlers import register_handlers

    deps = EvsePushDeps.build(settings)
    register_handlers(deps)
    app = FastStream(
        deps.broker,
        specification=AsyncAPI(deps.broker, title=f"oicp-p2p {SERVICE}"),
        on_startup=[deps.start],
        on_shutdown=[deps.stop],
    )
    return app
