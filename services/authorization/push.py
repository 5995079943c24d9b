"""PushAuthenticationData of the EMP's offline tokens to the CPO peers that take it (EMP role).

One lane (an asyncio task) per CPO peer whose ``push`` lists PushAuthenticationData, built on the
delivery state of ``shared.stores.delivery`` (outbox, ``known`` set, lease, lane state in Redis, so it
survives restarts and several replicas never send to one peer at the same time):

* the token store's Lua script queues every changed or deleted token key in each lane's outbox in the
  same step as the change; the lane reads the token's current state when it sends (latest wins) and
  sends ``insert`` for a token the peer does not hold, ``update`` for one it holds, ``delete`` for one
  it holds that is gone, blocked, expired or no longer offline — one request per (action, ProviderID),
  strictly one at a time per peer;
* a ``fullLoad`` of all offline tokens per ProviderID (further chunks of ``batch_size`` as ``insert``)
  when the peer never got one, after any failed request (the peer may hold a partial delta: a
  timeout does not say whether it applied it), when it was failing longer than
  ``delivery.resync_after_seconds``, and every ``authorization.resync_interval_seconds`` (tokens that
  expire change no record, so only a periodic fullLoad removes them at the peer);
* failed requests back off exponentially with jitter (``delivery`` settings), honouring Retry-After.

Only usable offline tokens are sent: ``offline`` set, not blocked, not expired. QR tokens go with the
PIN or HashedPIN as stored (the CPO hashes a clear PIN on receipt).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import orjson
import redis.asyncio as aioredis

from shared.metrics import PEER_DELIVERY_DURATION, PEER_DELIVERY_REQUESTS
from shared.oicp import (
    Acknowledgement,
    ActionType,
    AuthenticationDataRecord,
    Identification,
    ProviderAuthenticationData,
    PushAuthenticationDataRequest,
)
from shared.oicp.ids import normalize_id
from shared.oicp.operations import OPERATIONS_BY_NAME
from shared.peers.backoff import backoff_delay
from shared.peers.client import PeerCallError, PeerClient
from shared.peers.lanes import LaneSet, LeasedLane
from shared.peers.registry import PeerRegistry
from shared.settings import NodeSettings, PeerConfig, PushOperation, Role
from shared.stores.delivery import DeliveryStore
from shared.stores.tokens import StoredToken, TokenStore

logger = logging.getLogger(__name__)

OPERATION = PushOperation.PUSH_AUTHENTICATION_DATA
PATH = OPERATIONS_BY_NAME["PushAuthenticationData"].path


def offline_usable(token: StoredToken | None) -> bool:
    return token is not None and token.token.offline and token.usable


class LaneFailed(Exception):
    """A request failed (already recorded); the lane backs off."""


class AuthDataLane(LeasedLane):
    def __init__(self, pusher: AuthDataPusher, peer: PeerConfig) -> None:
        super().__init__(peer, pusher.store, OPERATION, pusher.owner, task_name=f"authdata-lane:{peer.id}")
        self.pusher = pusher
        self._next_attempt = 0.0

    async def _run(self) -> None:
        delivery = self.pusher.settings.delivery
        self.wake.set()  # look at once: a backlog, a pending resync, or a peer that never got a fullLoad
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=delivery.poll_interval_seconds)
            self.wake.clear()
            try:
                await self._drain()
            except asyncio.CancelledError:
                raise
            except LaneFailed:
                pass
            except Exception:
                logger.exception("PushAuthenticationData lane %s failed; retrying", self.peer.id)

    async def _drain(self) -> None:
        store, settings = self.pusher.store, self.pusher.settings
        wait = self._next_attempt - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        ttl = settings.delivery.lease_seconds + self.peer.timeout_seconds
        if not await store.acquire_lease(self.peer.key, OPERATION, self.pusher.owner, ttl):
            return  # another replica sends to this peer now
        reason = await store.resync_reason(self.peer.key, OPERATION, settings.delivery.resync_after_seconds)
        if reason is None:
            state = await store.state(self.peer.id, self.peer.key, OPERATION)
            interval = settings.authorization.resync_interval_seconds
            if state.synced_at is not None and time.time() - state.synced_at > interval:
                reason = f"periodic fullLoad (every {interval:g}s)"
        if reason is not None:
            await self._resync(reason)
        while True:
            batch = await store.take_batch(self.peer.key, OPERATION, self.peer.batch_size_for(OPERATION))
            if not batch:
                return
            await self._deliver(batch)
            if len(batch) < self.peer.batch_size_for(OPERATION):
                return

    async def _deliver(self, batch: dict[bytes, bytes]) -> None:
        store, tokens = self.pusher.store, self.pusher.tokens
        keys = [k.decode() for k in batch]
        current = await tokens.get_many(keys)
        held = dict(zip(keys, await store.known(self.peer.key, OPERATION, keys), strict=True))
        groups: dict[tuple[str, str], list[tuple[str, Identification]]] = {}
        done: list[str] = []
        for key in keys:
            token = current[key]
            if token is not None and offline_usable(token):
                action = "update" if held[key] else "insert"
                groups.setdefault((action, token.token.provider_id or ""), []).append((key, token.token.identification))
            elif held[key]:
                # Gone, blocked, expired or no longer offline: the peer must forget it. The outbox
                # entry carries the record as it was, for a token that no longer exists.
                record: dict[str, Any] = orjson.loads(batch[key.encode()])["r"]
                identification = (
                    token.token.identification if token else Identification.model_validate(record["Identification"])
                )
                provider = token.token.provider_id if token else record.get("provider_id")
                groups.setdefault(("delete", provider or ""), []).append((key, identification))
            else:
                done.append(key)  # the peer never held it: nothing to send
        for (action, provider_id), items in groups.items():
            await self._send(action, provider_id, [i for _, i in items])
            sent_keys = [k for k, _ in items]
            await store.after_sent(
                self.peer.key,
                OPERATION,
                held=[] if action == "delete" else sent_keys,
                gone=sent_keys if action == "delete" else [],
                sent={k.encode(): batch[k.encode()] for k in sent_keys},
            )
        if done:
            await store.ack_sent(self.peer.key, OPERATION, {k.encode(): batch[k.encode()] for k in done})

    async def _resync(self, reason: str) -> None:
        store, tokens, size = self.pusher.store, self.pusher.tokens, self.peer.batch_size_for(OPERATION)
        logger.info("PushAuthenticationData fullLoad to %s: %s", self.peer.id, reason)
        # The outbox snapshot comes first: a change queued after it stays queued and is sent after
        # the fullLoad (at worst once more than needed, never lost).
        snapshot = await store.pending_snapshot(self.peer.key, OPERATION)
        sent: list[str] = []
        for provider_id in self.pusher.settings.provider_ids:
            keys = await tokens.keys_of_provider(normalize_id(provider_id))
            current = await tokens.get_many(keys)
            usable = [t for t in current.values() if t is not None and offline_usable(t)]
            for start in range(0, max(1, len(usable)), size):
                chunk = usable[start : start + size]
                action = "fullLoad" if start == 0 else "insert"
                await self._send(action, provider_id, [t.token.identification for t in chunk])
                sent += [t.key for t in chunk]
        await store.replace_known(self.peer.key, OPERATION, sent)
        await store.ack_sent(self.peer.key, OPERATION, snapshot)
        await store.record_success(self.peer.key, OPERATION)
        await store.record_resync(self.peer.key, OPERATION)

    async def _send(self, action: str, provider_id: str, identifications: list[Identification]) -> None:
        """One request; LaneFailed (after recording the failure) unless the peer acknowledged it."""
        request = PushAuthenticationDataRequest(
            action_type=ActionType(action),
            provider_authentication_data=ProviderAuthenticationData(
                provider_id=provider_id,
                authentication_data_record=[AuthenticationDataRecord(identification=i) for i in identifications],
            ),
        )
        started = time.perf_counter()
        retry_after = None
        try:
            answer = await self.pusher.client.call(
                self.peer, PATH.format(providerID=provider_id), request, Acknowledgement
            )
            error = None
            if not answer.result:
                status = answer.status_code
                error = f"refused: {status.code.value} {status.additional_info or status.description or ''}"
            outcome = "success" if answer.result else "refused"
        except PeerCallError as exc:
            error, outcome, retry_after = str(exc), exc.kind, exc.retry_after
        PEER_DELIVERY_DURATION.labels(self.peer.id, OPERATION).observe(time.perf_counter() - started)
        PEER_DELIVERY_REQUESTS.labels(self.peer.id, OPERATION, outcome).inc()
        if error is None:
            self._next_attempt = 0.0
            return
        await self._failed(error, retry_after)
        raise LaneFailed(error)

    async def _failed(self, error: str, retry_after: float | None) -> None:
        store, settings = self.pusher.store, self.pusher.settings
        state = await store.state(self.peer.id, self.peer.key, OPERATION)
        delay = backoff_delay(state.consecutive_failures + 1, settings.delivery, retry_after)
        self._next_attempt = time.time() + delay
        failures, _ = await store.record_failure(self.peer.key, OPERATION, error, self._next_attempt)
        await store.request_resync(self.peer.key, OPERATION, f"a request failed: {error}"[:500])
        logger.warning(
            "PushAuthenticationData to %s failed (%s), attempt %d, next in %.1fs", self.peer.id, error, failures, delay
        )


class AuthDataPusher(LaneSet[str, AuthDataLane]):
    """Keeps one lane per enabled CPO peer that takes PushAuthenticationData, following the registry."""

    def __init__(
        self,
        settings: NodeSettings,
        tokens: TokenStore,
        store: DeliveryStore,
        registry: PeerRegistry,
        client: PeerClient,
        redis: aioredis.Redis,
    ) -> None:
        super().__init__(store, redis, "authdata", logger)
        self.settings = settings
        self.tokens = tokens
        self.registry = registry
        self.client = client
        self.owner = f"{settings.name}-authorization-{uuid.uuid4().hex[:8]}"

    async def push_peers(self) -> list[PeerConfig]:
        return [p for p in await self.registry.enabled(Role.CPO) if OPERATION in p.push]

    async def outboxes(self) -> list[str]:
        """The outbox hashes the token store queues changes in."""
        return [self.store.pending_key(p.key, OPERATION) for p in await self.push_peers()]

    async def changed(self) -> None:
        """Wake the lanes of this process and, through Redis, those of the other replicas."""
        self.wake()
        await self.store.notify(OPERATION)

    # ---- the LaneSet hooks --------------------------------------------------------------------

    @property
    def poll_interval(self) -> float:
        return self.settings.delivery.poll_interval_seconds

    async def wanted_lanes(self) -> dict[str, PeerConfig]:
        return {p.key: p for p in await self.push_peers()}

    def new_lane(self, key: str, peer: PeerConfig) -> AuthDataLane:
        return AuthDataLane(self, peer)

    def on_wake_message(self, data: bytes) -> None:
        if data.decode() == OPERATION.value:
            self.wake()

    async def lane_removed(self, key: str, lane: AuthDataLane) -> None:
        # Changes are no longer queued for it: whenever it comes back, it gets a fullLoad.
        await self.store.request_resync(key, OPERATION, "peer was disabled or removed")
