"""Handlers of the cdr service, wired to their command queues.

Every command is answered with a CommandReply through ``answer_once`` (handled at most once per
event_id, a redelivery gets the stored reply). A CDR is acknowledged only once it is stored: if Redis
fails the message is requeued (up to the delivery limit) and the caller gets no positive answer.
Malformed commands go to the dead-letter queue (``failure_policy`` middleware).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from faststream.rabbit import RabbitResponse

from services.cdr import fetch, inbox, outbox
from services.cdr.app import CdrDeps
from shared.bus import replies
from shared.bus.annotations import RabbitMessage
from shared.bus.envelope import Envelope
from shared.bus.messages import CdrFetch, CdrIngest, CdrReplay, CdrSubmit, CommandReply, CommandType

if TYPE_CHECKING:
    from services.cdr.outbox import CdrDelivery


def register_handlers(deps: CdrDeps, delivery: CdrDelivery) -> None:
    broker, topology = deps.broker, deps.topology

    async def answer_once(
        envelope: Envelope[Any], message: RabbitMessage, handle: Callable[[], Awaitable[CommandReply]]
    ) -> RabbitResponse | None:
        return await replies.answer_once(deps.redis, deps.keys, envelope, message, handle)

    def subscriber(command: CommandType) -> Any:
        return replies.command_subscriber(broker, topology, command)

    # ---- CPO role: the outbox -------------------------------------------------------------------

    @subscriber(CommandType.CPO_CDR_SUBMIT)
    async def on_submit(envelope: Envelope[CdrSubmit], message: RabbitMessage) -> RabbitResponse | None:
        """Store a CDR of the charge point backend and deliver it to the session's EMP until acknowledged."""
        return await answer_once(
            envelope, message, lambda: outbox.submit(deps, delivery, envelope, message.correlation_id)
        )

    @subscriber(CommandType.CPO_CDR_REPLAY)
    async def on_replay(envelope: Envelope[CdrReplay], message: RabbitMessage) -> RabbitResponse | None:
        """Deliver parked CDRs again (the given SessionIDs, or all parked ones of a peer or of the node)."""
        return await answer_once(
            envelope, message, lambda: outbox.replay(deps, delivery, envelope, message.correlation_id)
        )

    # ---- EMP role: the inbox --------------------------------------------------------------------

    @subscriber(CommandType.EMP_CDR_INGEST)
    async def on_ingest(envelope: Envelope[CdrIngest], message: RabbitMessage) -> RabbitResponse | None:
        """A ChargeDetailRecord from a CPO peer: one per SessionID; the reply is the peer's answer."""
        return await answer_once(envelope, message, lambda: inbox.ingest(deps, envelope, message.correlation_id))

    @subscriber(CommandType.EMP_CDR_FETCH)
    async def on_fetch(envelope: Envelope[CdrFetch], message: RabbitMessage) -> RabbitResponse | None:
        """Fetch a CPO peer's CDRs with GetChargeDetailRecords into the inbox (deduplicated)."""
        return await answer_once(envelope, message, lambda: fetch.fetch(deps, envelope, message.correlation_id))
