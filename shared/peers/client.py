"""Outbound OICP calls to peers: one pooled aiohttp session per process (ENGINEERING: about ten
times httpx's rate here), per-peer timeout and credentials, and errors sorted into kinds that the
delivery lanes act on (retry, back off, honour Retry-After)."""

from __future__ import annotations

import email.utils
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
import orjson
import yarl
from pydantic import ValidationError
from redis.exceptions import RedisError

from shared.journal.recorder import OutboundCall
from shared.oicp import AssembledBody, OICPModel
from shared.oicp.errors import describe_validation_error
from shared.peers.tls import CLIENT_CONTEXTS
from shared.ratelimit import RateLimiter, RateLimitExceeded, operation_of_call
from shared.settings import PeerConfig

ResponseT = TypeVar("ResponseT", bound=OICPModel)


#: PeerCallError.kind of a call this node held back under the peer's rate limit (never sent).
RATE_LIMITED = "rate_limited"


class PeerCallError(Exception):
    """An outbound OICP call failed before an OICP answer could be read."""

    def __init__(self, kind: str, message: str, http_status: int | None = None, retry_after: float | None = None):
        super().__init__(f"{kind}: {message}")
        self.kind = kind  # timeout | connect | http | invalid_response | rate_limited
        self.http_status = http_status
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


@dataclass
class PeerClient:
    limit_per_host: int = 8
    limiter: RateLimiter | None = None  # the peers' per-operation limits (None: unlimited)
    _session: aiohttp.ClientSession | None = None

    @classmethod
    def create(cls, limit_per_host: int = 8, limiter: RateLimiter | None = None) -> PeerClient:
        """The pooled session itself is opened on first use, inside the event loop (aiohttp needs one)."""
        return cls(limit_per_host, limiter)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=512, limit_per_host=self.limit_per_host, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, json_serialize=lambda o: orjson.dumps(o).decode()
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(
        self,
        peer: PeerConfig,
        path: str,
        body: OICPModel | AssembledBody,
        response_model: type[ResponseT],
        params: Mapping[str, str | int] | None = None,
        operation: str | None = None,
    ) -> ResponseT:
        """POST ``body`` to ``peer``'s base URL + ``path`` (+ query ``params``, e.g. the ``page``/``size`` of a
        paged pull) and parse the OICP answer. ``operation`` names the rate limit the call counts against
        (default: the catalogue operation of ``path`` and ``body``). Every call sent is journaled
        (shared/journal), a transport failure too; the journal never delays or fails the call."""
        journaled = OutboundCall(peer.id, operation or operation_of_call(path, body) or type(body).__name__, path)
        try:
            return await self._call(peer, path, body, response_model, params, operation, journaled)
        except PeerCallError as exc:
            journaled.error = str(exc)
            raise
        finally:
            journaled.record()

    async def _call(
        self,
        peer: PeerConfig,
        path: str,
        body: OICPModel | AssembledBody,
        response_model: type[ResponseT],
        params: Mapping[str, str | int] | None,
        operation: str | None,
        journaled: OutboundCall,
    ) -> ResponseT:
        waited = await self._take_slot(peer, operation or operation_of_call(path, body))
        # The peer's compatibility profile (shared/peers/profiles.py), in this one place for every call:
        # its path for the operation, its ID spelling, its field names and date-time format.
        path, document = peer.compat.outbound(path, body)
        journaled.path = path
        url: str | yarl.URL = str(peer.base_url).rstrip("/") + path
        if "%" in path:  # percent-encoded by the profile: sent as it is (yarl would decode %2A to *)
            url = yarl.URL(url, encoded=True)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if peer.outbound_token is not None:
            headers["Authorization"] = f"Bearer {peer.outbound_token.get_secret_value()}"
        timeout = aiohttp.ClientTimeout(total=peer.timeout_seconds - waited)
        try:
            # mTLS: the peer's own client certificate and CA (reloaded when the files change); True keeps
            # aiohttp's default verification for peers without a tls section.
            tls_context: ssl.SSLContext | bool = CLIENT_CONTEXTS.for_peer(peer) or True
        except (ssl.SSLError, OSError) as exc:
            raise PeerCallError("connect", f"TLS files of peer {peer.id} do not load: {exc}") from exc
        try:
            async with self.session.post(
                url,
                params=params,
                data=journaled.sent(orjson.dumps(document)),
                headers=headers,
                timeout=timeout,
                ssl=tls_context,
                # A 3xx is an error, not a new address: the peer's base URL is configured, and a
                # redirect would send the body (and, same-origin, the token) wherever it points.
                allow_redirects=False,
            ) as response:
                raw = await response.read()
                journaled.answered(response.status, raw)
                if response.status == 429 or response.status >= 500:
                    raise PeerCallError(
                        "http",
                        f"HTTP {response.status}",
                        http_status=response.status,
                        retry_after=_retry_after(response.headers.get("Retry-After")),
                    )
                if response.status != 200:
                    raise PeerCallError("http", f"HTTP {response.status}: {raw[:200]!r}", response.status)
        except TimeoutError as exc:
            raise PeerCallError("timeout", f"no answer within {peer.timeout_seconds}s") from exc
        except aiohttp.ClientError as exc:
            raise PeerCallError("connect", str(exc) or type(exc).__name__) from exc
        try:
            return response_model.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else "not JSON"
            raise PeerCallError("invalid_response", detail, http_status=200) from exc

    async def _take_slot(self, peer: PeerConfig, operation: str | None) -> float:
        """Wait for a free slot of the peer's limit; return the seconds waited. The wait takes at most
        half the peer's timeout and the request the rest, so a call still ends within the timeout that
        its callers' deadlines (gateway replies, lane leases) are computed from; a longer wait is an
        error with Retry-After, which the delivery lanes back off for as for an HTTP 429. A limiter that
        cannot be asked (Redis down) fails the call: the limit must never be exceeded."""
        if self.limiter is None or operation is None:
            return 0.0
        try:
            return await self.limiter.wait_outbound(peer, operation, peer.timeout_seconds / 2)
        except RateLimitExceeded as exc:
            raise PeerCallError(RATE_LIMITED, str(exc), retry_after=exc.retry_after) from exc
        except (RedisError, OSError) as exc:
            raise PeerCallError(RATE_LIMITED, f"rate limiter unavailable: {exc}") from exc
