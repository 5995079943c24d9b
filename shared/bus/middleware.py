"""Consumer middleware shared by the workers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fast_depends.exceptions import ValidationError as DependsValidationError
from faststream import BaseMiddleware
from pydantic import ValidationError

from shared.bus.client import Bus, BusUnavailable
from shared.bus.messages import CommandRejected, EventType

logger = logging.getLogger(__name__)

# Errors that no redelivery can cure: the message itself is wrong.
POISON = (ValidationError, DependsValidationError, UnicodeDecodeError, ValueError)


class PoisonMessage(Exception):
    """Raised by a handler for a well-formed command that can never be processed."""


def reject_poison(bus: Bus) -> Callable[..., BaseMiddleware]:
    """Middleware factory: a message that fails validation (or raises PoisonMessage) goes to the
    dead-letter queue at once, with a ``command.rejected`` event saying why, instead of being
    redelivered up to the delivery limit. Other errors (Redis down, …) are left to the ack policy:
    the message is requeued and retried until the queue's delivery limit dead-letters it."""

    class RejectPoison(BaseMiddleware):
        async def consume_scope(self, call_next: Any, msg: Any) -> Any:
            try:
                return await call_next(msg)
            except (*POISON, PoisonMessage) as exc:
                routing_key = getattr(getattr(msg, "raw_message", None), "routing_key", "") or ""
                reason = _describe(exc)
                logger.error("rejected %s to the dead-letter queue: %s", routing_key, reason)
                await msg.reject()
                try:
                    await bus.emit_event(
                        EventType.COMMAND_REJECTED,
                        CommandRejected(command_type=routing_key, reason=reason, command_id=msg.message_id),
                        correlation_id=msg.correlation_id,
                    )
                except BusUnavailable:
                    logger.warning("could not publish command.rejected for %s", routing_key)
                return None

    return RejectPoison


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3]]
        return "invalid message: " + "; ".join(parts)
    return f"{type(exc).__name__}: {exc}"[:1000]
