"""EMP role: fetching CDRs from CPO peers with GetChargeDetailRecords (DIGEST §9.10), on demand
(``emp.cdr.fetch``) and on a schedule per CPO peer (``cdr_fetch_interval_seconds``).

Every page is read (``size`` 2000, the maximum) and every CDR goes through the same door as a pushed
one (``services.cdr.inbox.accept``), so what was already pushed is recognised as a duplicate and
nothing is stored or billed twice. The CPO filters on when *it* received the CDRs; a scheduled fetch
covers [cursor - overlap, now] so that CDRs the CPO stored just as the last window closed, and a
little clock skew, are not missed (the overlap costs duplicates, which the inbox absorbs). One
replica fetches a peer at a time (a Redis lease); the state is shown by ``GET /cdrs/fetches``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from services.cdr.app import CdrDeps
from services.cdr.inbox import accept
from shared.bus.envelope import Envelope
from shared.bus.messages import CdrFetch, CommandReply
from shared.oicp import ChargeDetailRecordsPage, GetChargeDetailRecordsRequest, StatusCodeValue
from shared.oicp.ids import normalize_id
from shared.oicp.messages import MAX_CDR_PAGE_SIZE
from shared.oicp.operations import OPERATIONS_BY_NAME
from shared.peers.client import PeerCallError
from shared.settings import PeerConfig, Role
from shared.stores.pull_state import GET_CHARGE_DETAIL_RECORDS, PullOutcome, PullStateStore

logger = logging.getLogger(__name__)

PATH = OPERATIONS_BY_NAME["GetChargeDetailRecords"].path
#: A scheduled fetch starts this long before the end of the last window.
OVERLAP = timedelta(minutes=5)
#: A fetch never reads more pages than this (2000 CDRs each): a runaway peer cannot loop us forever.
MAX_PAGES = 10_000


class FetchFailed(Exception):
    pass


@dataclass
class FetchOutcome:
    pages: int = 0
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    refused: int = 0

    def summary(self) -> str:
        return (
            f"{self.received} CDRs in {self.pages} pages: {self.stored} new, {self.duplicates} already known, "
            f"{self.refused} refused"
        )


def _provider_id(deps: CdrDeps, peer: PeerConfig) -> str:
    """The ProviderID the peer knows this node by."""
    if peer.pull is not None and peer.pull.provider_id:
        return peer.pull.provider_id
    return deps.settings.provider_ids[0]


async def fetch_window(
    deps: CdrDeps,
    peer: PeerConfig,
    from_: datetime,
    to: datetime,
    session_ids: list[str] | None = None,
    correlation_id: str | None = None,
) -> FetchOutcome:
    """Read every page of the peer's CDRs in [from_, to] into the inbox; FetchFailed if the peer fails."""
    outcome = FetchOutcome()
    request = GetChargeDetailRecordsRequest(
        provider_id=_provider_id(deps, peer), from_=from_, to=to, session_id=session_ids or None
    )
    path = PATH.format(providerID=request.provider_id)
    page = 0
    while page < MAX_PAGES:
        try:
            answer = await deps.client.call(
                peer, path, request, ChargeDetailRecordsPage, params={"page": page, "size": MAX_CDR_PAGE_SIZE}
            )
        except PeerCallError as exc:
            raise FetchFailed(str(exc)) from exc
        if answer.status_code.code is not StatusCodeValue.SUCCESS:
            raise FetchFailed(f"{answer.status_code.code.value}: {answer.status_code.additional_info or ''}")
        outcome.pages += 1
        received_at = datetime.now(UTC)
        for cdr in answer.content:
            outcome.received += 1
            reply = await accept(deps, peer, cdr, "fetch", received_at, correlation_id)
            if not reply.ok:
                outcome.refused += 1
                logger.warning("fetched CDR %s from %s refused: %s", cdr.session_id, peer.id, reply.info)
            elif reply.changed:
                outcome.stored += 1
            else:
                outcome.duplicates += 1
        if answer.last or not answer.content:
            return outcome
        page += 1
    raise FetchFailed(f"more than {MAX_PAGES} pages")


async def fetch(deps: CdrDeps, envelope: Envelope[CdrFetch], correlation_id: str | None) -> CommandReply:
    """emp.cdr.fetch: one GetChargeDetailRecords run (all pages) from a CPO peer, on demand."""
    command = envelope.data
    if not deps.settings.provider_ids:
        return CommandReply(ok=False, code=StatusCodeValue.SERVICE_NOT_AVAILABLE, info="this node has no EMP role")
    peer = await deps.registry.get(Role.CPO, normalize_id(command.peer_id))
    if peer is None or not peer.enabled:
        return CommandReply(ok=False, code=StatusCodeValue.PARTNER_NOT_FOUND, info=f"no CPO peer {command.peer_id}")
    to = command.to or datetime.now(UTC)
    from_ = command.from_ or to - timedelta(seconds=deps.settings.cdr.fetch_lookback_seconds)
    try:
        outcome = await fetch_window(deps, peer, from_, to, command.session_ids, correlation_id)
    except (FetchFailed, ValidationError) as exc:
        return CommandReply(ok=False, code=StatusCodeValue.PARTNER_DID_NOT_RESPOND, info=f"{peer.id}: {exc}")
    return CommandReply(ok=True, info=outcome.summary(), changed=outcome.stored)


class CdrFetchScheduler:
    """One task per enabled CPO peer with ``cdr_fetch_interval_seconds``, following the registry."""

    def __init__(self, deps: CdrDeps) -> None:
        self.deps = deps
        self.state = PullStateStore(deps.redis, deps.keys)
        self.owner = f"cdr-fetch-{uuid.uuid4()}"
        self.tasks: dict[str, tuple[PeerConfig, asyncio.Task[None]]] = {}
        self._supervisor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if Role.EMP not in self.deps.settings.roles:
            return
        await self._sync()
        self._supervisor = asyncio.create_task(self._supervise(), name="cdr-fetch-supervisor")

    async def stop(self) -> None:
        tasks = [t for _, t in self.tasks.values()] + ([self._supervisor] if self._supervisor else [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self.deps.settings.delivery.poll_interval_seconds)
            try:
                await self._sync()
            except Exception:
                logger.exception("could not refresh the peer list for CDR fetches")

    async def _sync(self) -> None:
        wanted = {
            p.key: p for p in await self.deps.registry.enabled(Role.CPO) if p.cdr_fetch_interval_seconds is not None
        }
        for key in list(self.tasks):
            peer, task = self.tasks[key]
            if key not in wanted or wanted[key] != peer:
                task.cancel()
                del self.tasks[key]
        for key, peer in wanted.items():
            if key not in self.tasks:
                self.tasks[key] = (peer, asyncio.create_task(self._run(peer), name=f"cdr-fetch:{peer.id}"))

    async def _run(self, peer: PeerConfig) -> None:
        interval = peer.cdr_fetch_interval_seconds or 0.0
        while True:
            try:
                due = await self.state.due_at(peer.key, GET_CHARGE_DETAIL_RECORDS, interval)
                wait = due - time.time()
                if wait <= 0:
                    await self._fetch_leased(peer, interval)
                    wait = interval
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("CDR fetch from %s failed", peer.id)
                wait = interval
            await asyncio.sleep(max(0.05, min(wait, self.deps.settings.delivery.poll_interval_seconds)))

    async def _fetch_leased(self, peer: PeerConfig, interval: float) -> None:
        store = self.deps.delivery_store
        lease = max(self.deps.settings.delivery.lease_seconds, 4 * peer.timeout_seconds)
        if not await store.acquire_lease(peer.key, GET_CHARGE_DETAIL_RECORDS, self.owner, lease):
            return  # another replica fetches this peer now
        try:
            started = datetime.now(UTC)
            cursor = await self.state.cursor(peer.key, GET_CHARGE_DETAIL_RECORDS)
            lookback = timedelta(seconds=self.deps.settings.cdr.fetch_lookback_seconds)
            from_ = cursor - OVERLAP if cursor else started - lookback
            try:
                outcome = await fetch_window(self.deps, peer, from_, started)
            except (FetchFailed, ValidationError) as exc:
                failures = await self.state.consecutive_failures(peer.key, GET_CHARGE_DETAIL_RECORDS)
                backoff = min(interval, self.deps.settings.cdr.backoff_initial_seconds * 2**failures)
                await self.state.record_failure(
                    peer.key, GET_CHARGE_DETAIL_RECORDS, str(exc), time.time() + backoff * random.uniform(0.5, 1.0)
                )
                logger.warning("CDR fetch from %s failed: %s", peer.id, exc)
                return
            await self.state.record_success(
                peer.key,
                GET_CHARGE_DETAIL_RECORDS,
                started,
                PullOutcome("cdrs", outcome.pages, outcome.received, applied=outcome.stored, invalid=outcome.refused),
                cursor=started,
            )
            if outcome.stored:
                logger.info("CDR fetch from %s: %s", peer.id, outcome.summary())
        finally:
            await store.release_lease(peer.key, GET_CHARGE_DETAIL_RECORDS, self.owner)
