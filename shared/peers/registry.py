"""The peer registry: peers from the config file plus peers registered through the internal API.

API-registered peers live in Redis (one hash, field ``<role>:<ID>``) so every service and replica
sees them; config peers cannot be changed through the API (the file is their source of truth).
Inbound bearer tokens of API peers are stored only as SHA-256 digests.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Collection, Mapping

import orjson
import redis.asyncio as aioredis

from shared.peers.profiles import BUILTIN_PROFILES, CompatibilityProfile
from shared.settings import PeerAuth, PeerConfig, Role, token_digest
from shared.stores.redis import KeySpace

logger = logging.getLogger(__name__)


class PeerConflict(Exception):
    """The peer exists already, or is defined in the configuration file."""


class PeerRegistry:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: KeySpace,
        configured: list[PeerConfig],
        cache_seconds: float = 1.0,
        profiles: Mapping[str, CompatibilityProfile] | None = None,
    ) -> None:
        self._redis = redis
        # compatibility profiles by name (NodeSettings.resolved_profiles()), for API-registered peers
        self._profiles = dict(profiles or BUILTIN_PROFILES)
        self._warned: set[str] = set()  # peers whose unknown profile was logged once
        self._hash = keys.key("peers")
        # "<role>:<ID>" -> "1"/"0": enabled or disabled by an operator, for file and API peers alike
        # (the file stays the source of a peer's definition; switching it off needs no restart)
        self._switches = keys.key("peers", "enabled")
        self._configured = {self._field(p): p for p in configured}
        self._cache_seconds = cache_seconds
        self._cache: tuple[float, list[PeerConfig]] | None = None

    @staticmethod
    def _field(peer: PeerConfig) -> str:
        return f"{peer.role.value}:{peer.key}"

    async def all(self, fresh: bool = False) -> list[PeerConfig]:
        now = time.monotonic()
        if not fresh and self._cache and now - self._cache[0] < self._cache_seconds:
            return self._cache[1]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._hash)
            pipe.hgetall(self._switches)
            raw, switches = await pipe.execute()
        dynamic = [self._with_profile(PeerConfig.model_validate_json(v)) for v in raw.values()]
        peers = [*self._configured.values(), *dynamic]
        switched = {k.decode(): v == b"1" for k, v in switches.items()}
        peers = [
            p.model_copy(update={"enabled": switched[self._field(p)]}) if self._field(p) in switched else p
            for p in peers
        ]
        self._cache = (now, peers)
        return peers

    def _with_profile(self, peer: PeerConfig) -> PeerConfig:
        try:
            peer.attach_profile(self._profiles)
        except ValueError as exc:  # its profile was removed from the file after it was registered
            if self._field(peer) not in self._warned:
                self._warned.add(self._field(peer))
                logger.warning("%s; calling it with the strict profile", exc)
        return peer

    def knows_profile(self, name: str) -> bool:
        return name in self._profiles

    async def set_enabled(self, role: Role, peer_key: str, enabled: bool) -> PeerConfig | None:
        """Switch a peer on or off without deleting it (None if there is no such peer). Every service
        sees it within the registry's cache time: a disabled peer is neither called nor accepted."""
        if await self.get(role, peer_key) is None:
            return None
        await self._redis.hset(self._switches, f"{role.value}:{peer_key}", "1" if enabled else "0")
        self._cache = None
        return await self.get(role, peer_key)

    async def enabled(self, role: Role | None = None) -> list[PeerConfig]:
        return [p for p in await self.all() if p.enabled and (role is None or p.role is role)]

    async def get(self, role: Role, peer_key: str) -> PeerConfig | None:
        for peer in await self.all():
            if peer.role is role and peer.key == peer_key:
                return peer
        return None

    async def by_token(self, token: str) -> PeerConfig | None:
        """The enabled peer whose inbound token this is (constant-time comparison of digests)."""
        digest = token_digest(token)
        for peer in await self.all():
            expected = peer.token_sha256
            if peer.auth is PeerAuth.CERTIFICATE:
                continue  # its token (if one is configured) is not accepted as its identity
            if peer.enabled and expected and hmac.compare_digest(expected, digest):
                return peer
        return None

    async def by_certificate(self, identities: Collection[str]) -> list[PeerConfig]:
        """The enabled peers whose ``certificate_identity`` is among ``identities`` (the values of the
        configured identity field in a client certificate). The caller needs exactly one."""
        return [
            peer
            for peer in await self.all()
            if peer.enabled
            and peer.auth is not PeerAuth.TOKEN
            and peer.certificate_identity is not None
            and peer.certificate_identity in identities
        ]

    async def add(self, peer: PeerConfig) -> PeerConfig:
        field = self._field(peer)
        if field in self._configured:
            raise PeerConflict(f"peer {peer.id} ({peer.role.value}) is defined in the configuration file")
        # Never keep the clear inbound token: only its digest is needed to recognise the caller.
        stored = PeerConfig.model_validate(peer.storage_dict())
        if not await self._redis.hsetnx(self._hash, field, orjson.dumps(peer.storage_dict())):
            raise PeerConflict(f"peer {peer.id} ({peer.role.value}) is registered already")
        self._cache = None
        return stored

    async def remove(self, role: Role, peer_key: str) -> bool:
        field = f"{role.value}:{peer_key}"
        if field in self._configured:
            raise PeerConflict(f"peer {peer_key} ({role.value}) is defined in the configuration file")
        self._cache = None
        removed = bool(await self._redis.hdel(self._hash, field))
        await self._redis.hdel(self._switches, field)
        return removed
