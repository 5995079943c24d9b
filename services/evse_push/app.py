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
from services.evse_push.pulls import PullScheduler, PullStateStore
from services.evse_push.sources import build_sources
from shared.bus.client import Bus
from shared.bus.messages import EventType
from shared.bus.topology import Topology, declare_topology
from shared.peers.client import PeerClient
from shared.peers.registry import PeerRegistry
from shared.ratelimit import RateLimiter
from shared.service import worker_core
from shared.settings import NodeSettings
from shared.stores.delivery import DeliveryStore
from shared.stores.evse_data import EvseDataStore
from shared.stores.evse_status import EvseStatusStore
from shared.stores.pricing import EvsePricingStore, PricingProductStore
from shared.stores.redis import KeySpace

SERVICE = "evse_push"
EVENTS = (
    EventType.EVSE_STATUS_CHANGED,
    EventType.EVSE_STATUS_RECEIVED,
    EventType.EVSE_DATA_CHANGED,
    EventType.EVSE_DATA_RECEIVED,
    EventType.PRICING_PRODUCTS_CHANGED,
    EventType.PRICING_PRODUCTS_RECEIVED,
    EventType.EVSE_PRICING_CHANGED,
    EventType.EVSE_PRICING_RECEIVED,
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
    keys: KeySpace
    registry: PeerRegistry
    own_status: EvseStatusStore
    own_data: EvseDataStore
    own_products: PricingProductStore
    own_evse_pricing: EvsePricingStore
    roaming_status: EvseStatusStore
    roaming_data: EvseDataStore
    roaming_products: PricingProductStore
    roaming_evse_pricing: EvsePricingStore
    delivery_store: DeliveryStore
    client: PeerClient
    delivery: DeliveryManager
    pulls: PullScheduler

    @classmethod
    def build(cls, settings: NodeSettings) -> EvsePushDeps:
        topology, broker, bus, redis, keys = worker_core(settings, SERVICE, EVENTS)
        registry = PeerRegistry(redis, keys, settings.peers, profiles=settings.resolved_profiles())
        own_status = EvseStatusStore(redis, keys, "own")
        own_data = EvseDataStore(redis, keys, "own")
        own_products = PricingProductStore(redis, keys, "own")
        own_evse_pricing = EvsePricingStore(redis, keys, "own")
        delivery_store = DeliveryStore(redis, keys)
        # The session is created here but opens connections only when used (inside the loop).
        client = PeerClient.create(limiter=RateLimiter.for_redis(redis, keys, settings.rate_limits))
        delivery = DeliveryManager(
            settings,
            delivery_store,
            registry,
            client,
            bus,
            build_sources(settings, own_status, own_data, own_products, own_evse_pricing),
            redis,
        )
        roaming_status = EvseStatusStore(redis, keys, "roaming")
        roaming_data = EvseDataStore(redis, keys, "roaming")
        # EMP role: CPO peers that do not push are pulled on a schedule into the same read models.
        pulls = PullScheduler(
            settings, registry, client, bus, delivery_store, PullStateStore(redis, keys), roaming_data, roaming_status
        )
        return cls(
            settings=settings,
            broker=broker,
            topology=topology,
            bus=bus,
            redis=redis,
            keys=keys,
            registry=registry,
            own_status=own_status,
            own_data=own_data,
            own_products=own_products,
            own_evse_pricing=own_evse_pricing,
            roaming_status=roaming_status,
            roaming_data=roaming_data,
            roaming_products=PricingProductStore(redis, keys, "roaming"),
            roaming_evse_pricing=EvsePricingStore(redis, keys, "roaming"),
            delivery_store=delivery_store,
            client=client,
            delivery=delivery,
            pulls=pulls,
        )

    async def start(self) -> None:
        """Before the subscribers start: topology declared, delivery lanes and scheduled pulls running."""
        await self.broker.connect()
        await declare_topology(self.broker, self.topology)
        await self.delivery.start()
        await self.pulls.start()

    async def stop(self) -> None:
        await self.pulls.stop()
        await self.delivery.stop()
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
