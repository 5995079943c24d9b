"""The periodic peer probes (shared/peers/probe.py), every ``probes.interval_seconds``.

Every sessions worker runs this loop, but only the holder of the probes lease in Redis probes: one
round per interval for the whole node, however many replicas run. The holder renews the lease each
round; if it dies, another replica takes the lease over once it expires. The results go to Redis
(shared/stores/probes.py), where every gateway replica reads them for ``/probes`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from services.sessions.app import SessionsDeps
from shared.peers.probe import PeerProber, ProbeResult
from shared.settings import PeerConfig
from shared.stores.probes import ProbeStore

logger = logging.getLogger(__name__)


class ProbeJob:
    def __init__(self, deps: SessionsDeps) -> None:
        self.deps = deps
        self.store = ProbeStore(deps.redis, deps.keys)
        self.prober = PeerProber(deps.settings, deps.client)
        self.owner = f"{deps.settings.name}-probes-{uuid.uuid4().hex[:8]}"
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        return self.deps.settings.probes.interval_seconds

    async def start(self) -> None:
        if self.deps.settings.probes.enabled:
            self._task = asyncio.create_task(self._run(), name="peer-probes")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):  # another replica takes over at once, not after the lease's TTL
            await self.store.release_lease(self.owner)

    def _lease_seconds(self, peers: list[PeerConfig]) -> float:
        """Long enough for a round (the slowest peer's four steps) and the interval after it."""
        slowest = max((p.timeout_seconds for p in peers), default=10.0)
        return self.interval + 4 * slowest + 5

    async def _run(self) -> None:
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: the next round tries again
                logger.exception("peer probes failed")
            await asyncio.sleep(self.interval)

    async def round(self) -> list[ProbeResult]:
        """Probe every enabled peer whose ``probe.enabled`` is on, if this process holds the lease."""
        registered = await self.deps.registry.all()
        peers = [p for p in registered if p.enabled and p.probe.enabled]
        if not await self.store.acquire_lease(self.owner, self._lease_seconds(peers)):
            return []
        results = await asyncio.gather(*(self.prober.probe(peer) for peer in peers))
        for peer, result in zip(peers, results, strict=True):
            await self.store.save(peer.role.value, peer.key, result.as_dict())
            if not result.ok:
                logger.warning("probe of %s peer %s failed: %s", peer.role.value, peer.id, result.reason)
        await self.store.forget({self.store.field(p.role.value, p.key) for p in registered})
        return list(results)
