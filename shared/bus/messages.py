"""Typed payloads of the commands and events on the bus.

Routing keys are the message types. Commands go to ``oicp.commands`` and are consumed by exactly one
service; events go to ``oicp.events`` for anyone (internal systems bind their own queues).
OICP structures inside a payload keep OICP's field names (``EvseID``, ``EvseStatus``), so an
internal system that knows OICP needs no second vocabulary.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.oicp import (
    ActionType,
    AuthorizeRemoteReservationStartRequest,
    AuthorizeRemoteReservationStopRequest,
    AuthorizeRemoteStartRequest,
    AuthorizeRemoteStopRequest,
    AuthorizeStartRequest,
    AuthorizeStopRequest,
    ChargeDetailRecord,
    EvsePricing,
    EvseStatusRecord,
    Identification,
    OperatorId,
    PushAuthenticationDataRequest,
    PushEvseDataRequest,
    PushEvsePricingRequest,
    PushEvseStatusRequest,
    PushPricingProductDataRequest,
    StatusCodeValue,
)
from shared.oicp.messages import (
    ChargingNotificationEndRequest,
    ChargingNotificationErrorRequest,
    ChargingNotificationProgressRequest,
    ChargingNotificationStartRequest,
)
from shared.oicp.status import SessionId
from shared.oicp.types import EvseId, ProviderId


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
    # EMP role, authorization: the token store (internal) and AuthorizeStart/Stop from CPO peers (gateway)
    EMP_TOKEN_SET = "emp.token.set"
    EMP_AUTHORIZE_START = "emp.authorize.start"
    EMP_AUTHORIZE_STOP = "emp.authorize.stop"
    # CPO role, authorization: asked by the charge point backend (internal, with reply); authentication
    # data pushed by EMP peers (gateway)
    CPO_AUTHORIZE_START = "cpo.authorize.start"
    CPO_AUTHORIZE_STOP = "cpo.authorize.stop"
    CPO_AUTH_DATA_INGEST = "cpo.authdata.ingest"
    # EMP role, sessions: remote start/stop and reservations sent to CPO peers (internal);
    # charging notifications from CPO peers (gateway)
    EMP_REMOTE_START = "emp.remote_start.request"
    EMP_REMOTE_STOP = "emp.remote_stop.request"
    EMP_RESERVATION_START = "emp.reservation.start.request"
    EMP_RESERVATION_STOP = "emp.reservation.stop.request"
    EMP_NOTIFICATION_INGEST = "emp.notification.ingest"
    # CPO role, sessions: remote start/stop and reservations from EMP peers (gateway); charging
    # notifications from the charge point backend (internal), sent to the session's EMP
    CPO_REMOTE_START_INGEST = "cpo.remote_start.ingest"
    CPO_REMOTE_STOP_INGEST = "cpo.remote_stop.ingest"
    CPO_RESERVATION_START_INGEST = "cpo.reservation.start.ingest"
    CPO_RESERVATION_STOP_INGEST = "cpo.reservation.stop.ingest"
    CPO_SESSION_NOTIFY = "cpo.session.notify"
    # CPO role, CDRs: the charge point backend submits them (outbox, delivered until acknowledged);
    # parked ones are replayed on command
    CPO_CDR_SUBMIT = "cpo.cdr.submit"
    CPO_CDR_REPLAY = "cpo.cdr.replay"
    # EMP role, CDRs: ChargeDetailRecord from CPO peers (gateway) into the inbox; fetching what was
    # missed with GetChargeDetailRecords (internal, also on a schedule)
    EMP_CDR_INGEST = "emp.cdr.ingest"
    EMP_CDR_FETCH = "emp.cdr.fetch"


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

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    accepted: bool
    code: StatusCodeValue = StatusCodeValue.SUCCESS
    info: str | None = None
    cpo_partner_session_id: str | None = Field(
        None, alias="CPOPartnerSessionID", max_length=250, description="the backend's own key of the session"
    )


class DeciderReply(BaseModel):
    """The EMP's authorization decider's answer to ``emp.decider.authorize_start``: authorized or not,
    with the OICP code for a refusal (101-200, 210) and optionally the media allowed to stop."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    authorized: bool
    code: StatusCodeValue | None = None
    info: str | None = None
    authorization_stop_identifications: list[Identification] | None = Field(
        None, alias="AuthorizationStopIdentifications"
    )


class EventType(StrEnum):
    # authorization
    TOKENS_CHANGED = "tokens.changed"
    AUTHORIZATION_DECIDED = "authorization.decided"
    AUTH_DATA_RECEIVED = "authdata.received"
    # sessions (both roles; the payload's ``session.role`` says which)
    SESSION_REQUESTED = "session.requested"
    SESSION_AUTHORIZED = "session.authorized"
    SESSION_STARTED = "session.started"
    SESSION_REFUSED = "session.refused"
    SESSION_FAILED = "session.failed"
    SESSION_STOPPED = "session.stopped"
    SESSION_RESERVED = "session.reserved"
    SESSION_RESERVATION_ENDED = "session.reservation.ended"
    SESSION_EXPIRED = "session.expired"
    SESSION_NOTIFICATION = "session.notification"
    SESSION_CDR_MISSING = "session.cdr.missing"
    # charge detail records
    CDR_SUBMITTED = "cdr.submitted"
    CDR_DELIVERED = "cdr.delivered"
    CDR_PARKED = "cdr.parked"
    CDR_RECEIVED = "cdr.received"
    CDR_SESSION_UNKNOWN = "cdr.session.unknown"

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


#: A ChargingNotification body, by its ``Type`` (Start, Progress, End, Error).
ChargingNotification = Annotated[
    ChargingNotificationStartRequest
    | ChargingNotificationProgressRequest
    | ChargingNotificationEndRequest
    | ChargingNotificationErrorRequest,
    Field(discriminator="type"),
]


# ---- authorization commands -------------------------------------------------------------------


class Token(Payload):
    """One authentication medium of the EMP's customers (EMP role): an OICP Identification - an RFID
    UID with its Mifare family type, an EvcoID with PIN or hashed PIN (QR code), Plug&Charge or remote
    identification - and what it may do. Its key is the UID or the EvcoID, upper-cased."""

    identification: Identification = Field(alias="Identification")
    provider_id: ProviderId | None = Field(None, description="the node's ProviderID it belongs to (default: first)")
    evco_id: str | None = Field(None, description="the contract (EvcoID) an RFID card belongs to")
    blocked: bool = Field(False, description="refused: 200 EvcoID locked (102 invalid UID for a bare card)")
    valid_until: AwareDatetime | None = Field(None, description="refused afterwards (as blocked)")
    offline: bool = Field(True, description="included in PushAuthenticationData to CPO peers that take it")
    authorization_stop_identifications: list[Identification] | None = Field(
        None, alias="AuthorizationStopIdentifications", description="media allowed to stop its sessions"
    )


class TokensSet(Payload):
    """Change the EMP's token store with ActionType semantics (insert refuses existing keys, update
    refuses missing ones, delete, fullLoad replaces everything)."""

    action_type: ActionType
    tokens: list[Token] = Field(max_length=100_000)


class AuthorizeStartIngest(Payload):
    """An AuthorizeStart from a CPO peer (EMP role); the reply's ``answer`` is the AuthorizationStart."""

    peer_id: str
    received_at: AwareDatetime
    request: AuthorizeStartRequest


class AuthorizeStopIngest(Payload):
    """An AuthorizeStop from a CPO peer (EMP role); the reply's ``answer`` is the AuthorizationStop."""

    peer_id: str
    received_at: AwareDatetime
    request: AuthorizeStopRequest


class AuthDataIngest(Payload):
    """A PushAuthenticationData from an EMP peer (CPO role): offline authorization data."""

    peer_id: str
    received_at: AwareDatetime
    request: PushAuthenticationDataRequest


class CpoAuthorizeStart(AuthorizeStartRequest):
    """The charge point backend asks whether a medium may charge (CPO role), in AuthorizeStart's
    vocabulary; OperatorID defaults to the EVSE's (or the node's first). The reply's ``answer`` is the
    AuthorizationStart (SessionID issued by the authorizing side)."""

    operator_id: OperatorId | None = Field(None, alias="OperatorID")  # type: ignore[assignment]


class CpoAuthorizeStop(AuthorizeStopRequest):
    """The charge point backend stops an authorized session (CPO role): sent to the EMP that
    authorized it. The reply's ``answer`` is the AuthorizationStop."""

    operator_id: OperatorId | None = Field(None, alias="OperatorID")  # type: ignore[assignment]


# ---- session commands -------------------------------------------------------------------------


class RemoteStart(AuthorizeRemoteStartRequest):
    """Start charging remotely (EMP role), in AuthorizeRemoteStart's vocabulary. ProviderID defaults
    to the node's first. A SessionID given by the caller makes the command idempotent: a repeat
    returns the recorded outcome and is never sent twice; without one the node issues it."""

    provider_id: ProviderId | None = Field(None, alias="ProviderID")  # type: ignore[assignment]


class RemoteStop(AuthorizeRemoteStopRequest):
    """Stop a remotely started session (EMP role). EvseID and ProviderID default to the session's."""

    provider_id: ProviderId | None = Field(None, alias="ProviderID")  # type: ignore[assignment]
    evse_id: EvseId | None = Field(None, alias="EvseID")  # type: ignore[assignment]


class ReservationStart(AuthorizeRemoteReservationStartRequest):
    """Reserve an EVSE (EMP role), in AuthorizeRemoteReservationStart's vocabulary (Duration 1-99 min)."""

    provider_id: ProviderId | None = Field(None, alias="ProviderID")  # type: ignore[assignment]


class ReservationStop(AuthorizeRemoteReservationStopRequest):
    """Cancel a reservation (EMP role). EvseID and ProviderID default to the session's."""

    provider_id: ProviderId | None = Field(None, alias="ProviderID")  # type: ignore[assignment]
    evse_id: EvseId | None = Field(None, alias="EvseID")  # type: ignore[assignment]


class RemoteStartIngest(Payload):
    """An AuthorizeRemoteStart from an EMP peer (CPO role)."""

    peer_id: str
    received_at: AwareDatetime
    request: AuthorizeRemoteStartRequest


class RemoteStopIngest(Payload):
    """An AuthorizeRemoteStop from an EMP peer (CPO role)."""

    peer_id: str
    received_at: AwareDatetime
    request: AuthorizeRemoteStopRequest


class ReservationStartIngest(Payload):
    """An AuthorizeRemoteReservationStart from an EMP peer (CPO role)."""

    peer_id: str
    received_at: AwareDatetime
    request: AuthorizeRemoteReservationStartRequest


class ReservationStopIngest(Payload):
    """An AuthorizeRemoteReservationStop from an EMP peer (CPO role)."""

    peer_id: str
    received_at: AwareDatetime
    request: AuthorizeRemoteReservationStopRequest


class NotificationIngest(Payload):
    """A ChargingNotification from a CPO peer (EMP role)."""

    peer_id: str
    received_at: AwareDatetime
    request: ChargingNotification


class SessionNotify(Payload):
    """A charging notification from the charge point backend (CPO role), in OICP's vocabulary; the
    node sends it to the EMP that owns the session (Progress at most every 5 minutes per session)."""

    notification: ChargingNotification


# ---- CDR commands -----------------------------------------------------------------------------


class CdrSubmit(ChargeDetailRecord):
    """A CDR from the charge point backend (CPO role), in OICP's vocabulary (eRoamingChargeDetailRecord):
    stored, then delivered to the EMP that owns the session until it acknowledges."""


class CdrReplay(Payload):
    """Send parked CDRs again (CPO role): the given SessionIDs, or every parked CDR (of one peer)."""

    session_ids: list[SessionId] | None = Field(None, max_length=10_000)
    peer_id: str | None = None


class CdrIngest(Payload):
    """A ChargeDetailRecord from a CPO peer (EMP role)."""

    peer_id: str
    received_at: AwareDatetime
    request: ChargeDetailRecord


class CdrFetch(Payload):
    """Fetch CDRs from a CPO peer with GetChargeDetailRecords (EMP role), all pages, into the inbox
    (deduplicated by SessionID). Without a time range: the last ``cdr.fetch_lookback_seconds``."""

    peer_id: str
    from_: AwareDatetime | None = Field(None, alias="From")
    to: AwareDatetime | None = Field(None, alias="To")
    session_ids: list[SessionId] | None = Field(None, max_length=2000)


class CommandReply(Payload):
    """The answer of a worker to a command sent as a request (``reply_to`` set): the OICP
    StatusCode it maps to, what changed, and for the OICP operations that answer more than an
    acknowledgement (AuthorizeStart/Stop) the whole OICP answer in ``answer``."""

    ok: bool
    code: StatusCodeValue = StatusCodeValue.SUCCESS
    info: str | None = None
    changed: int = 0
    deleted: int = 0
    session_id: SessionId | None = None
    answer: dict[str, Any] | None = None


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


class TokensChanged(Payload):
    """The EMP's token store changed (keys: upper-cased UIDs / EvcoIDs)."""

    action_type: ActionType
    keys: list[str]
    deleted_keys: list[str] = Field(default_factory=list)
    changed_at: datetime


class AuthorizationDecided(Payload):
    """An AuthorizeStart/Stop was answered: by this EMP node for a CPO peer (``role`` emp), or for the
    charge point backend of this CPO node (``role`` cpo). ``decided_by`` says how: ``tokens`` (the
    EMP's store), ``decider`` (an internal system), ``fallback`` (nobody answered in time),
    ``auth_data`` (offline data an EMP pushed), ``peer`` (the EMP of the EvcoID), ``broadcast``
    (RFID sent to every EMP with an authorization contract), ``session`` (AuthorizeStop)."""

    role: Literal["cpo", "emp"]
    operation: Literal["AuthorizeStart", "AuthorizeStop"]
    authorization_status: str
    code: str
    info: str | None = None
    decided_by: str
    session_id: str | None = None
    peer_id: str | None = None
    operator_id: str | None = None
    provider_id: str | None = None
    evse_id: str | None = None
    identification_kind: str | None = None
    decided_at: datetime


class AuthDataReceived(Payload):
    """An EMP peer pushed authentication data and it is stored (CPO role)."""

    peer_id: str
    provider_id: str
    action_type: ActionType
    stored: int
    deleted: int = 0
    received_at: datetime


class SessionEvent(Payload):
    """A session changed: ``session`` is the ledger's record (as ``GET /sessions/{id}`` shows it),
    ``previous_state`` the state before, ``code``/``info`` the OICP outcome where there was one, and
    ``notification`` the OICP body of a charging notification sent (CPO) or received (EMP)."""

    session: dict[str, Any]
    previous_state: str | None = None
    code: str | None = None
    info: str | None = None
    notification: dict[str, Any] | None = None


class CdrEvent(Payload):
    """A CDR was submitted, delivered or parked (CPO role), or received (EMP role: for billing).
    ``cdr`` is the eRoamingChargeDetailRecord as sent; ``session_known`` says whether the ledger knew
    the session (a CDR for a session started offline is kept, and flagged)."""

    session_id: str
    peer_id: str | None = None
    provider_id: str | None = None
    cdr: dict[str, Any]
    session_known: bool = True
    source: Literal["submit", "push", "fetch", "replay"] | None = None
    attempts: int = 0
    error: str | None = None
    at: datetime


class CommandRejected(Payload):
    """A command could not be processed and went to the dead-letter queue, with this reason in its
    ``x-error`` header (the internal API lists and replays the dead letters)."""

    command_type: str
    reason: str
    command_id: str | None = None
    #: rejected: the message itself is wrong (first delivery); failed: its handler kept failing until
    #: the last delivery the queue allows
    kind: Literal["rejected", "failed"] = "rejected"


COMMAND_PAYLOADS: dict[CommandType, type[Payload]] = {
    CommandType.CPO_EVSE_STATUS_SET: EvseStatusSet,
    CommandType.EMP_EVSE_STATUS_INGEST: EvseStatusIngest,
    CommandType.EMP_EVSE_DATA_INGEST: EvseDataIngest,
    CommandType.CPO_EVSE_DATA_SET: EvseDataSet,
    CommandType.CPO_PRICING_PRODUCTS_SET: PricingProductsSet,
    CommandType.CPO_EVSE_PRICING_SET: EvsePricingSet,
    CommandType.EMP_PRICING_PRODUCTS_INGEST: PricingProductsIngest,
    CommandType.EMP_EVSE_PRICING_INGEST: EvsePricingIngest,
    CommandType.EMP_TOKEN_SET: TokensSet,
    CommandType.EMP_AUTHORIZE_START: AuthorizeStartIngest,
    CommandType.EMP_AUTHORIZE_STOP: AuthorizeStopIngest,
    CommandType.CPO_AUTHORIZE_START: CpoAuthorizeStart,
    CommandType.CPO_AUTHORIZE_STOP: CpoAuthorizeStop,
    CommandType.CPO_AUTH_DATA_INGEST: AuthDataIngest,
    CommandType.EMP_REMOTE_START: RemoteStart,
    CommandType.EMP_REMOTE_STOP: RemoteStop,
    CommandType.EMP_RESERVATION_START: ReservationStart,
    CommandType.EMP_RESERVATION_STOP: ReservationStop,
    CommandType.EMP_NOTIFICATION_INGEST: NotificationIngest,
    CommandType.CPO_REMOTE_START_INGEST: RemoteStartIngest,
    CommandType.CPO_REMOTE_STOP_INGEST: RemoteStopIngest,
    CommandType.CPO_RESERVATION_START_INGEST: ReservationStartIngest,
    CommandType.CPO_RESERVATION_STOP_INGEST: ReservationStopIngest,
    CommandType.CPO_SESSION_NOTIFY: SessionNotify,
    CommandType.CPO_CDR_SUBMIT: CdrSubmit,
    CommandType.CPO_CDR_REPLAY: CdrReplay,
    CommandType.EMP_CDR_INGEST: CdrIngest,
    CommandType.EMP_CDR_FETCH: CdrFetch,
}

# Commands an internal system may send (over AMQP or POST /commands/{type} of the internal API);
# the others are issued by the gateway only.
INTERNAL_COMMANDS: frozenset[CommandType] = frozenset(
    {
        CommandType.CPO_EVSE_STATUS_SET,
        CommandType.CPO_EVSE_DATA_SET,
        CommandType.CPO_PRICING_PRODUCTS_SET,
        CommandType.CPO_EVSE_PRICING_SET,
        CommandType.EMP_TOKEN_SET,
        CommandType.CPO_AUTHORIZE_START,
        CommandType.CPO_AUTHORIZE_STOP,
        CommandType.EMP_REMOTE_START,
        CommandType.EMP_REMOTE_STOP,
        CommandType.EMP_RESERVATION_START,
        CommandType.EMP_RESERVATION_STOP,
        CommandType.CPO_SESSION_NOTIFY,
        CommandType.CPO_CDR_SUBMIT,
        CommandType.CPO_CDR_REPLAY,
        CommandType.EMP_CDR_FETCH,
    }
)

#: What the node sends with each internal request (the body is the envelope of this payload) ...
INTERNAL_REQUEST_PAYLOADS: dict[InternalRequest, type[Payload]] = {
    InternalRequest.CPO_BACKEND_REMOTE_START: RemoteStartIngest,
    InternalRequest.CPO_BACKEND_REMOTE_STOP: RemoteStopIngest,
    InternalRequest.CPO_BACKEND_RESERVATION_START: ReservationStartIngest,
    InternalRequest.CPO_BACKEND_RESERVATION_STOP: ReservationStopIngest,
    InternalRequest.EMP_DECIDER_AUTHORIZE_START: AuthorizeStartIngest,
}
#: ... and what it expects back (a JSON object to the request's ``reply_to``, same correlation_id).
INTERNAL_REQUEST_REPLIES: dict[InternalRequest, type[BaseModel]] = {
    InternalRequest.CPO_BACKEND_REMOTE_START: BackendReply,
    InternalRequest.CPO_BACKEND_REMOTE_STOP: BackendReply,
    InternalRequest.CPO_BACKEND_RESERVATION_START: BackendReply,
    InternalRequest.CPO_BACKEND_RESERVATION_STOP: BackendReply,
    InternalRequest.EMP_DECIDER_AUTHORIZE_START: DeciderReply,
}

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
    EventType.TOKENS_CHANGED: TokensChanged,
    EventType.AUTHORIZATION_DECIDED: AuthorizationDecided,
    EventType.AUTH_DATA_RECEIVED: AuthDataReceived,
    **{event: CdrEvent for event in EventType if event.value.startswith("cdr.")},
    **{event: SessionEvent for event in EventType if event.value.startswith("session.")},
}
