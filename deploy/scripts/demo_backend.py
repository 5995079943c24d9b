"""A demo charge point backend for ``make run``: it answers the CPO node's requests to its backend
(``cpo.backend.*`` on the node's ``oicp.requests`` exchange) the way a real CSMS would, so a remote
start or a reservation sent by the demo EMP node goes all the way through.

Every request is accepted, except for EVSEs whose ID ends in ``*BUSY`` (refused with ``602`` EVSE
already in use) — enough to show both outcomes. A real backend binds its own queue the same way and
answers ``{"accepted": bool, "code": "...", "info": "..."}`` to the message's ``reply_to``.

    OICP_P2P_CONFIG=deploy/config/demo-cpo.yaml python deploy/scripts/demo_backend.py
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import aio_pika
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from shared.bus.messages import BackendReply, InternalRequest
from shared.bus.topology import Topology
from shared.oicp import StatusCodeValue
from shared.settings import ConfigError, load_settings

logger = logging.getLogger("demo-backend")


def evse_ids_in(value: object) -> list[str]:
    """Every EvseID anywhere in the request body (the demo does not care where the node put it)."""
    if isinstance(value, dict):
        found = [str(v) for k, v in value.items() if k == "EvseID"]
        return found + [e for v in value.values() for e in evse_ids_in(v)]
    if isinstance(value, list):
        return [e for v in value for e in evse_ids_in(v)]
    return []


def decide(routing_key: str, body: dict[str, object]) -> BackendReply:
    starts = (InternalRequest.CPO_BACKEND_REMOTE_START, InternalRequest.CPO_BACKEND_RESERVATION_START)
    if routing_key in starts:
        if any(e.upper().endswith("*BUSY") for e in evse_ids_in(body)):
            return BackendReply(accepted=False, code=StatusCodeValue.EVSE_ALREADY_IN_USE, info="demo: EVSE busy")
    return BackendReply(accepted=True)


async def serve() -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    topology = Topology(settings.rabbitmq.prefix, settings.rabbitmq.delivery_limit)
    connection = await aio_pika.connect_robust(settings.rabbitmq.url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(topology.requests.name, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(f"{settings.rabbitmq.prefix}demo-backend", durable=False, auto_delete=True)
    await queue.bind(exchange, routing_key="cpo.backend.#")

    async def on_request(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            reply = decide(message.routing_key or "", orjson.loads(message.body))
            logger.info("%s -> %s", message.routing_key, reply.model_dump(mode="json"))
            if message.reply_to:
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        orjson.dumps(reply.model_dump(mode="json")),
                        correlation_id=message.correlation_id,
                        content_type="application/json",
                    ),
                    routing_key=message.reply_to,
                )

    await queue.consume(on_request)
    logger.info("demo charge point backend of %s answering cpo.backend.*", settings.name)
    await asyncio.Future()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s demo-backend %(message)s")
    asyncio.run(serve())
