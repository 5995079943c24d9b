"""Typed payloads of the commands and events on the bus.

Routing keys are the message types. Commands go to ``oicp.commands`` and are consumed by exactly one
service; events go to ``oicp.events`` for anyone (internal systems bind their own queues).
OICP structures inside a payload keep OICP's field names (``EvseID``, ``EvseStatus``), so an
internal system that knows OICP needs no second vocabulary.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.oicp import ActionType, EvseStatusRecord, PushEvseDataRequest, PushEvseStatusRequest


class CommandType(StrEnum):
    # CPO role: the node's own EVSEs, from the charge point backend (internal API or AMQP)
    CPO_EVSE_STATUS_SET = "cpo.evse.status.set"
    # EMP role: OICP pushes accepted by the gateway from a CPO peer
    EMP_EVSE_STATUS_INGEST = "emp.evse.status.ingest"
    EMP_EVSE_DATA_INGEST = "emp.evse.data.ingest"


class EventType(StrEnum):
    EVSE_STATUS_CHANGED = "evse.status.changed"
    EVSE_STATUS_RECEIVED = "evse.status.received"
    EVSE_DATA_RECEIVED = "evse.data.received"
    PEER_DELIVERY_FAILED = "peer.delivery.failed"
    COMMAND_REJECTED = "command.rejected"


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ---- commands -------------------------------------------------------------------------------


class EvseStatusSet(Payload):
    """Set the current status of some of the node's own EVSEs (CPO role)."""

    records: list[EvseStatusRecord] = Field(min_length=1, max_length=10_000)


class EvseStatusIngest(Payload):
    """A PushEvseStatus the gateway accepted from a CPO peer (EMP role)."""

    peer_id: str
    received_at: AwareDatetime
    request: PushEvseStatusRequest


class EvseDataIngest(Payload):
    """A PushEvseData the gateway accepted from a CPO peer (EMP role)."""

    peer_id: str
    received_at: AwareDatetime
    request: PushEvseDataRequest


# ---- events ---------------------------------------------------------------------------------


class EvseStatusChanged(Payload):
    """One of the node's own EVSEs changed status (CPO role)."""

    evse_id: str
    operator_id: str
    status: str
    previous_status: str | None = None
    changed_at: datetime


class EvseStatusReceived(Payload):
    """A CPO peer pushed EVSE statuses and they are stored (EMP role)."""

    peer_id: str
    operator_id: str
    action_type: ActionType
    records: list[EvseStatusRecord]
    received_at: datetime


class EvseDataReceived(Payload):
    peer_id: str
    operator_id: str
    action_type: ActionType
    evse_ids: list[str]
    received_at: datetime


class PeerDelivery(Payload):
    """Outcome of one outbound OICP call of a delivery lane."""

    peer_id: str
    operation: str
    records: int
    error: str | None = None
    attempt: int = 1


class CommandRejected(Payload):
    """A command could not be processed and went to the dead-letter queue."""

    command_type: str
    reason: str
    command_id: str | None = None


COMMAND_PAYLOADS: dict[CommandType, type[Payload]] = {
    CommandType.CPO_EVSE_STATUS_SET: EvseStatusSet,
    CommandType.EMP_EVSE_STATUS_INGEST: EvseStatusIngest,
    CommandType.EMP_EVSE_DATA_INGEST: EvseDataIngest,
}

# Commands an internal system may send (over AMQP or POST /commands/{type} of the internal API);
# the others are issued by the gateway only.
INTERNAL_COMMANDS: frozenset[CommandType] = frozenset({CommandType.CPO_EVSE_STATUS_SET})

EVENT_PAYLOADS: dict[EventType, type[Payload]] = {
    EventType.EVSE_STATUS_CHANGED: EvseStatusChanged,
    EventType.EVSE_STATUS_RECEIVED: EvseStatusReceived,
    EventType.EVSE_DATA_RECEIVED: EvseDataReceived,
    EventType.PEER_DELIVERY_FAILED: PeerDelivery,
    EventType.COMMAND_REJECTED: CommandRejected,
}
