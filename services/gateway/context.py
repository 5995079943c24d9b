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
from shared.ratelimit import RateLimiter
from shared.settings import NodeSettings
from shared.stores.cdr_inbox import CdrInbox
from shared.stores.cdr_outbox import CdrOutbox
from shared.stores.delivery import DeliveryStore
from shared.stores.evse_data import EvseDataStore
from shared.stores.evse_status import EvseStatusStore
from shared.stores.pricing import EvsePricingStore, PricingProductStore
from shared.stores.probes import ProbeStore
from shared.stores.pull_state import PullStateStore
from shared.stores.redis import KeySpace, create_redis
from shared.stores.sessions import SessionLedger
from shared.stores.tokens import TokenStore

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
    CommandType.EMP_AUTHORIZE_START,
    CommandType.EMP_AUTHORIZE_STOP,
    CommandType.CPO_AUTH_DATA_INGEST,
    CommandType.EMP_NOTIFICATION_INGEST,
    CommandType.CPO_REMOTE_START_INGEST,
    CommandType.CPO_REMOTE_STOP_INGEST,
    CommandType.CPO_RESERVATION_START_INGEST,
    CommandType.CPO_RESERVATION_STOP_INGEST,
    CommandType.EMP_TOKEN_SET,
    CommandType.CPO_AUTHORIZE_START,
    CommandType.CPO_AUTHORIZE_STOP,
    CommandType.EMP_REMOTE_START,
    CommandType.EMP_REMOTE_STOP,
    CommandType.EMP_RESERVATION_START,
    CommandType.EMP_RESERVATION_STOP,
    CommandType.CPO_SESSION_NOTIFY,
    CommandType.EMP_CDR_INGEST,
    CommandType.CPO_CDR_SUBMIT,
    CommandType.CPO_CDR_REPLAY,
    CommandType.EMP_CDR_FETCH,
)
# A worker that waits for someone else answers by itself at that deadline (the backend's refusal or
# timeout, the decider's fallback, the broadcast's verdict, the peer's timeout): the gateway waits a
# little longer than that, so the worker's answer - not a bus timeout - reaches the caller.
REPLY_MARGIN_SECONDS = 1.5


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
    sessions: SessionLedger
    tokens: TokenStore
    cdr_outbox: CdrOutbox
    cdr_inbox: CdrInbox
    rate_limiter: RateLimiter  # inbound limits of the calling peers (services/gateway/ratelimit.py)
    probes: ProbeStore  # the latest peer probe results (shared/peers/probe.py)
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
            registry=PeerRegistry(redis, keys, settings.peers, profiles=settings.resolved_profiles()),
            own_status=EvseStatusStore(redis, keys, "own"),
            roaming_status=EvseStatusStore(redis, keys, "roaming"),
            own_data=EvseDataStore(redis, keys, "own"),
            roaming_data=EvseDataStore(redis, keys, "roaming"),
            own_pricing_products=PricingProductStore(redis, keys, "own"),
            own_evse_pricing=EvsePricingStore(redis, keys, "own"),
            delivery=DeliveryStore(redis, keys),
            topology=topology,
            pulls=PullStateStore(redis, keys),
            sessions=SessionLedger(redis, keys),
            tokens=TokenStore(redis, keys),
            cdr_outbox=CdrOutbox(redis, keys),
            cdr_inbox=CdrInbox(redis, keys),
            rate_limiter=RateLimiter.for_redis(redis, keys, settings.rate_limits),
            probes=ProbeStore(redis, keys),
            rpc=RpcClient(settings.rabbitmq.url, topology, settings.name, f"{settings.name}/{SERVICE}-rpc"),
        )

    def reply_timeout(self, command: CommandType) -> float:
        """How long to wait for the worker's reply to ``command``."""
        s = self.settings
        waits_for = {
            CommandType.CPO_REMOTE_START_INGEST: s.sessions.backend_timeout_seconds,
            CommandType.CPO_REMOTE_STOP_INGEST: s.sessions.backend_timeout_seconds,
            CommandType.CPO_RESERVATION_START_INGEST: s.sessions.backend_timeout_seconds,
            CommandType.CPO_RESERVATION_STOP_INGEST: s.sessions.backend_timeout_seconds,
            CommandType.EMP_AUTHORIZE_START: s.authorization.decider_timeout_seconds,
            CommandType.CPO_AUTHORIZE_START: max(
                s.authorization.broadcast_timeout_seconds, max((p.timeout_seconds for p in s.peers), default=0)
            ),
        }
        if command is CommandType.EMP_CDR_FETCH:
            # every page of a peer's CDRs, each page one outbound call
            return s.oicp.request_timeout_seconds + 4 * max((p.timeout_seconds for p in s.peers), default=10.0)
        peer_calls = {
            CommandType.CPO_AUTHORIZE_STOP,
            CommandType.EMP_REMOTE_START,
            CommandType.EMP_REMOTE_STOP,
            CommandType.EMP_RESERVATION_START,
            CommandType.EMP_RESERVATION_STOP,
            CommandType.CPO_SESSION_NOTIFY,
        }
        if command in waits_for:
            return waits_for[command] + REPLY_MARGIN_SECONDS
        if command in peer_calls:
            # one outbound OICP call, bounded by the slowest peer's timeout
            return max((p.timeout_seconds for p in s.peers), default=10.0) + REPLY_MARGIN_SECONDS
        return s.oicp.request_timeout_seconds

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
