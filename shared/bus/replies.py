"""Replies of workers to commands sent as requests (``reply_to`` set): each command is handled at
most once per event_id, and a redelivery gets the same reply again.

A processed command's reply is kept for an hour under its event_id: long enough for any redelivery
(a crashed consumer's messages come back at once or when a consumer returns), short enough that a
busy peer's requests do not pile up keys.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from faststream.middlewares import AckPolicy
from faststream.rabbit import RabbitBroker, RabbitResponse

from shared.bus.annotations import RabbitMessage
from shared.bus.envelope import Envelope
from shared.bus.messages import CommandReply, CommandType
from shared.bus.middleware import no_reply
from shared.bus.rpc import deadline_passed
from shared.bus.topology import Topology
from shared.stores.redis import KeySpace

logger = logging.getLogger(__name__)

REPLY_RETENTION_SECONDS = 3_600


async def answer_once(
    redis: aioredis.Redis,
    keys: KeySpace,
    envelope: Envelope[Any],
    message: RabbitMessage,
    handle: Callable[[], Awaitable[CommandReply]],
) -> RabbitResponse | None:
    """Run a replying handler at most once per command (by event_id) and return its reply.

    A message whose requester gave up (deadline passed) is not applied: the requester has already
    answered its partner with an error, and the partner will send again.
    """
    if deadline_passed(message.headers):
        logger.warning("%s %s arrived after its deadline; not applied", envelope.type, envelope.event_id)
        no_reply(message)  # nobody waits for it
        return None
    done_key = keys.key("commands", "done", str(envelope.event_id))
    previous = await redis.get(done_key)
    if previous is not None:
        return as_reply(orjson.loads(previous), message)
    reply = await handle()
    body = reply.model_dump(mode="json")
    await redis.set(done_key, orjson.dumps(body), ex=REPLY_RETENTION_SECONDS)
    if not reply.ok:
        logger.info("%s %s refused: %s %s", envelope.type, envelope.event_id, reply.code.value, reply.info)
    return as_reply(body, message)


def as_reply(body: dict[str, Any], message: RabbitMessage) -> RabbitResponse:
    """The reply, published without ``mandatory``: RabbitMQ 3.10 returns a mandatory publish to a
    direct reply-to address as unroutable (NO_ROUTE) even though it delivered it."""
    return RabbitResponse(body, mandatory=False, correlation_id=message.correlation_id)


def command_subscriber(broker: RabbitBroker, topology: Topology, command: CommandType) -> Any:
    """The subscriber decorator of a command's own queue. An error left unhandled by the failure policy
    (``shared.bus.middleware``) requeues the message (``NACK_ON_ERROR``); the policy dead-letters it
    with its error at the last delivery the queue allows."""
    return broker.subscriber(
        topology.command_queue(command),
        topology.commands,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title=f"command {command.value}",
    )
