"""The sessions service: app factory and composition root.

EMP role: sends remote start/stop and reservations to CPO peers (never retried), receives charging
notifications. CPO role: receives remote start/stop and reservations from EMP peers, asks the charge
point backend by request/reply, sends charging notifications to the session's EMP. Both roles keep
the session ledger (ARCHITECTURE §6): a session is recorded *before* anything is sent or asked, so it
survives a timeout, and a late confirmation of the charge point is adopted. One sessions worker of
the node (by lease) also runs the periodic peer probes (services/sessions/probes.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import redis.asyncio as aioredis
from faststream import FastStream
from faststream.rabbit import RabbitBroker
from faststream.specification import AsyncAPI

from shared.bus.client import Bus
from shared.bus.messages import EventType, InternalRequest
from shared.bus.rpc import RpcClient
from shared.bus.topology import Topology, declare_topology
from shared.peers.client import PeerClient
from shared.peers.registry import PeerRegistry
from shared.ratelimit import RateLimiter
from shared.service import worker_core
from shared.settings import NodeSettings
from shared.stores.evse_data import EvseDataStore
from shared.stores.redis import KeySpace
from shared.stores.sessions import SessionLedger

SERVICE = "sessions"
# Requests to internal systems, by request/reply on oicp.requests (declared for the AsyncAPI file).
REQUESTS = (
    InternalRequest.CPO_BACKEND_REMOTE_START,
    InternalRequest.CPO_BACKEND_REMOTE_STOP,
    InternalRequest.CPO_BACKEND_RESERVATION_START,
    InternalRequest.CPO_BACKEND_RESERVATION_STOP,
)
EVENTS = (
    EventType.SESSION_REQUESTED,
    EventType.SESSION_STARTED,
    EventType.SESSION_REFUSED,
    EventType.SESSION_FAILED,
    EventType.SESSION_STOPPED,
    EventType.SESSION_RESERVED,
    EventType.SESSION_RESERVATION_ENDED,
    EventType.SESSION_EXPIRED,
    EventType.SESSION_NOTIFICATION,
    EventType.SESSION_CDR_MISSING,
    EventType.COMMAND_REJECTED,
)


@dataclass
class SessionsDeps:
    settings: NodeSettings
    broker: RabbitBroker
    topology: Topology
    bus: Bus
    redis: aioredis.Redis
    keys: KeySpace
    registry: PeerRegistry
    ledger: SessionLedger
    own_data: EvseDataStore
    client: PeerClient
    rpc: RpcClient

    @classmethod
    def build(cls, settings: NodeSettings) -> SessionsDeps:
        """Build everything without connecting (the AsyncAPI generator builds the app offline)."""
        topology, broker, bus, redis, keys = worker_core(settings, SERVICE, EVENTS, REQUESTS)
        return cls(
            settings=settings,
            broker=broker,
            topology=topology,
            bus=bus,
            redis=redis,
            keys=keys,
            registry=PeerRegistry(redis, keys, settings.peers, profiles=settings.resolved_profiles()),
            ledger=SessionLedger(redis, keys),
            own_data=EvseDataStore(redis, keys, "own"),
            client=PeerClient.create(limiter=RateLimiter.for_redis(redis, keys, settings.rate_limits)),
            rpc=RpcClient(settings.rabbitmq.url, topology, settings.name, f"{settings.name}/{SERVICE}-rpc"),
        )

    def key(self, *parts: str) -> str:
        return self.keys.key("sessions", *parts)


def create_app(settings: NodeSettings) -> FastStream:
    from services.sessions.cpo import adopt_late_reply
    from services.sessions.handlers import register_handlers
    from services.sessions.housekeeping import Housekeeping
    from services.sessions.probes import ProbeJob

    deps = SessionsDeps.build(settings)
    register_handlers(deps)
    housekeeping = Housekeeping(deps)
    probes = ProbeJob(deps)  # the periodic peer probes, one process of the node at a time

    async def start() -> None:
        await deps.broker.connect()
        await declare_topology(deps.broker, deps.topology)
        # The backend's answer to a request that timed out still arrives on this process's reply
        # consumer: adopt it (a charge point that did start is a real session).
        deps.rpc.on_late_reply = lambda request_id, reply: adopt_late_reply(deps, request_id, reply)
        await deps.rpc.start()
        await housekeeping.start()
        await probes.start()

    async def stop() -> None:
        await probes.stop()
        await housekeeping.stop()
        await deps.rpc.close()
        await deps.client.close()
        with contextlib.suppress(Exception):
            await deps.redis.aclose()

    return FastStream(
        deps.broker,
        specification=AsyncAPI(deps.broker, title=f"oicp-p2p {SERVICE}"),
        on_startup=[start],
        on_shutdown=[stop],
    )
