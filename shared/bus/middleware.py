"""Consumer middleware shared by the workers: what becomes of a message whose handler fails.

Three kinds of failure, three treatments (ARCHITECTURE §5, README "Guarantees"):

* **poison** — the message itself is wrong (not JSON, not UTF-8, invalid data, or a handler raised
  ``PoisonMessage``): no redelivery can cure it, so it is dead-lettered at its first delivery;
* **outage** — Redis or RabbitMQ cannot be reached: the handler is run again in place, with backoff,
  for up to ``rabbitmq.transient_retry_seconds``. The message stays unacknowledged with this consumer
  meanwhile (a crash returns it to the queue), so an outage does not use up its deliveries: a
  fire-and-forget command accepted before Redis went away is applied when Redis is back, not
  dead-lettered after five instant redeliveries;
* **anything else** (a bug, a corrupt stored value) — requeued (``NACK_ON_ERROR``), so another
  delivery, perhaps on another replica, may succeed; at the last delivery the queue allows
  (``x-delivery-count`` reached ``rabbitmq.delivery_limit``) it is dead-lettered.

Dead-lettering is done here rather than left to RabbitMQ, so that the error travels with the message:
a copy goes to the dead-letter exchange with the ``x-error*`` headers below, confirmed, then the
original is acknowledged (a crash between the two leaves a duplicate in the dead-letter queue, never
a loss; replaying is idempotent by event id). A ``command.rejected`` event says the same. The
internal API lists the dead-letter queue with these headers and replays from it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fast_depends.exceptions import ValidationError as DependsValidationError
from faststream import BaseMiddleware
from faststream.rabbit import RabbitBroker
from pydantic import ValidationError
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.bus.client import Bus, BusUnavailable
from shared.bus.messages import CommandRejected, EventType
from shared.metrics import DEAD_LETTERED, HANDLER_OUTAGE_RETRIES

logger = logging.getLogger(__name__)

# Errors that no redelivery can cure: the message itself is wrong.
POISON = (ValidationError, DependsValidationError, UnicodeDecodeError, ValueError)
# Errors of the infrastructure, not of the message: wait for it in place.
OUTAGE = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, BusUnavailable, ConnectionError)

#: headers a dead-lettered message carries (besides its own)
ERROR_HEADER = "x-error"
ERROR_KIND_HEADER = "x-error-kind"  # "rejected" (poison) or "failed" (kept failing)
FAILED_SERVICE_HEADER = "x-failed-service"
FAILED_AT_HEADER = "x-failed-at"
ORIGINAL_EXCHANGE_HEADER = "x-original-exchange"
ORIGINAL_ROUTING_KEY_HEADER = "x-original-routing-key"
DELIVERIES_HEADER = "x-deliveries"  # how often it was delivered before it was given up
#: set on a message whose handler is run again in place: it counts as redelivered
RETRIED_HEADER = "x-retried-in-place"
#: quorum queues count a message's earlier failed deliveries in this header
DELIVERY_COUNT_HEADER = "x-delivery-count"

RETRY_INITIAL_SECONDS = 0.2
RETRY_MAX_SECONDS = 5.0


class PoisonMessage(Exception):
    """Raised by a handler for a well-formed command that can never be processed."""


def delivered_before(message: Any) -> bool:
    """Whether this message's handler may have run before (a redelivery, or a run repeated in place):
    handlers that must redo a step an earlier run may have left half done ask this."""
    raw = getattr(message, "raw_message", None)
    return bool(getattr(raw, "redelivered", False)) or RETRIED_HEADER in (message.headers or {})


def no_reply(message: Any) -> None:
    """Send nothing to the message's ``reply_to``: FastStream answers a request even when its handler
    returns None, and RabbitMQ 3.10 returns a mandatory publish to a direct reply-to address as
    NO_ROUTE, which fails the delivery and requeues the message (up to its delivery limit)."""
    message.reply_to = ""


def failure_policy(bus: Bus, service: str, delivery_limit: int, outage_retry_seconds: float) -> Callable[..., Any]:
    """Middleware factory of the failure treatment described in the module docstring."""
    dead_letter_exchange = bus.topology.dead_letter

    class FailurePolicy(BaseMiddleware):
        async def consume_scope(self, call_next: Any, msg: Any) -> Any:
            routing_key = getattr(getattr(msg, "raw_message", None), "routing_key", "") or ""
            give_up_at = time.monotonic() + outage_retry_seconds
            delay = RETRY_INITIAL_SECONDS
            while True:
                try:
                    result = await call_next(msg)
                    if result is None:
                        no_reply(msg)  # a fire-and-forget command sent with reply_to: nothing to say
                    return result
                except (*POISON, PoisonMessage) as exc:
                    await self._dead_letter(msg, routing_key, describe(exc), "rejected")
                    no_reply(msg)
                    return None
                except OUTAGE as exc:
                    if time.monotonic() + delay > give_up_at:
                        return await self._failed(msg, routing_key, exc)
                    HANDLER_OUTAGE_RETRIES.labels(routing_key).inc()
                    logger.warning("%s: %s; running it again in %.1fs", routing_key, describe(exc), delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_SECONDS)
                    msg.headers[RETRIED_HEADER] = True
                except Exception as exc:
                    return await self._failed(msg, routing_key, exc)

        async def _failed(self, msg: Any, routing_key: str, exc: Exception) -> Any:
            """Requeue for another delivery, or dead-letter it with its error at the last one."""
            deliveries = int((msg.headers or {}).get(DELIVERY_COUNT_HEADER) or 0)
            if deliveries < delivery_limit:
                raise exc  # NACK_ON_ERROR requeues it
            logger.error("%s failed at its delivery %d: %s", routing_key, deliveries + 1, exc, exc_info=exc)
            await self._dead_letter(msg, routing_key, describe(exc), "failed", deliveries + 1)
            no_reply(msg)
            return None

        async def _dead_letter(self, msg: Any, routing_key: str, reason: str, kind: str, deliveries: int = 1) -> None:
            logger.error("dead-lettered %s (%s): %s", routing_key, kind, reason)
            raw = getattr(msg, "raw_message", None)
            headers = {
                **(msg.headers or {}),
                ERROR_HEADER: reason,
                ERROR_KIND_HEADER: kind,
                FAILED_SERVICE_HEADER: service,
                FAILED_AT_HEADER: datetime.now(UTC).isoformat(timespec="milliseconds"),
                ORIGINAL_EXCHANGE_HEADER: getattr(raw, "exchange", "") or "",
                ORIGINAL_ROUTING_KEY_HEADER: routing_key,
                DELIVERIES_HEADER: deliveries,
            }
            # the dead-letter queue counts its own deliveries in this header
            headers.pop(DELIVERY_COUNT_HEADER, None)
            headers.pop(RETRIED_HEADER, None)
            broker: RabbitBroker = bus.broker
            try:
                await asyncio.wait_for(
                    broker.publish(
                        msg.body,
                        exchange=dead_letter_exchange,
                        routing_key=routing_key,
                        headers=headers,
                        content_type=msg.content_type,
                        message_id=msg.message_id,
                        correlation_id=msg.correlation_id,
                        persist=True,
                        mandatory=True,
                    ),
                    timeout=bus.confirm_timeout,
                )
            except Exception as exc:
                # Not in the dead-letter queue: leave it in its own queue rather than lose it.
                logger.warning("could not dead-letter %s (%s); requeued", routing_key, exc)
                await msg.nack()
                return
            await msg.ack()
            DEAD_LETTERED.labels(routing_key, kind).inc()
            try:
                await bus.emit_event(
                    EventType.COMMAND_REJECTED,
                    CommandRejected(command_type=routing_key, reason=reason, command_id=msg.message_id, kind=kind),
                    correlation_id=msg.correlation_id,
                )
            except BusUnavailable:
                logger.warning("could not publish command.rejected for %s", routing_key)

    return FailurePolicy


def describe(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3]]
        return "invalid message: " + "; ".join(parts)
    return f"{type(exc).__name__}: {exc}"[:1000]
