"""Handlers of the evse_push service: functions of (message, dependencies), wired to their queues.

Each handler makes its effect durable in Redis before the message is acknowledged; if that fails
the message is requeued (up to the queue's delivery limit, then dead-lettered). Events are
published after the effect; on a redelivery they are published again (at least once), because the
first attempt may have stored the change and then failed to publish.
"""

from __future__ import annotations

from datetime import UTC, datetime

from faststream.middlewares import AckPolicy
from faststream.rabbit.annotations import RabbitMessage

from services.evse_push.app import EvsePushDeps
from shared.bus.envelope import Envelope
from shared.bus.messages import (
    CommandType,
    EventType,
    EvseDataIngest,
    EvseDataReceived,
    EvseStatusChanged,
    EvseStatusIngest,
    EvseStatusReceived,
    EvseStatusSet,
)
from shared.bus.middleware import PoisonMessage
from shared.settings import PushOperation, Role
from shared.stores.evse_status import StatusChange


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

    peers = [p for p in await deps.registry.enabled(Role.EMP) if PushOperation.PUSH_EVSE_STATUS in p.push]
    pending_keys = [deps.delivery_store.pending_key(p.key, PushOperation.PUSH_EVSE_STATUS) for p in peers]
    changed_at = envelope.occurred_at.astimezone(UTC)
    changes: list[StatusChange] = []
    for operator_id, records in by_operator.items():
        applied = await deps.own_status.set_statuses(operator_id, records, changed_at, pending_keys)
        if redelivered and not applied:
            # The first attempt stored these but may not have published: publish again.
            applied = [StatusChange(evse, operator_id, status, None) for evse, status in records]
        changes += applied
    if deps.delivery is not None and changes:
        deps.delivery.wake()
    for change in changes:
        await deps.bus.emit_event(
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
    return changes


async def ingest_status(deps: EvsePushDeps, envelope: Envelope[EvseStatusIngest], correlation_id: str | None) -> None:
    """EMP role: a CPO peer's PushEvseStatus, already validated and ID-checked by the gateway."""
    request = envelope.data.request
    operator = request.operator_evse_status
    records = [(r.evse_id, r.evse_status.value) for r in operator.evse_status_record]
    received_at = envelope.data.received_at
    action = request.action_type.value
    if action == "fullLoad":
        await deps.roaming_status.replace_operator(operator.operator_id, records, received_at)
    elif action == "delete":
        await deps.roaming_status.delete([evse for evse, _ in records])
    else:
        # insert/update as upsert; Hubject's all-or-nothing insert/update conflicts (009) need a
        # synchronous answer and arrive with the complete push semantics (issue #3).
        await deps.roaming_status.set_statuses(operator.operator_id, records, received_at)
    await deps.bus.emit_event(
        EventType.EVSE_STATUS_RECEIVED,
        EvseStatusReceived(
            peer_id=envelope.data.peer_id,
            operator_id=operator.operator_id,
            action_type=request.action_type,
            records=operator.evse_status_record,
            received_at=received_at,
        ),
        correlation_id=correlation_id,
    )


async def ingest_data(deps: EvsePushDeps, envelope: Envelope[EvseDataIngest], correlation_id: str | None) -> None:
    request = envelope.data.request
    operator = request.operator_evse_data
    records = {r.evse_id: r.to_oicp() for r in operator.evse_data_record}
    await deps.roaming_data.apply(operator.operator_id, request.action_type.value, records)
    await deps.bus.emit_event(
        EventType.EVSE_DATA_RECEIVED,
        EvseDataReceived(
            peer_id=envelope.data.peer_id,
            operator_id=operator.operator_id,
            action_type=request.action_type,
            evse_ids=list(records),
            received_at=datetime.now(UTC),
        ),
        correlation_id=correlation_id,
    )


def register_handlers(deps: EvsePushDeps) -> None:
    broker, topology = deps.broker, deps.topology
    # Transient failures (Redis down) requeue the message; the queue's delivery limit bounds retries.
    ack = AckPolicy.NACK_ON_ERROR

    @broker.subscriber(
        topology.command_queue(CommandType.CPO_EVSE_STATUS_SET),
        topology.commands,
        ack_policy=ack,
        title="command cpo.evse.status.set",
    )
    async def on_status_set(envelope: Envelope[EvseStatusSet], message: RabbitMessage) -> None:
        """Set the status of the node's own EVSEs; fans out to every EMP peer that takes pushes."""
        await set_own_status(deps, envelope, bool(message.raw_message.redelivered), message.correlation_id)

    @broker.subscriber(
        topology.command_queue(CommandType.EMP_EVSE_STATUS_INGEST),
        topology.commands,
        ack_policy=ack,
        title="command emp.evse.status.ingest",
    )
    async def on_status_ingest(envelope: Envelope[EvseStatusIngest], message: RabbitMessage) -> None:
        """Store a PushEvseStatus accepted from a CPO peer and publish evse.status.received."""
        await ingest_status(deps, envelope, message.correlation_id)

    @broker.subscriber(
        topology.command_queue(CommandType.EMP_EVSE_DATA_INGEST),
        topology.commands,
        ack_policy=ack,
        title="command emp.evse.data.ingest",
    )
    async def on_data_ingest(envelope: Envelope[EvseDataIngest], message: RabbitMessage) -> None:
        """Store a PushEvseData accepted from a CPO peer and publish evse.data.received."""
        await ingest_data(deps, envelope, message.correlation_id)
