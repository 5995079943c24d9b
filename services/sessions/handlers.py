"""Handlers of the sessions service, wired to their command queues.

Every command is answered with a CommandReply (``answer`` = the OICP acknowledgement for the gateway
to pass on) through ``answer_once``: handled at most once per event_id, a redelivery gets the stored
reply. The ledger write comes first, so when Redis fails the message is requeued (up to the delivery
limit) and nothing has been sent; once a request went out, a redelivery finds its session in the
ledger and answers from it instead of sending again. Malformed commands go to the dead-letter queue
(``failure_policy`` middleware).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from faststream.rabbit import RabbitResponse

from services.sessions import cpo, emp
from services.sessions.app import SessionsDeps
from shared.bus import replies
from shared.bus.annotations import RabbitMessage
from shared.bus.envelope import Envelope
from shared.bus.messages import (
    CommandReply,
    CommandType,
    NotificationIngest,
    RemoteStart,
    RemoteStartIngest,
    RemoteStop,
    RemoteStopIngest,
    ReservationStart,
    ReservationStartIngest,
    ReservationStop,
    ReservationStopIngest,
    SessionNotify,
)


def register_handlers(deps: SessionsDeps) -> None:
    broker, topology = deps.broker, deps.topology

    async def answer_once(
        envelope: Envelope[Any], message: RabbitMessage, handle: Callable[[], Awaitable[CommandReply]]
    ) -> RabbitResponse | None:
        return await replies.answer_once(deps.redis, deps.keys, envelope, message, handle)

    def subscriber(command: CommandType) -> Any:
        return replies.command_subscriber(broker, topology, command)

    # ---- EMP role -------------------------------------------------------------------------------

    @subscriber(CommandType.EMP_REMOTE_START)
    async def on_remote_start(envelope: Envelope[RemoteStart], message: RabbitMessage) -> RabbitResponse | None:
        """Send one AuthorizeRemoteStart to the EVSE's CPO; a known SessionID is answered from the ledger."""
        return await answer_once(envelope, message, lambda: emp.start(deps, envelope, message.correlation_id))

    @subscriber(CommandType.EMP_REMOTE_STOP)
    async def on_remote_stop(envelope: Envelope[RemoteStop], message: RabbitMessage) -> RabbitResponse | None:
        """Send one AuthorizeRemoteStop for a session this EMP started."""
        return await answer_once(envelope, message, lambda: emp.stop(deps, envelope, message.correlation_id))

    @subscriber(CommandType.EMP_RESERVATION_START)
    async def on_reservation_start(
        envelope: Envelope[ReservationStart], message: RabbitMessage
    ) -> RabbitResponse | None:
        """Send one AuthorizeRemoteReservationStart to the EVSE's CPO."""
        return await answer_once(envelope, message, lambda: emp.start(deps, envelope, message.correlation_id))

    @subscriber(CommandType.EMP_RESERVATION_STOP)
    async def on_reservation_stop(envelope: Envelope[ReservationStop], message: RabbitMessage) -> RabbitResponse | None:
        """Send one AuthorizeRemoteReservationStop for a reservation this EMP made."""
        return await answer_once(envelope, message, lambda: emp.stop(deps, envelope, message.correlation_id))

    @subscriber(CommandType.EMP_NOTIFICATION_INGEST)
    async def on_notification(envelope: Envelope[NotificationIngest], message: RabbitMessage) -> RabbitResponse | None:
        """A ChargingNotification from a CPO peer: moves the ledger; the reply is the peer's answer."""
        return await answer_once(
            envelope, message, lambda: emp.ingest_notification(deps, envelope, message.correlation_id)
        )

    # ---- CPO role -------------------------------------------------------------------------------

    @subscriber(CommandType.CPO_REMOTE_START_INGEST)
    async def on_remote_start_ingest(
        envelope: Envelope[RemoteStartIngest], message: RabbitMessage
    ) -> RabbitResponse | None:
        """An EMP peer's AuthorizeRemoteStart: recorded, then the charge point backend is asked."""
        return await answer_once(envelope, message, lambda: cpo.start(deps, envelope, message.correlation_id))

    @subscriber(CommandType.CPO_REMOTE_STOP_INGEST)
    async def on_remote_stop_ingest(
        envelope: Envelope[RemoteStopIngest], message: RabbitMessage
    ) -> RabbitResponse | None:
        """An EMP peer's AuthorizeRemoteStop of its own session, passed to the backend."""
        return await answer_once(envelope, message, lambda: cpo.stop(deps, envelope, message.correlation_id))

    @subscriber(CommandType.CPO_RESERVATION_START_INGEST)
    async def on_reservation_start_ingest(
        envelope: Envelope[ReservationStartIngest], message: RabbitMessage
    ) -> RabbitResponse | None:
        """An EMP peer's AuthorizeRemoteReservationStart: recorded, then the backend is asked."""
        return await answer_once(envelope, message, lambda: cpo.start(deps, envelope, message.correlation_id))

    @subscriber(CommandType.CPO_RESERVATION_STOP_INGEST)
    async def on_reservation_stop_ingest(
        envelope: Envelope[ReservationStopIngest], message: RabbitMessage
    ) -> RabbitResponse | None:
        """An EMP peer's AuthorizeRemoteReservationStop: ends the reservation (its CDR is due)."""
        return await answer_once(envelope, message, lambda: cpo.stop(deps, envelope, message.correlation_id))

    @subscriber(CommandType.CPO_SESSION_NOTIFY)
    async def on_session_notify(envelope: Envelope[SessionNotify], message: RabbitMessage) -> RabbitResponse | None:
        """A charging notification of the backend, sent to the session's EMP (Progress: 5-minute rule)."""
        return await answer_once(envelope, message, lambda: cpo.notify(deps, envelope, message.correlation_id))
