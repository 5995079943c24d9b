"""The authorization service: app factory and composition root.

EMP role: the token store (``emp.token.set``), AuthorizeStart/Stop decisions for CPO peers (from the
store, or an internal decider asked by request/reply with a fallback), and PushAuthenticationData of
the offline tokens to CPO peers that take it. CPO role: the authentication data EMP peers push, and
AuthorizeStart/Stop for the node's charge point backend (offline data first, then the EMP of the
EvcoID, or an RFID broadcast to every EMP peer with an authorization contract).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import redis.asyncio as aioredis
from faststream import FastStream
from faststream.rabbit import RabbitBroker
from faststream.specification import AsyncAPI

from services.authorization.push import AuthDataPusher
from shared.bus.client import Bus
from shared.bus.messages import EventType, InternalRequest
from shared.bus.rpc import RpcClient
from shared.bus.topology import Topology, declare_topology
from shared.peers.client import PeerClient
from shared.peers.registry import PeerRegistry
from shared.ratelimit import RateLimiter
from shared.service import worker_core
from shared.settings import NodeSettings
from shared.stores.auth_data import AuthDataStore
from shared.stores.delivery import DeliveryStore
from shared.stores.redis import KeySpace
from shared.stores.sessions import SessionLedger
from shared.stores.tokens import TokenStore

SERVICE = "authorization"
# Requests to internal systems, by request/reply on oicp.requests (declared for the AsyncAPI file).
REQUESTS = (InternalRequest.EMP_DECIDER_AUTHORIZE_START,)
EVENTS = (
    EventType.TOKENS_CHANGED,
    EventType.AUTHORIZATION_DECIDED,
    EventType.AUTH_DATA_RECEIVED,
    EventType.SESSION_AUTHORIZED,
    EventType.COMMAND_REJECTED,
)


@dataclass
class AuthorizationDeps:
    settings: NodeSettings
    broker: RabbitBroker
    topology: Topology
    bus: Bus
    redis: aioredis.Redis
    keys: KeySpace
    registry: PeerRegistry
    tokens: TokenStore
    auth_data: AuthDataStore
    ledger: SessionLedger
    delivery_store: DeliveryStore
    rpc: RpcClient
    client: PeerClient
    pusher: AuthDataPusher

    @classmethod
    def build(cls, settings: NodeSettings) -> AuthorizationDeps:
        topology, broker, bus, redis, keys = worker_core(settings, SERVICE, EVENTS, REQUESTS)
        registry = PeerRegistry(redis, keys, settings.peers, profiles=settings.resolved_profiles())
        tokens = TokenStore(redis, keys)
        delivery_store = DeliveryStore(redis, keys)
        # Opens its connection only when used (inside the loop), like the RPC client below.
        client = PeerClient.create(limiter=RateLimiter.for_redis(redis, keys, settings.rate_limits))
        return cls(
            settings=settings,
            broker=broker,
            topology=topology,
            bus=bus,
            redis=redis,
            keys=keys,
            registry=registry,
            tokens=tokens,
            auth_data=AuthDataStore(redis, keys),
            ledger=SessionLedger(redis, keys),
            delivery_store=delivery_store,
            rpc=RpcClient(settings.rabbitmq.url, topology, settings.name, f"{settings.name}/{SERVICE}-rpc"),
            client=client,
            pusher=AuthDataPusher(settings, tokens, delivery_store, registry, client, redis),
        )

    async def start(self) -> None:
        """Before the subscribers start: topology declared, the decider client and the push lanes ready."""
        await self.broker.connect()
        await declare_topology(self.broker, self.topology)
        if self.settings.provider_ids and self.settings.authorization.use_decider:
            await self.rpc.start()
        if self.settings.provider_ids:
            await self.pusher.start()

    async def stop(self) -> None:
        await self.pusher.stop()
        await self.rpc.close()
        await self.client.close()
        with contextlib.suppress(Exception):
            await self.redis.aclose()


def create_app(settings: NodeSettings) -> FastStream:
    from services.authorization.handlers import register_handlers

    deps = AuthorizationDeps.build(settings)
    register_handlers(deps)
    return FastStream(
        deps.broker,
        specification=AsyncAPI(deps.broker, title=f"oicp-p2p {SERVICE}"),
        on_startup=[deps.start],
        on_shutdown=[deps.stop],
    )
