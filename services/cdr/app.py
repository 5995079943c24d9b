"""The cdr service: app factory and composition root.

CPO role: the **outbox** - CDRs submitted by the charge point backend are stored, then delivered to
the EMP that owns the session, retried with backoff until it acknowledges, parked after
``cdr.max_attempts`` and replayed on command; GetChargeDetailRecords reads the same store (gateway).
EMP role: the **inbox** - exactly one CDR per SessionID from CPO peers, pushed or fetched with
GetChargeDetailRecords (on demand and on a schedule), published for billing, closing the session in
the ledger. Both flag CDRs whose session the ledger does not know.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import redis.asyncio as aioredis
from faststream import FastStream
from faststream.rabbit import RabbitBroker
from faststream.specification import AsyncAPI

from shared.bus.client import Bus
from shared.bus.messages import EventType
from shared.bus.topology import Topology, declare_topology
from shared.peers.client import PeerClient
from shared.peers.registry import PeerRegistry
from shared.ratelimit import RateLimiter
from shared.service import worker_core
from shared.settings import NodeSettings
from shared.stores.cdr_inbox import CdrInbox
from shared.stores.cdr_outbox import CdrOutbox
from shared.stores.delivery import DeliveryStore
from shared.stores.redis import KeySpace
from shared.stores.sessions import SessionLedger

SERVICE = "cdr"
EVENTS = (
    EventType.CDR_SUBMITTED,
    EventType.CDR_DELIVERED,
    EventType.CDR_PARKED,
    EventType.CDR_RECEIVED,
    EventType.CDR_SESSION_UNKNOWN,
    EventType.COMMAND_REJECTED,
)


@dataclass
class CdrDeps:
    settings: NodeSettings
    broker: RabbitBroker
    topology: Topology
    bus: Bus
    redis: aioredis.Redis
    keys: KeySpace
    registry: PeerRegistry
    ledger: SessionLedger
    outbox: CdrOutbox
    inbox: CdrInbox
    delivery_store: DeliveryStore
    client: PeerClient

    @classmethod
    def build(cls, settings: NodeSettings) -> CdrDeps:
        """Build everything without connecting (the AsyncAPI generator builds the app offline)."""
        topology, broker, bus, redis, keys = worker_core(settings, SERVICE, EVENTS)
        return cls(
            settings=settings,
            broker=broker,
            topology=topology,
            bus=bus,
            redis=redis,
            keys=keys,
            registry=PeerRegistry(redis, keys, settings.peers, profiles=settings.resolved_profiles()),
            ledger=SessionLedger(redis, keys),
            outbox=CdrOutbox(redis, keys),
            inbox=CdrInbox(redis, keys),
            delivery_store=DeliveryStore(redis, keys),
            client=PeerClient.create(limiter=RateLimiter.for_redis(redis, keys, settings.rate_limits)),
        )


def create_app(settings: NodeSettings) -> FastStream:
    from services.cdr.fetch import CdrFetchScheduler
    from services.cdr.handlers import register_handlers
    from services.cdr.outbox import CdrDelivery

    deps = CdrDeps.build(settings)
    delivery = CdrDelivery(deps)
    fetches = CdrFetchScheduler(deps)
    register_handlers(deps, delivery)

    async def start() -> None:
        await deps.broker.connect()
        await declare_topology(deps.broker, deps.topology)
        await delivery.start()
        await fetches.start()

    async def stop() -> None:
        await fetches.stop()
        await delivery.stop()
        await deps.client.close()
        with contextlib.suppress(Exception):
            await deps.redis.aclose()

    return FastStream(
        deps.broker,
        specification=AsyncAPI(deps.broker, title=f"oicp-p2p {SERVICE}"),
        on_startup=[start],
        on_shutdown=[stop],
    )
