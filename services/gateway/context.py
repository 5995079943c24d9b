"""The gateway's composition root: every resource its two HTTP faces and its internal API share."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from faststream.rabbit import RabbitBroker

from shared.bus.client import Bus, create_broker
from shared.bus.messages import CommandType
from shared.bus.rpc import RpcClient
from shared.bus.topology import Topology, declare_topology
from shared.peers.registry import PeerRegistry
from shared.settings import NodeSettings
from shared.stores.delivery import DeliveryStore
from shared.stores.evse_data import EvseDataStore
from shared.stores.evse_status import EvseStatusStore
from shared.stores.pricing import EvsePricingStore, PricingProductStore
from shared.stores.pull_state import PullStateStore
from shared.stores.redis import KeySpace, create_redis

SERVICE = "gateway"
# Every command the gateway sends. cpo.evse.status.set is published and confirmed; the others need a
# synchronous answer and go through ``rpc`` (same exchange and routing key, with reply_to). All are
# declared on the broker so that the AsyncAPI document shows who sends what.
GATEWAY_COMMANDS = (
    CommandType.CPO_EVSE_STATUS_SET,
    CommandType.CPO_EVSE_DATA_SET,
    CommandType.CPO_PRICING_PRODUCTS_SET,
    CommandType.CPO_EVSE_PRICING_SET,
    CommandType.EMP_EVSE_STATUS_INGEST,
    CommandType.EMP_EVSE_DATA_INGEST,
    CommandType.EMP_PRICING_PRODUCTS_INGEST,
    CommandType.EMP_EVSE_PRICING_INGEST,
)


@dataclass
class GatewayContext:
    settings: NodeSettings
    broker: RabbitBroker
    bus: Bus
    redis: aioredis.Redis
    registry: PeerRegistry
    own_status: EvseStatusStore
    roaming_status: EvseStatusStore
    own_data: EvseDataStore
    roaming_data: EvseDataStore
    own_pricing_products: PricingProductStore
    own_evse_pricing: EvsePricingStore
    delivery: DeliveryStore
    topology: Topology
    rpc: RpcClient
    pulls: PullStateStore
    _started: bool = field(default=False, init=False)

    @classmethod
    def build(cls, settings: NodeSettings) -> GatewayContext:
        topology = Topology(settings.rabbitmq.prefix, settings.rabbitmq.delivery_limit)
        broker = create_broker(settings, SERVICE)
        bus = Bus(
            broker,
            topology,
            settings.name,
            commands=GATEWAY_COMMANDS,
            confirm_timeout=settings.oicp.publish_timeout_seconds,
        )
        redis = create_redis(settings.redis, f"{settings.name}-{SERVICE}")
        keys = KeySpace(settings.redis.key_prefix)
        return cls(
            settings=settings,
            broker=broker,
            bus=bus,
            redis=redis,
            registry=PeerRegistry(redis, keys, settings.peers),
            own_status=EvseStatusStore(redis, keys, "own"),
            roaming_status=EvseStatusStore(redis, keys, "roaming"),
            own_data=EvseDataStore(redis, keys, "own"),
            roaming_data=EvseDataStore(redis, keys, "roaming"),
            own_pricing_products=PricingProductStore(redis, keys, "own"),
            own_evse_pricing=EvsePricingStore(redis, keys, "own"),
            delivery=DeliveryStore(redis, keys),
            topology=topology,
            pulls=PullStateStore(redis, keys),
            rpc=RpcClient(settings.rabbitmq.url, topology, settings.name, f"{settings.name}/{SERVICE}-rpc"),
        )

    async def start(self) -> None:
        if self._started:
            return
        await self.broker.start()
        await declare_topology(self.broker, self.topology)
        await self.rpc.start()
        self._started = True

    async def stop(self) -> None:
        await self.rpc.close()
        with contextlib.suppress(Exception):
            await self.broker.stop()
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    async def ready(self) -> dict[str, bool]:
        async def redis_ok() -> bool:
            try:
                return bool(await asyncio.wait_for(self.redis.ping(), 1.0))
            except Exception:
                return False

        async def broker_ok() -> bool:
            try:
                return bool(await self.broker.ping(timeout=1.0))
            except Exception:
                return False

        rabbit, redis = await asyncio.gather(broker_ok(), redis_ok())
        return {"rabbitmq": rabbit, "redis": redis}
