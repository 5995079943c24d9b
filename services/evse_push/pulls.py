"""Scheduled pulls from CPO peers that do not push (EMP role; DIGEST §9.2, §9.3, §9.5).

For every enabled CPO peer with ``pull`` configured, one task pulls on the peer's schedule into the same
``roaming`` read models that pushes fill, and publishes the same ``evse.data.received`` /
``evse.status.received`` events:

* PullEvseData, always over all pages (``?page=&size=``). The first pull (no cursor) is a full pull: the
  union of the pages becomes the complete set of every operator in it (``fullLoad`` per OperatorID), and
  an operator the peer returned before but no longer does gets a ``fullLoad`` with no records. Later
  pulls are deltas: ``LastCall`` = the start of the previous successful pull, each record applied by its
  ``deltaType`` (``delete``; ``insert``/``update``/none as an upsert: ``update`` if held, else
  ``insert``).
* PullEvseStatus (all operators): a ``fullLoad`` per OperatorEvseStatus.
* One replica pulls a (peer, operation) at a time: the delivery lanes' Redis lease, under the
  operation's name. The schedule and the cursor live in Redis, so replicas and restarts share them.
* A failed pull (peer down, refusal, invalid answer) keeps the cursor and is retried with backoff,
  never later than the next regular interval. The state of every (peer, operation) is kept in Redis
  for the internal API (:meth:`PullStateStore.pull_state`).

Events are published only for pulls that changed something: a pull repeats the peer's unchanged data
on a schedule, and an event per unchanged pull would only be noise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import Field, ValidationError

from services.evse_push.delivery import backoff_delay
from shared.bus.client import Bus, BusUnavailable
from shared.bus.messages import EventType, EvseDataReceived, EvseStatusReceived
from shared.metrics import PEER_DELIVERY_DURATION, PEER_DELIVERY_REQUESTS
from shared.oicp import (
    ActionType,
    DeltaType,
    EvseDataRecord,
    EvseStatus,
    EvseStatusRecord,
    OICPModel,
    OperatorEvseStatus,
    PullEvseDataRecord,
    PullEvseDataRequest,
    PullEvseStatusRequest,
    StatusCode,
    describe_validation_error,
)
from shared.oicp.ids import evse_belongs_to, normalize_id
from shared.oicp.operations import OPERATIONS_BY_NAME
from shared.peers.client import PeerCallError, PeerClient
from shared.peers.registry import PeerRegistry
from shared.settings import NodeSettings, PeerConfig, Role
from shared.stores.delivery import DeliveryStore
from shared.stores.evse_data import EvseDataStore
from shared.stores.evse_status import EvseStatusStore
from shared.stores.pull_state import PULL_EVSE_DATA, PULL_EVSE_STATUS, PullOutcome, PullStateStore
from shared.stores.push import ApplyResult

logger = logging.getLogger(__name__)

#: LastCall is sent this much before the previous pull's start. A CPO stamps a change when it is made
#: and stores it a little later (bus transit, a slow worker), and two clocks never agree exactly: a change
#: stamped just before our previous pull but stored after the peer answered it would otherwise never be
#: seen. Receiving a record again is harmless: applying an unchanged record changes nothing.
LAST_CALL_OVERLAP_SECONDS = 300.0
#: A full pull whose total changes between pages may have missed records that moved to a page already
#: read (a delete shifts the rest): it starts again, at most this often, then applies what it has.
FULL_PULL_ATTEMPTS = 3
#: A peer whose pages never say ``last`` stops here.
MAX_PAGES = 100_000
#: Upserts refused because another writer changed the read model between our look and the write.
UPSERT_ATTEMPTS = 3
#: Invalid records named in the log per pull (all of them are counted in the state).
INVALID_RECORDS_LOGGED = 5
#: Shortest sleep of a pull task, so that a due time in the past never makes it spin.
MIN_WAIT_SECONDS = 0.05

ModelT = TypeVar("ModelT", bound=OICPModel)


class PullFailed(Exception):
    """A pull did not complete; the cursor stays where it was."""


# ---- answers, read leniently --------------------------------------------------------------------
# The records are validated one by one, not with the answer: one malformed EVSE of a peer must not
# keep all its other EVSEs out. The same models read an eRoamingAcknowledgement, which is how a peer
# refuses a pull (Result false + StatusCode).


class _Answer(OICPModel):
    result: bool | None = Field(None, alias="Result")
    status_code: StatusCode | None = Field(None, alias="StatusCode")

    def refusal(self) -> str | None:
        """Why the peer refused, or None for a successful answer."""
        if self.status_code is not None and not self.status_code.is_success:
            code = self.status_code
            return f"refused: {code.code.value} {code.additional_info or code.description or ''}".strip()
        if self.result is False:
            return "refused: Result false"
        return None


AnswerT = TypeVar("AnswerT", bound=_Answer)


class _EvseDataPage(_Answer):
    content: list[dict[str, Any]] | None = Field(None, alias="content")
    number: int | None = Field(None, alias="number")
    total_elements: int | None = Field(None, alias="totalElements")
    total_pages: int | None = Field(None, alias="totalPages")
    last: bool | None = Field(None, alias="last")

    def is_last(self, page: int) -> bool:
        """True if ``page`` (0-based) is the last page; an empty page ends the walk in any case."""
        if not self.content or self.last:
            return True
        return self.total_pages is not None and page >= self.total_pages - 1


class _EvseStatusAnswer(_Answer):
    evse_statuses: dict[str, Any] | None = Field(None, alias="EvseStatuses")


# ---- state in Redis -----------------------------------------------------------------------------


@dataclass
class _OperatorRecords:
    operator_id: str
    operator_name: str
    records: dict[str, EvseDataRecord] = field(default_factory=dict)
    """Normalised EvseID -> record: a record met twice (pages shifted while walking) counts once."""


def _as_push_record(record: PullEvseDataRecord) -> EvseDataRecord:
    """The EvseDataRecord of a PullEvseDataRecord, without OperatorID/OperatorName, which the read model
    keeps beside the record (as it does for a push). Already validated: no second validation."""
    return EvseDataRecord.model_construct(
        _fields_set=record.model_fields_set & set(EvseDataRecord.model_fields),
        **{name: getattr(record, name) for name in EvseDataRecord.model_fields},
    )


class PeerPuller:
    """Pulls one peer's EVSE data and status on its schedule, one operation at a time."""

    def __init__(self, scheduler: PullScheduler, peer: PeerConfig) -> None:
        assert peer.pull is not None
        self.scheduler = scheduler
        self.peer = peer
        self.schedule = peer.pull
        self.task: asyncio.Task[None] | None = None
        self._invalid_logged = 0
        # A page may take up to the peer's timeout: the lease must outlive it.
        self._lease_seconds = max(scheduler.node.delivery.lease_seconds, 2 * peer.timeout_seconds)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"pull:{self.peer.id}")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        for operation in (PULL_EVSE_DATA, PULL_EVSE_STATUS):
            with contextlib.suppress(Exception):
                await self.scheduler.leases.release_lease(self.peer.key, operation, self.scheduler.owner)

    def _intervals(self) -> dict[str, float]:
        return {
            PULL_EVSE_DATA: self.schedule.evse_data_interval_seconds,
            PULL_EVSE_STATUS: self.schedule.evse_status_interval_seconds,
        }

    async def _run(self) -> None:
        poll = self.scheduler.node.delivery.poll_interval_seconds
        while True:
            try:
                wait = await self._pull_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis unreachable and the like: log, keep the task, look again later.
                logger.exception("pull task of %s failed; retrying", self.peer.id)
                wait = poll
            await asyncio.sleep(wait)

    async def _pull_due(self) -> float:
        """Run the pulls that are due; the seconds until the next look. The look repeats at least every
        poll interval, because another replica may pull (and move the due time) meanwhile."""
        state = self.scheduler.state
        waits = [self.scheduler.node.delivery.poll_interval_seconds]
        for operation, interval in self._intervals().items():
            due = await state.due_at(self.peer.key, operation, interval)
            if due <= time.time():
                await self._pull_leased(operation, interval)
                due = await state.due_at(self.peer.key, operation, interval)
                if due <= time.time():
                    # Still due: another replica holds the lease (or the state could not be written).
                    due = time.time() + waits[0]
            waits.append(due - time.time())
        return max(MIN_WAIT_SECONDS, min(waits))

    async def _pull_leased(self, operation: str, interval: float) -> None:
        scheduler = self.scheduler
        if not await scheduler.leases.acquire_lease(self.peer.key, operation, scheduler.owner, self._lease_seconds):
            return  # another replica pulls this peer now
        try:
            # Another replica may have finished this pull between our look and the lease.
            if await scheduler.state.due_at(self.peer.key, operation, interval) <= time.time():
                await self._pull(operation, interval)
        finally:
            with contextlib.suppress(Exception):
                await scheduler.leases.release_lease(self.peer.key, operation, scheduler.owner)

    async def _pull(self, operation: str, interval: float) -> None:
        state = self.scheduler.state
        started = datetime.now(UTC)
        self._invalid_logged = 0
        try:
            if operation == PULL_EVSE_DATA:
                outcome = await self._pull_evse_data()
                cursor: datetime | None = started
            else:
                outcome = await self._pull_evse_status()
                cursor = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, PullFailed | PeerCallError):
                error = str(exc)
            else:
                logger.exception("%s from %s failed unexpectedly", operation, self.peer.id)
                error = f"{type(exc).__name__}: {exc}"
            settings = self.scheduler.node.delivery
            retry_after = exc.retry_after if isinstance(exc, PeerCallError) else None
            failures = await state.consecutive_failures(self.peer.key, operation) + 1
            # Backoff after a failure, but never later than the regular schedule would have pulled,
            # unless the peer asked for a longer pause (HTTP 429 Retry-After, bounded as for pushes).
            delay = min(interval, backoff_delay(failures, settings))
            if retry_after is not None:
                delay = max(delay, min(retry_after, settings.backoff_max_seconds * 10))
            await state.record_failure(self.peer.key, operation, error, time.time() + delay)
            logger.warning(
                "%s from %s failed (%s), attempt %d, next in %.1fs", operation, self.peer.id, error, failures, delay
            )
            return
        await state.record_success(self.peer.key, operation, started, outcome, cursor)
        # A pull that changed nothing is the normal case every interval: not worth an INFO line.
        logger.log(
            logging.INFO if outcome.applied or outcome.invalid or outcome.kind == "full" else logging.DEBUG,
            "%s from %s: %s pull, %d pages, %d records received, %d applied, %d invalid",
            operation,
            self.peer.id,
            outcome.kind,
            outcome.pages,
            outcome.received,
            outcome.applied,
            outcome.invalid,
        )

    # ---- requests -----------------------------------------------------------------------------

    def _provider_id(self) -> str:
        provider_id = self.schedule.provider_id or next(iter(self.scheduler.node.provider_ids), None)
        if provider_id is None:
            raise PullFailed("this node has no provider_ids: it cannot pull as an EMP")
        return provider_id

    def _path(self, operation: str) -> str:
        return OPERATIONS_BY_NAME[operation].path.format(providerID=self._provider_id())

    async def _call(
        self, operation: str, body: OICPModel, answer_model: type[AnswerT], params: dict[str, str | int] | None = None
    ) -> AnswerT:
        # Renew the lease before every request: a long walk over pages must keep it.
        scheduler = self.scheduler
        if not await scheduler.leases.acquire_lease(self.peer.key, operation, scheduler.owner, self._lease_seconds):
            raise PullFailed("lost the pull lease to another replica")
        path = self._path(operation)
        started = time.perf_counter()
        outcome = "success"
        try:
            answer = await scheduler.client.call(self.peer, path, body, answer_model, params)
            if answer.refusal():
                outcome = "refused"
            return answer
        except PeerCallError as exc:
            outcome = exc.kind
            raise
        finally:
            PEER_DELIVERY_DURATION.labels(self.peer.id, operation).observe(time.perf_counter() - started)
            PEER_DELIVERY_REQUESTS.labels(self.peer.id, operation, outcome).inc()

    async def _pages(self, request: PullEvseDataRequest, outcome: PullOutcome) -> AsyncIterator[_EvseDataPage]:
        """Every page of a PullEvseData answer, in order."""
        for page in range(MAX_PAGES):
            answer = await self._call(
                PULL_EVSE_DATA, request, _EvseDataPage, {"page": page, "size": self.schedule.page_size}
            )
            if problem := answer.refusal():
                raise PullFailed(f"page {page}: {problem}")
            if answer.status_code is None or answer.content is None:
                raise PullFailed(f"page {page}: the answer has no StatusCode or no content")
            outcome.pages += 1
            yield answer
            if answer.is_last(page):
                return
        raise PullFailed(f"the peer's answer did not end within {MAX_PAGES} pages")

    def _valid(self, model: type[ModelT], raw: Any) -> ModelT | None:
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            self._invalid(f"invalid record: {describe_validation_error(exc)}")
            return None

    def _invalid(self, why: str) -> None:
        if self._invalid_logged < INVALID_RECORDS_LOGGED:
            logger.warning("pull from %s: %s; record skipped", self.peer.id, why)
        self._invalid_logged += 1

    def _foreign(self, operator_id: str, evse_id: str) -> bool:
        """True for a record the peer may not supply: like a push (DIGEST §10), a peer supplies only its
        own operator's EVSEs, unless it is the hub (default route), which relays other operators."""
        if self.peer.default_route:
            return False
        if normalize_id(operator_id) != self.peer.key or not evse_belongs_to(evse_id, self.peer.id):
            self._invalid(f"EvseID {evse_id} of OperatorID {operator_id} is not of peer {self.peer.id}")
            return True
        return False

    def _page_records(self, page: _EvseDataPage, outcome: PullOutcome) -> list[PullEvseDataRecord]:
        records = []
        for raw in page.content or []:
            outcome.received += 1
            record = self._valid(PullEvseDataRecord, raw)
            if record is None or self._foreign(record.operator_id, record.evse_id):
                outcome.invalid += 1
                continue
            records.append(record)
            outcome.operators[normalize_id(record.operator_id)] = [record.operator_id, record.operator_name]
        return records

    # ---- PullEvseData -------------------------------------------------------------------------

    async def _pull_evse_data(self) -> PullOutcome:
        cursor = await self.scheduler.state.cursor(self.peer.key)
        if cursor is None:
            return await self._full_pull()
        return await self._delta_pull(cursor - timedelta(seconds=LAST_CALL_OVERLAP_SECONDS))

    def _data_request(self, last_call: datetime | None) -> PullEvseDataRequest:
        return PullEvseDataRequest(
            provider_id=self._provider_id(),
            last_call=last_call,
            geo_coordinates_response_format=self.schedule.geo_format,
        )

    async def _full_pull(self) -> PullOutcome:
        """All pages; the union becomes the complete set of each operator in it."""
        request = self._data_request(None)
        for attempt in range(1, FULL_PULL_ATTEMPTS + 1):
            outcome = PullOutcome("full")
            by_operator: dict[str, _OperatorRecords] = {}
            totals: set[int] = set()
            async for page in self._pages(request, outcome):
                if page.total_elements is not None:
                    totals.add(page.total_elements)
                for record in self._page_records(page, outcome):
                    norm = normalize_id(record.operator_id)
                    group = by_operator.setdefault(norm, _OperatorRecords(record.operator_id, record.operator_name))
                    group.operator_name = record.operator_name
                    group.records[normalize_id(record.evse_id)] = _as_push_record(record)
            if len(totals) <= 1:
                break
            logger.warning(
                "full PullEvseData from %s: the total changed while paging (%s), attempt %d of %d",
                self.peer.id,
                sorted(totals),
                attempt,
                FULL_PULL_ATTEMPTS,
            )
        state, store = self.scheduler.state, self.scheduler.roaming_data
        previous = await state.operators(self.peer.key, PULL_EVSE_DATA)
        for norm, (operator_id, operator_name) in previous.items():
            if norm not in by_operator:
                by_operator[norm] = _OperatorRecords(operator_id, operator_name)
        for group in by_operator.values():
            at = datetime.now(UTC)
            result = await store.apply(
                ActionType.FULL_LOAD, group.operator_id, group.operator_name, list(group.records.values()), at
            )
            outcome.applied += await self._data_applied(ActionType.FULL_LOAD, group.operator_id, result, at)
        await state.replace_operators(self.peer.key, PULL_EVSE_DATA, outcome.operators)
        return outcome

    async def _delta_pull(self, last_call: datetime) -> PullOutcome:
        """The records changed since ``last_call``, applied page by page by their deltaType."""
        outcome = PullOutcome("delta")
        async for page in self._pages(self._data_request(last_call), outcome):
            deletes: dict[str, _OperatorRecords] = {}
            upserts: dict[str, _OperatorRecords] = {}
            for record in self._page_records(page, outcome):
                # No deltaType in a delta answer: the record is there, so it is at least an update.
                target = deletes if record.delta_type is DeltaType.DELETE else upserts
                group = target.setdefault(
                    normalize_id(record.operator_id), _OperatorRecords(record.operator_id, record.operator_name)
                )
                group.operator_name = record.operator_name
                group.records[normalize_id(record.evse_id)] = _as_push_record(record)
            for group in upserts.values():
                outcome.applied += await self._upsert(group)
            for group in deletes.values():
                at = datetime.now(UTC)
                result = await self.scheduler.roaming_data.apply(
                    ActionType.DELETE, group.operator_id, group.operator_name, list(group.records.values()), at
                )
                outcome.applied += await self._data_applied(ActionType.DELETE, group.operator_id, result, at)
        await self.scheduler.state.add_operators(self.peer.key, PULL_EVSE_DATA, outcome.operators)
        return outcome

    async def _upsert(self, group: _OperatorRecords) -> int:
        """Insert what the read model does not hold, update what it does; the number of records changed.

        The read model's insert/update are strict (as for a push): a push or another pull between the
        look and the write makes one conflict, and then the split is made again.
        """
        store = self.scheduler.roaming_data
        applied = 0
        pending = dict(group.records)
        for _ in range(UPSERT_ATTEMPTS):
            held = await store.get_many([r.evse_id for r in pending.values()])
            split = {
                ActionType.UPDATE: [r for r in pending.values() if held[r.evse_id] is not None],
                ActionType.INSERT: [r for r in pending.values() if held[r.evse_id] is None],
            }
            for action, records in split.items():
                if not records:
                    continue
                at = datetime.now(UTC)
                result = await store.apply(action, group.operator_id, group.operator_name, records, at)
                if result.ok:
                    applied += await self._data_applied(action, group.operator_id, result, at)
                    for record in records:
                        pending.pop(normalize_id(record.evse_id), None)
            if not pending:
                return applied
        raise PullFailed(f"{len(pending)} records of {group.operator_id} kept conflicting with other writes")

    async def _data_applied(self, action: ActionType, operator_id: str, result: ApplyResult, at: datetime) -> int:
        """Publish what an apply changed (like a push does); the number of records changed."""
        if not result.ok:
            raise PullFailed(result.conflict_info(action.value))
        if result.changed or result.deleted:
            await self._emit(
                EventType.EVSE_DATA_RECEIVED,
                EvseDataReceived(
                    peer_id=self.peer.id,
                    operator_id=operator_id,
                    action_type=action,
                    evse_ids=result.changed,
                    deleted_evse_ids=result.deleted,
                    received_at=at,
                ),
            )
        return len(result.changed) + len(result.deleted)

    async def _emit(self, event: EventType, payload: EvseDataReceived | EvseStatusReceived) -> None:
        # The change is stored already: a broker outage costs the event, not the pull (a retried pull
        # would find nothing left to change and publish nothing either).
        try:
            await self.scheduler.bus.emit_event(event, payload)
        except BusUnavailable as exc:
            logger.warning("%s of a pull from %s not published: %s", event.value, self.peer.id, exc)

    # ---- PullEvseStatus -----------------------------------------------------------------------

    async def _pull_evse_status(self) -> PullOutcome:
        """All statuses; each operator's records become its complete set."""
        outcome = PullOutcome("status", pages=1)
        request = PullEvseStatusRequest(provider_id=self._provider_id())
        answer = await self._call(PULL_EVSE_STATUS, request, _EvseStatusAnswer)
        if problem := answer.refusal():
            raise PullFailed(problem)
        if answer.evse_statuses is None:
            raise PullFailed("the answer has no EvseStatuses")
        by_operator: dict[str, tuple[str, dict[str, EvseStatusRecord]]] = {}
        for raw_group in answer.evse_statuses.get("OperatorEvseStatus") or []:
            raw_records = raw_group.get("EvseStatusRecord") if isinstance(raw_group, dict) else None
            if not isinstance(raw_records, list):
                self._invalid("an OperatorEvseStatus without an EvseStatusRecord list")
                continue
            header = self._valid(OperatorEvseStatus, {**raw_group, "EvseStatusRecord": []})
            if header is None:
                outcome.invalid += len(raw_records)
                continue
            norm = normalize_id(header.operator_id)
            outcome.operators[norm] = [header.operator_id, header.operator_name or header.operator_id]
            records = by_operator.setdefault(norm, (header.operator_id, {}))[1]
            for raw in raw_records:
                outcome.received += 1
                record = self._valid(EvseStatusRecord, raw)
                if record is None or self._foreign(header.operator_id, record.evse_id):
                    outcome.invalid += 1
                    continue
                records[normalize_id(record.evse_id)] = record
        state = self.scheduler.state
        previous = await state.operators(self.peer.key, PULL_EVSE_STATUS)
        for norm, (operator_id, _) in previous.items():
            by_operator.setdefault(norm, (operator_id, {}))
        for operator_id, records in by_operator.values():
            outcome.applied += await self._apply_statuses(operator_id, list(records.values()))
        await state.replace_operators(self.peer.key, PULL_EVSE_STATUS, outcome.operators)
        return outcome

    async def _apply_statuses(self, operator_id: str, records: list[EvseStatusRecord]) -> int:
        at = datetime.now(UTC)
        result = await self.scheduler.roaming_status.apply(
            ActionType.FULL_LOAD.value, operator_id, [(r.evse_id, r.evse_status.value) for r in records], at
        )
        if not result.ok:  # a fullLoad never conflicts; kept for the day the store changes
            raise PullFailed(result.conflict_info(ActionType.FULL_LOAD.value))
        # The event carries what changed, not the operator's whole set every interval: ``update`` with
        # the new statuses, ``delete`` with the EVSEs the peer no longer lists (as EvseNotFound, the
        # status OICP gives an EvseID the peer does not know).
        changed = set(result.changed)
        if changed:
            await self._emit(
                EventType.EVSE_STATUS_RECEIVED,
                EvseStatusReceived(
                    peer_id=self.peer.id,
                    operator_id=operator_id,
                    action_type=ActionType.UPDATE,
                    records=[r for r in records if r.evse_id in changed],
                    received_at=at,
                ),
            )
        if result.deleted:
            await self._emit(
                EventType.EVSE_STATUS_RECEIVED,
                EvseStatusReceived(
                    peer_id=self.peer.id,
                    operator_id=operator_id,
                    action_type=ActionType.DELETE,
                    records=[
                        EvseStatusRecord(evse_id=e, evse_status=EvseStatus.EVSE_NOT_FOUND) for e in result.deleted
                    ],
                    received_at=at,
                ),
            )
        return len(result.changed) + len(result.deleted)


# ---- all peers ----------------------------------------------------------------------------------


class PullScheduler:
    """Keeps one pull task per enabled CPO peer with ``pull`` configured, following the registry."""

    def __init__(
        self,
        node: NodeSettings,
        registry: PeerRegistry,
        client: PeerClient,
        bus: Bus,
        leases: DeliveryStore,
        state: PullStateStore,
        roaming_data: EvseDataStore,
        roaming_status: EvseStatusStore,
    ) -> None:
        self.node = node
        self.registry = registry
        self.client = client
        self.bus = bus
        self.leases = leases
        self.state = state
        self.roaming_data = roaming_data
        self.roaming_status = roaming_status
        self.owner = f"pull-{uuid.uuid4()}"
        self.pullers: dict[str, PeerPuller] = {}
        self._supervisor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._sync_pullers()
        self._supervisor = asyncio.create_task(self._supervise(), name="pull-supervisor")

    async def stop(self) -> None:
        if self._supervisor:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await asyncio.gather(*(puller.stop() for puller in self.pullers.values()))
        self.pullers.clear()

    async def pull_state(self, peer: PeerConfig) -> dict[str, Any]:
        """What the pulls of this peer did (for the internal API)."""
        return await self.state.pull_state(peer)

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self.node.delivery.poll_interval_seconds)
            try:
                await self._sync_pullers()
            except Exception:
                logger.exception("could not refresh the peer list for pulls")

    async def _sync_pullers(self) -> None:
        wanted = {p.key: p for p in await self.registry.enabled(Role.CPO) if p.pull is not None}
        for key in list(self.pullers):
            if key not in wanted or wanted[key] != self.pullers[key].peer:
                await self.pullers.pop(key).stop()
        for key, peer in wanted.items():
            if key not in self.pullers:
                self.pullers[key] = puller = PeerPuller(self, peer)
                puller.start()
