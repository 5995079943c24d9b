"""The node-wide gauges (shared/metrics.py, NODE_STATE_GAUGES), read from Redis and RabbitMQ each
time the gateway's /metrics is scraped.

What every replica of every worker shares lives there — the session ledger, the CDR outbox, the
delivery lanes' state and outboxes, the queues — so the gateway reports it for the whole node. A part
that cannot be read (Redis or RabbitMQ down) is left out of this scrape and says so in
``oicp_redis_up`` / ``oicp_rabbitmq_up``; the process-local metrics are served regardless.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import REGISTRY
from redis.exceptions import ResponseError

from services.gateway.context import GatewayContext
from shared.bus.inspect import QueueInspector
from shared.journal.store import JournalStore
from shared.metrics import LANE_STATES, NodeState, NodeStateCollector
from shared.settings import PushOperation, Role
from shared.stores.cdr_outbox import OPERATION as CDR_OPERATION
from shared.stores.delivery import LaneState
from shared.stores.redis import KeySpace

logger = logging.getLogger(__name__)

#: Parked or pending CDRs of a peer that is no longer configured (they still need someone's attention).
UNREGISTERED_PEER = "(unregistered)"
REDIS_TIMEOUT_SECONDS = 3.0


def lane_state(state: LaneState, resyncs: bool) -> str:
    """ok, failing (backing off after failed attempts) or resync (a full load is due); only the EVSE
    and authentication-data lanes resync, a CDR lane is ok or failing."""
    if state.consecutive_failures > 0:
        return "failing"
    if resyncs and state.resync_pending:
        return "resync"
    return "ok"


class NodeMetrics:
    """Registers the collector once per gateway process and refreshes it per scrape."""

    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self.collector = NodeStateCollector()
        REGISTRY.register(self.collector)
        self.inspector = QueueInspector(ctx.settings.rabbitmq.url, f"{ctx.settings.name}/gateway-monitor")
        self.journal = JournalStore(ctx.redis, KeySpace(ctx.settings.redis.key_prefix))

    async def refresh(self) -> None:
        state = NodeState()
        redis_ok, rabbit_ok = await asyncio.gather(self._from_redis(state), self._from_rabbitmq(state))
        state.set("oicp_redis_up", 1 if redis_ok else 0)
        state.set("oicp_rabbitmq_up", 1 if rabbit_ok else 0)
        self.collector.update(state)

    async def close(self) -> None:
        REGISTRY.unregister(self.collector)
        await self.inspector.close()

    async def _from_redis(self, state: NodeState) -> bool:
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                pending_cdrs = await self._sessions_and_cdrs(state)
                await self._lanes(state, pending_cdrs)
                await self._journal(state)
                await self._probes(state)
            return True
        except Exception as exc:
            logger.warning("node state not read from Redis: %s", exc)
            return False

    async def _sessions_and_cdrs(self, state: NodeState) -> dict[str, int]:
        """Returns the CDRs pending per EMP peer key (the CDR lanes' backlog, read once)."""
        ctx = self.ctx
        pending_by_peer: dict[str, int] = {}
        for session_state, count in (await ctx.sessions.count_by_state()).items():
            state.set("oicp_sessions", count, session_state)
        state.set(
            "oicp_sessions_without_cdr",
            await ctx.sessions.count_without_cdr(ctx.settings.sessions.cdr_missing_after_seconds),
        )
        pending_total, parked_total = await ctx.cdr_outbox.count_pending(), await ctx.cdr_outbox.count_parked()
        pending_seen = parked_seen = 0
        for peer in await ctx.registry.all():
            if peer.role is not Role.EMP:
                continue
            pending, parked = await ctx.cdr_outbox.count_pending(peer.key), await ctx.cdr_outbox.count_parked(peer.key)
            state.set("oicp_cdrs_pending", pending, peer.id)
            pending_by_peer[peer.key] = pending
            state.set("oicp_cdrs_parked", parked, peer.id)
            pending_seen, parked_seen = pending_seen + pending, parked_seen + parked
        if pending_total > pending_seen or parked_total > parked_seen:
            state.set("oicp_cdrs_pending", pending_total - pending_seen, UNREGISTERED_PEER)
            state.set("oicp_cdrs_parked", parked_total - parked_seen, UNREGISTERED_PEER)
        state.set("oicp_cdrs_without_session", await ctx.cdr_outbox.count_unknown_sessions(), "out")
        state.set("oicp_cdrs_without_session", await ctx.cdr_inbox.count_unknown_sessions(), "in")
        return pending_by_peer

    async def _lanes(self, state: NodeState, pending_cdrs: dict[str, int]) -> None:
        """Every delivery lane the workers run: the pushes to EMP peers and their CDRs (CPO role), the
        authentication data to CPO peers (EMP role)."""
        ctx = self.ctx
        lanes: list[tuple[str, str, str, bool]] = []  # peer id, peer key, operation, resyncs
        for peer in await ctx.registry.enabled(Role.EMP):
            lanes += [(peer.id, peer.key, PushOperation(op).value, True) for op in peer.push]
            lanes.append((peer.id, peer.key, CDR_OPERATION, False))
        for peer in await ctx.registry.enabled(Role.CPO):
            if PushOperation.PUSH_AUTHENTICATION_DATA in peer.push:
                lanes.append((peer.id, peer.key, PushOperation.PUSH_AUTHENTICATION_DATA.value, True))
        for peer_id, peer_key, operation, resyncs in lanes:
            lane = await ctx.delivery.state(peer_id, peer_key, operation)
            backlog = pending_cdrs.get(peer_key, 0) if operation == CDR_OPERATION else lane.backlog
            state.set("oicp_peer_delivery_backlog", backlog, peer_id, operation)
            state.set("oicp_peer_consecutive_failures", lane.consecutive_failures, peer_id, operation)
            if lane.last_success is not None:
                state.set("oicp_peer_last_success_timestamp_seconds", lane.last_success, peer_id, operation)
            current = lane_state(lane, resyncs)
            for name in LANE_STATES:
                state.set("oicp_peer_lane_state", 1 if name == current else 0, peer_id, operation, name)

    async def _probes(self, state: NodeState) -> None:
        """The latest probe of every registered peer (shared/peers/probe.py; a removed peer's is left out)."""
        results = await self.ctx.probes.all()
        for peer in await self.ctx.registry.all():
            result = results.get(self.ctx.probes.field(peer.role.value, peer.key))
            if result is None:
                continue
            role = peer.role.value
            state.set("oicp_peer_probe_success", 1 if result["ok"] else 0, peer.id, role, result["failed_step"] or "")
            state.set("oicp_peer_probe_timestamp_seconds", result["started_at"], peer.id, role)
            state.set("oicp_peer_probe_duration_seconds", result["duration_seconds"], peer.id, role, "total")
            for step in result["steps"]:
                if step["status"] != "skipped":
                    state.set("oicp_peer_probe_duration_seconds", step["duration_seconds"], peer.id, role, step["name"])
            for certificate, key in (("server", "certificate_not_after"), ("client", "client_certificate_not_after")):
                if (not_after := result.get(key)) is not None:
                    state.set("oicp_peer_certificate_expiry_timestamp_seconds", not_after, peer.id, role, certificate)

    async def _journal(self, state: NodeState) -> None:
        """The sealer's backlog; a damaged journal key leaves these two out, not the whole node state."""
        try:
            unsealed, age = await self.journal.unsealed()
        except ResponseError as exc:
            logger.warning("journal backlog not read: %s", exc)
            return
        state.set("oicp_journal_unsealed_entries", unsealed)
        state.set("oicp_journal_oldest_unsealed_age_seconds", age)

    async def _from_rabbitmq(self, state: NodeState) -> bool:
        topology = self.ctx.topology
        try:
            depths = await self.inspector.depths(topology.queue_names())
        except Exception as exc:
            logger.warning("queue depths not read from RabbitMQ: %s", exc)
            return False
        dead_letters = topology.dead_letters.name
        for name, depth in depths.items():
            kind = "dead_letter" if name == dead_letters else "work"
            state.set("oicp_queue_messages", depth.messages, name, kind)
            state.set("oicp_queue_consumers", depth.consumers, name, kind)
        return True
