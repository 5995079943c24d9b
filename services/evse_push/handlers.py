"""Handlers of the evse_push service: functions of (message, dependencies), wired to their queues.

Each handler makes its effect durable in Redis before the message is acknowledged; if that fails
the message is requeued (up to the queue's delivery limit, then dead-lettered). Events are
published after the effect; on a redelivery they are published again (at least once), because the
first attempt may have stored the change and then failed to publish.

Commands that carry a ``reply_to`` (the gateway's OICP pushes, an internal system that wants the
outcome) get a CommandReply: 000 once stored, 009 with the conflicting records when an insert or
update is refused, 017/018 when the IDs are not the node's. A processed command's reply is kept for
an hour under its event_id, so a redelivery answers the same and never applies twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Any

from faststream.rabbit import RabbitResponse

from services.evse_push.app import EvsePushDeps
from services.evse_push.sources import evse_pricing_key, pricing_product_key
from shared.bus import replies
from shared.bus.annotations import RabbitMessage
from shared.bus.envelope import Envelope
from shared.bus.messages import (
    CommandReply,
    CommandType,
    EventType,
    EvseDataChanged,
    EvseDataIngest,
    EvseDataReceived,
    EvseDataSet,
    EvsePricingChanged,
    EvsePricingIngest,
    EvsePricingSet,
    EvseStatusChanged,
    EvseStatusIngest,
    EvseStatusReceived,
    EvseStatusSet,
    PricingProductsChanged,
    PricingProductsIngest,
    PricingProductsSet,
)
from shared.bus.middleware import PoisonMessage, delivered_before
from shared.oicp import StatusCodeValue
from shared.oicp.ids import evse_belongs_to, normalize_id
from shared.settings import PushOperation
from shared.stores.evse_status import StatusChange
from shared.stores.push import ApplyResult

logger = logging.getLogger(__name__)


def refused(code: StatusCodeValue, info: str) -> CommandReply:
    return CommandReply(ok=False, code=code, info=info)


def outcome(result: ApplyResult, action: str) -> CommandReply:
    if not result.ok:
        return refused(StatusCodeValue.DATA_TRANSACTION_ERROR, result.conflict_info(action))
    return CommandReply(ok=True, changed=len(result.changed), deleted=len(result.deleted))


# ---- CPO role: the node's own EVSEs and prices ------------------------------------------------


def _own_operator(deps: EvsePushDeps, operator_id: str) -> CommandReply | None:
    if normalize_id(operator_id) not in {normalize_id(o) for o in deps.settings.operator_ids}:
        return refused(
            StatusCodeValue.UNAUTHORIZED_ACCESS,
            f"OperatorID {operator_id} is not one of this node's operators {deps.settings.operator_ids}",
        )
    return None


def _foreign_evses(operator_id: str, evse_ids: list[str]) -> CommandReply | None:
    foreign = [e for e in evse_ids if not evse_belongs_to(e, operator_id)]
    if foreign:
        return refused(
            StatusCodeValue.INCONSISTENT_EVSE_ID, f"EvseIDs not of operator {operator_id}: {', '.join(foreign[:10])}"
        )
    return None


async def set_own_status(
    deps: EvsePushDeps, envelope: Envelope[EvseStatusSet], redelivered: bool, correlation_id: str | None
) -> list[StatusChange]:
    """CPO role: store the node's own statuses, queue each change for every push peer, publish."""
    by_operator: dict[str, list[tuple[str, str]]] = {}
    for record in envelope.data.records:
        operator_id = deps.settings.own_operator_of(record.evse_id)
        if operator_id is None:
            raise PoisonMessage(f"EvseID {record.evse_id} is not of this node's operators {deps.settings.operator_ids}")
        by_operator.setdefault(operator_id, []).append((record.evse_id, record.evse_status.value))

    operation = PushOperation.PUSH_EVSE_STATUS
    peers = await deps.delivery.push_peers(operation)
    pending_keys = [deps.delivery_store.pending_key(p.key, operation) for p in peers]
    changed_at = envelope.occurred_at.astimezone(UTC)
    changes: list[StatusChange] = []
    for operator_id, records in by_operator.items():
        # One Lua script stores and queues, so a change is never stored without being queued.
        applied = await deps.own_status.set_statuses(operator_id, records, changed_at, pending_keys)
        if redelivered and not applied:
            # The first attempt stored these but may not have published: publish again.
            applied = [StatusChange(evse, operator_id, status, None) for evse, status in records]
        changes += applied
    if changes:
        deps.delivery.wake(operation)
        await deps.delivery_store.notify(operation)
    # One event per change, published concurrently: the broker confirms them in one go.
    await asyncio.gather(
        *(
            deps.bus.emit_event(
                EventType.EVSE_STATUS_CHANGED,
                EvseStatusChanged(
                    evse_id=change.evse_id,
                    operator_id=change.operator_id,
                    status=change.status,
                    previous_status=change.previous_status,
                    changed_at=changed_at,
                ),
                correlation_id=correlation_id,
            )
            for change in changes
        )
    )
    return changes


async def set_own_data(deps: EvsePushDeps, envelope: Envelope[EvseDataSet], correlation_id: str | None) -> CommandReply:
    command = envelope.data
    operator = command.operator_evse_data
    action = command.action_type.value
    evse_ids = [r.evse_id for r in operator.evse_data_record]
    if problem := _own_operator(deps, operator.operator_id) or _foreign_evses(operator.operator_id, evse_ids):
        return problem
    at = envelope.occurred_at.astimezone(UTC)
    result = await deps.own_data.apply(
        action, operator.operator_id, operator.operator_name, operator.evse_data_record, at
    )
    if not result.ok:
        return outcome(result, action)
    await deps.delivery.enqueue(PushOperation.PUSH_EVSE_DATA, result.changed + result.deleted, at)
    await deps.bus.emit_event(
        EventType.EVSE_DATA_CHANGED,
        EvseDataChanged(
            operator_id=operator.operator_id,
            action_type=command.action_type,
            evse_ids=result.changed,
            deleted_evse_ids=result.deleted,
            changed_at=at,
        ),
        correlation_id=correlation_id,
    )
    return outcome(result, action)


async def set_own_pricing_products(
    deps: EvsePushDeps, envelope: Envelope[PricingProductsSet], correlation_id: str | None
) -> CommandReply:
    command = envelope.data
    data = command.pricing_product_data
    action = command.action_type.value
    if problem := _own_operator(deps, data.operator_id):
        return problem
    at = envelope.occurred_at.astimezone(UTC)
    result = await deps.own_products.apply(action, data, at)
    if not result.ok:
        return outcome(result, action)
    if result.document_changed:  # a new default price alone changes the document too
        await deps.delivery.enqueue(
            PushOperation.PUSH_PRICING_PRODUCT_DATA, [pricing_product_key(data.operator_id, data.provider_id)], at
        )
    await deps.bus.emit_event(
        EventType.PRICING_PRODUCTS_CHANGED,
        PricingProductsChanged(
            operator_id=data.operator_id,
            provider_id=data.provider_id,
            action_type=command.action_type,
            product_ids=result.changed,
            deleted_product_ids=result.deleted,
            changed_at=at,
        ),
        correlation_id=correlation_id,
    )
    return outcome(result, action)


async def set_own_evse_pricing(
    deps: EvsePushDeps, envelope: Envelope[EvsePricingSet], correlation_id: str | None
) -> CommandReply:
    command = envelope.data
    action = command.action_type.value
    evse_ids = [r.evse_id for r in command.evse_pricing]
    if problem := _own_operator(deps, command.operator_id) or _foreign_evses(command.operator_id, evse_ids):
        return problem
    at = envelope.occurred_at.astimezone(UTC)
    result = await deps.own_evse_pricing.apply(action, command.operator_id, command.evse_pricing, at)
    if not result.ok:
        return outcome(result, action)
    await deps.delivery.enqueue(PushOperation.PUSH_EVSE_PRICING, result.changed + result.deleted, at)
    changed = set(result.changed)
    await deps.bus.emit_event(
        EventType.EVSE_PRICING_CHANGED,
        EvsePricingChanged(
            operator_id=command.operator_id,
            action_type=command.action_type,
            records=[r for r in command.evse_pricing if evse_pricing_key(r.evse_id, r.provider_id) in changed],
            deleted=result.deleted,
            changed_at=at,
        ),
        correlation_id=correlation_id,
    )
    return outcome(result, action)


# ---- EMP role: what CPO peers push ------------------------------------------------------------


async def ingest_status(
    deps: EvsePushDeps, envelope: Envelope[EvseStatusIngest], correlation_id: str | None
) -> CommandReply:
    """A CPO peer's PushEvseStatus, already validated and ID-checked by the gateway."""
    request = envelope.data.request
    operator = request.operator_evse_status
    action = request.action_type.value
    records = [(r.evse_id, r.evse_status.value) for r in operator.evse_status_record]
    result = await deps.roaming_status.apply(action, operator.operator_id, records, envelope.data.received_at)
    if result.ok:
        await deps.bus.emit_event(
            EventType.EVSE_STATUS_RECEIVED,
            EvseStatusReceived(
                peer_id=envelope.data.peer_id,
                operator_id=operator.operator_id,
                action_type=request.action_type,
                records=operator.evse_status_record,
                received_at=envelope.data.received_at,
            ),
            correlation_id=correlation_id,
        )
    return outcome(result, action)


async def ingest_data(
    deps: EvsePushDeps, envelope: Envelope[EvseDataIngest], correlation_id: str | None
) -> CommandReply:
    request = envelope.data.request
    operator = request.operator_evse_data
    action = request.action_type.value
    result = await deps.roaming_data.apply(
        action, operator.operator_id, operator.operator_name, operator.evse_data_record, envelope.data.received_at
    )
    if result.ok:
        await deps.bus.emit_event(
            EventType.EVSE_DATA_RECEIVED,
            EvseDataReceived(
                peer_id=envelope.data.peer_id,
                operator_id=operator.operator_id,
                action_type=request.action_type,
                evse_ids=result.changed,
                deleted_evse_ids=result.deleted,
                received_at=envelope.data.received_at,
            ),
            correlation_id=correlation_id,
        )
    return outcome(result, action)


async def ingest_pricing_products(
    deps: EvsePushDeps, envelope: Envelope[PricingProductsIngest], correlation_id: str | None
) -> CommandReply:
    request = envelope.data.request
    data = request.pricing_product_data
    action = request.action_type.value
    result = await deps.roaming_products.apply(action, data, envelope.data.received_at)
    if result.ok:
        await deps.bus.emit_event(
            EventType.PRICING_PRODUCTS_RECEIVED,
            PricingProductsChanged(
                operator_id=data.operator_id,
                provider_id=data.provider_id,
                action_type=request.action_type,
                product_ids=result.changed,
                deleted_product_ids=result.deleted,
                changed_at=envelope.data.received_at,
                peer_id=envelope.data.peer_id,
            ),
            correlation_id=correlation_id,
        )
    return outcome(result, action)


async def ingest_evse_pricing(
    deps: EvsePushDeps, envelope: Envelope[EvsePricingIngest], correlation_id: str | None
) -> CommandReply:
    request = envelope.data.request
    action = request.action_type.value
    result = await deps.roaming_evse_pricing.apply(
        action, envelope.data.operator_id, request.evse_pricing, envelope.data.received_at
    )
    if result.ok:
        changed = set(result.changed)
        await deps.bus.emit_event(
            EventType.EVSE_PRICING_RECEIVED,
            EvsePricingChanged(
                operator_id=envelope.data.operator_id,
                action_type=request.action_type,
                records=[r for r in request.evse_pricing if evse_pricing_key(r.evse_id, r.provider_id) in changed],
                deleted=result.deleted,
                changed_at=envelope.data.received_at,
                peer_id=envelope.data.peer_id,
            ),
            correlation_id=correlation_id,
        )
    return outcome(result, action)


# ---- wiring -----------------------------------------------------------------------------------


def register_handlers(deps: EvsePushDeps) -> None:
    broker, topology = deps.broker, deps.topology

    async def answer_once(
        envelope: Envelope[Any], message: RabbitMessage, handle: Callable[[], Awaitable[CommandReply]]
    ) -> RabbitResponse | None:
        return await replies.answer_once(deps.redis, deps.keys, envelope, message, handle)

    def subscriber(command: CommandType) -> Any:
        return replies.command_subscriber(broker, topology, command)

    @subscriber(CommandType.CPO_EVSE_STATUS_SET)
    async def on_status_set(envelope: Envelope[EvseStatusSet], message: RabbitMessage) -> None:
        """Set the status of the node's own EVSEs; fans out to every EMP peer that takes pushes."""
        await set_own_status(deps, envelope, delivered_before(message), message.correlation_id)

    @subscriber(CommandType.CPO_EVSE_DATA_SET)
    async def on_data_set(envelope: Envelope[EvseDataSet], message: RabbitMessage) -> RabbitResponse | None:
        """Change the node's own EVSE data (ActionType semantics); replies with the outcome."""
        return await answer_once(envelope, message, lambda: set_own_data(deps, envelope, message.correlation_id))

    @subscriber(CommandType.CPO_PRICING_PRODUCTS_SET)
    async def on_products_set(envelope: Envelope[PricingProductsSet], message: RabbitMessage) -> RabbitResponse | None:
        """Change the node's own pricing products of one (operator, provider); replies with the outcome."""
        return await answer_once(
            envelope, message, lambda: set_own_pricing_products(deps, envelope, message.correlation_id)
        )

    @subscriber(CommandType.CPO_EVSE_PRICING_SET)
    async def on_evse_pricing_set(envelope: Envelope[EvsePricingSet], message: RabbitMessage) -> RabbitResponse | None:
        """Change the node's own EVSE → product assignments; replies with the outcome."""
        return await answer_once(
            envelope, message, lambda: set_own_evse_pricing(deps, envelope, message.correlation_id)
        )

    @subscriber(CommandType.EMP_EVSE_STATUS_INGEST)
    async def on_status_ingest(envelope: Envelope[EvseStatusIngest], message: RabbitMessage) -> RabbitResponse | None:
        """Store a PushEvseStatus from a CPO peer; the reply is the peer's OICP answer."""
        return await answer_once(envelope, message, lambda: ingest_status(deps, envelope, message.correlation_id))

    @subscriber(CommandType.EMP_EVSE_DATA_INGEST)
    async def on_data_ingest(envelope: Envelope[EvseDataIngest], message: RabbitMessage) -> RabbitResponse | None:
        """Store a PushEvseData from a CPO peer; the reply is the peer's OICP answer."""
        return await answer_once(envelope, message, lambda: ingest_data(deps, envelope, message.correlation_id))

    @subscriber(CommandType.EMP_PRICING_PRODUCTS_INGEST)
    async def on_products_ingest(
        envelope: Envelope[PricingProductsIngest], message: RabbitMessage
    ) -> RabbitResponse | None:
        """Store a PushPricingProductData from a CPO peer; the reply is the peer's OICP answer."""
        return await answer_once(
            envelope, message, lambda: ingest_pricing_products(deps, envelope, message.correlation_id)
        )

    @subscriber(CommandType.EMP_EVSE_PRICING_INGEST)
    async def on_evse_pricing_ingest(
        envelope: Envelope[EvsePricingIngest], message: RabbitMessage
    ) -> RabbitResponse | None:
        """Store a PushEVSEPricing from a CPO peer; the reply is the peer's OICP answer."""
        return await answer_once(envelope, message, lambda: ingest_evse_pricing(deps, envelope, message.correlation_id))
