"""The gateway's composition root: every resource its two HTTP faces and its internal API share."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from faststream.rabbit import RabbitBroker

from shared.bus.client import Bus, create_broker
from shared.bus.messages import CommandType
from shared.bus.topology import Topology, declare_topology
from shared.peers.registry import PeerRegistry
from shared.settings import NodeSettings
from shared.stores.delivery import DeliveryStore
from shared.stores.evse_status import EvseStatusStore
from shared.stores.redis import KeySpace, create_redis

SERVICE = "gateway"
GATEWAY_COMMANDS = (
    CommandType.CPO_EVSE_STATUS_SET,
    CommandType.EMP_EVSE_STATUS_INGEST,
    CommandType.EMP_EVSE_DATA_INGEST,
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
    delivery: DeliveryStore
    topology: Topology
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
            delivery=DeliveryStore(redis, keys),
            topology=topology,
        )

    async def start(self) -> None:
        if self._started:
            return
        await self.broker.start()
        await declare_topology(self.broker, self.topology)
        self._started = True

    async def stop(self) -> None:
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
