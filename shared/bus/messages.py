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

from shared.oicp import (
    ActionType,
    EvsePricing,
    EvseStatusRecord,
    OperatorId,
    PushEvseDataRequest,
    PushEvsePricingRequest,
    PushEvseStatusRequest,
    PushPricingProductDataRequest,
    StatusCodeValue,
)


class CommandType(StrEnum):
    # CPO role: the node's own EVSEs, from the charge point backend (internal API or AMQP)
    CPO_EVSE_STATUS_SET = "cpo.evse.status.set"
    CPO_EVSE_DATA_SET = "cpo.evse.data.set"
    CPO_PRICING_PRODUCTS_SET = "cpo.pricing.products.set"
    CPO_EVSE_PRICING_SET = "cpo.evse.pricing.set"
    # EMP role: OICP pushes from a CPO peer, sent by the gateway as requests (it answers the peer
    # with the worker's reply: 000 once stored, 009 on an insert/update conflict)
    EMP_EVSE_STATUS_INGEST = "emp.evse.status.ingest"
    EMP_EVSE_DATA_INGEST = "emp.evse.data.ingest"
    EMP_PRICING_PRODUCTS_INGEST = "emp.pricing.products.ingest"
    EMP_EVSE_PRICING_INGEST = "emp.evse.pricing.ingest"


class InternalRequest(StrEnum):
    """Requests the node sends to its internal systems on the ``oicp.requests`` exchange, by
    request/reply (``reply_to``, a deadline in the ``x-deadline`` header and the AMQP expiration).
    The system binds its own queue to the routing key; if none is bound, the node applies its
    fallback at once. Body: the envelope of the request; reply: a JSON object (see each payload)."""

    CPO_BACKEND_REMOTE_START = "cpo.backend.remote_start"
    CPO_BACKEND_REMOTE_STOP = "cpo.backend.remote_stop"
    CPO_BACKEND_RESERVATION_START = "cpo.backend.reservation_start"
    CPO_BACKEND_RESERVATION_STOP = "cpo.backend.reservation_stop"
    EMP_DECIDER_AUTHORIZE_START = "emp.decider.authorize_start"


class BackendReply(BaseModel):
    """The charge point backend's answer to a remote start/stop or reservation request: accepted, or
    refused with the OICP code to pass on (501, 510, 601, 602, 603, 700, ...)."""

    model_config = ConfigDict(extra="ignore")

    accepted: bool
    code: StatusCodeValue = StatusCodeValue.SUCCESS
    info: str | None = None


class EventType(StrEnum):
    EVSE_STATUS_CHANGED = "evse.status.changed"
    EVSE_STATUS_RECEIVED = "evse.status.received"
    EVSE_DATA_RECEIVED = "evse.data.received"
    EVSE_DATA_CHANGED = "evse.data.changed"
    PRICING_PRODUCTS_CHANGED = "pricing.products.changed"
    PRICING_PRODUCTS_RECEIVED = "pricing.products.received"
    EVSE_PRICING_CHANGED = "evse.pricing.changed"
    EVSE_PRICING_RECEIVED = "evse.pricing.received"
    PEER_DELIVERY_FAILED = "peer.delivery.failed"
    COMMAND_REJECTED = "command.rejected"


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ---- commands -------------------------------------------------------------------------------


class EvseStatusSet(Payload):
    """Set the current status of some of the node's own EVSEs (CPO role)."""

    records: list[EvseStatusRecord] = Field(min_length=1, max_length=10_000)


class EvseDataSet(PushEvseDataRequest):
    """Change the node's own EVSE data (CPO role), in PushEvseData's vocabulary: ActionType
    (insert/update/delete/fullLoad with DIGEST §9.1 semantics) and OperatorEvseData."""


class PricingProductsSet(PushPricingProductDataRequest):
    """Change the node's own pricing products for one (OperatorID, ProviderID or "*")."""


class EvsePricingSet(PushEvsePricingRequest):
    """Change the node's own EVSE → product assignments of one operator."""

    operator_id: OperatorId = Field(alias="OperatorID")


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


class PricingProductsIngest(Payload):
    """A PushPricingProductData from a CPO peer (EMP role)."""

    peer_id: str
    received_at: AwareDatetime
    request: PushPricingProductDataRequest


class EvsePricingIngest(Payload):
    """A PushEVSEPricing from a CPO peer (EMP role); the OperatorID comes from the path."""

    peer_id: str
    operator_id: str
    received_at: AwareDatetime
    request: PushEvsePricingRequest


class CommandReply(Payload):
    """The answer of a worker to a command sent as a request (``reply_to`` set): the OICP
    StatusCode it maps to, and what changed."""

    ok: bool
    code: StatusCodeValue = StatusCodeValue.SUCCESS
    info: str | None = None
    changed: int = 0
    deleted: int = 0


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
    """A CPO peer pushed EVSE data and it is stored (EMP role)."""

    peer_id: str
    operator_id: str
    action_type: ActionType
    evse_ids: list[str]
    deleted_evse_ids: list[str] = Field(default_factory=list)
    received_at: datetime


class EvseDataChanged(Payload):
    """The node's own EVSE data changed (CPO role); the records are in the read model."""

    operator_id: str
    action_type: ActionType
    evse_ids: list[str]
    deleted_evse_ids: list[str] = Field(default_factory=list)
    changed_at: datetime


class PricingProductsChanged(Payload):
    """Pricing products changed: the node's own (CPO role, ``peer_id`` None) or a peer's (EMP role)."""

    operator_id: str
    provider_id: str
    action_type: ActionType
    product_ids: list[str]
    deleted_product_ids: list[str] = Field(default_factory=list)
    changed_at: datetime
    peer_id: str | None = None


class EvsePricingChanged(Payload):
    """EVSE → product assignments changed: the node's own (``peer_id`` None) or a peer's."""

    operator_id: str
    action_type: ActionType
    records: list[EvsePricing]
    deleted: list[str] = Field(default_factory=list, description="EvseID|ProviderID keys removed")
    changed_at: datetime
    peer_id: str | None = None


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
    CommandType.CPO_EVSE_DATA_SET: EvseDataSet,
    CommandType.CPO_PRICING_PRODUCTS_SET: PricingProductsSet,
    CommandType.CPO_EVSE_PRICING_SET: EvsePricingSet,
    CommandType.EMP_PRICING_PRODUCTS_INGEST: PricingProductsIngest,
    CommandType.EMP_EVSE_PRICING_INGEST: EvsePricingIngest,
}

# Commands an internal system may send (over AMQP or POST /commands/{type} of the internal API);
# the others are issued by the gateway only.
INTERNAL_COMMANDS: frozenset[CommandType] = frozenset(
    {
        CommandType.CPO_EVSE_STATUS_SET,
        CommandType.CPO_EVSE_DATA_SET,
        CommandType.CPO_PRICING_PRODUCTS_SET,
        CommandType.CPO_EVSE_PRICING_SET,
    }
)

EVENT_PAYLOADS: dict[EventType, type[Payload]] = {
    EventType.EVSE_STATUS_CHANGED: EvseStatusChanged,
    EventType.EVSE_STATUS_RECEIVED: EvseStatusReceived,
    EventType.EVSE_DATA_RECEIVED: EvseDataReceived,
    EventType.EVSE_DATA_CHANGED: EvseDataChanged,
    EventType.PRICING_PRODUCTS_CHANGED: PricingProductsChanged,
    EventType.PRICING_PRODUCTS_RECEIVED: PricingProductsChanged,
    EventType.EVSE_PRICING_CHANGED: EvsePricingChanged,
    EventType.EVSE_PRICING_RECEIVED: EvsePricingChanged,
    EventType.PEER_DELIVERY_FAILED: PeerDelivery,
    EventType.COMMAND_REJECTED: CommandRejected,
}
