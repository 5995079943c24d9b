"""The broker of a service and the typed way to publish commands and events on it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faststream.rabbit import RabbitBroker
from faststream.rabbit.prometheus import RabbitPrometheusMiddleware
from faststream.rabbit.publisher import RabbitPublisher
from faststream.rabbit.schemas import Channel
from prometheus_client import REGISTRY

from shared.bus.envelope import Envelope
from shared.bus.messages import (
    COMMAND_PAYLOADS,
    EVENT_PAYLOADS,
    INTERNAL_REQUEST_PAYLOADS,
    INTERNAL_REQUEST_REPLIES,
    CommandType,
    EventType,
    InternalRequest,
    Payload,
)
from shared.bus.topology import Topology
from shared.settings import NodeSettings

logger = logging.getLogger(__name__)


class BusUnavailable(Exception):
    """The broker did not confirm a message in time: the caller must not report success."""


def create_broker(settings: NodeSettings, service: str) -> RabbitBroker:
    """One robust connection per process, named after node and service in the broker's UI."""
    return RabbitBroker(
        settings.rabbitmq.url,
        # Confirms make publish() return only once the broker has the message; returns raise, so a
        # command that no queue takes is an error and not silently dropped.
        default_channel=Channel(
            prefetch_count=settings.rabbitmq.prefetch, publisher_confirms=True, on_return_raises=True
        ),
        client_properties={"connection_name": f"{settings.name}/{service}"},
        app_id=f"oicp-p2p/{service}",
        graceful_timeout=10.0,
        reconnect_interval=1.0,
        fail_fast=False,
        logger=logging.getLogger(f"faststream.{service}"),
        # FastStream's "Received"/"Processed" line for every message: DEBUG, not INFO. At INFO it was
        # two formatted lines and two writes per command in the workers' hot path (bench
        # gateway_ingest); the faststream_* metrics count messages.
        log_level=logging.DEBUG,
        description=f"oicp-p2p {service} of node {settings.name}",
        # per-handler received/processed/published counts and durations (faststream_* metrics)
        middlewares=[RabbitPrometheusMiddleware(registry=REGISTRY, app_name=service)],
    )


class Bus:
    """Publishes the node's commands and events, each with the one envelope and a broker confirm.

    Publishers are declared up front so that they appear in the AsyncAPI document.
    """

    def __init__(
        self,
        broker: RabbitBroker,
        topology: Topology,
        node: str,
        commands: tuple[CommandType, ...] = (),
        events: tuple[EventType, ...] = (),
        requests: tuple[InternalRequest, ...] = (),
        confirm_timeout: float = 5.0,
    ) -> None:
        self.broker = broker
        self.topology = topology
        self.node = node
        self.confirm_timeout = confirm_timeout
        self._commands: dict[CommandType, RabbitPublisher] = {
            command: broker.publisher(
                exchange=topology.commands,
                routing_key=command.value,
                persist=True,
                mandatory=True,
                title=f"command {command.value}",
                schema=Envelope[COMMAND_PAYLOADS[command]],  # type: ignore[name-defined]
            )
            for command in commands
        }
        self._events: dict[EventType, RabbitPublisher] = {
            event: broker.publisher(
                exchange=topology.events,
                routing_key=event.value,
                persist=True,
                # Facts go to whoever listens; no listener is not an error.
                mandatory=False,
                title=f"event {event.value}",
                schema=Envelope[EVENT_PAYLOADS[event]],  # type: ignore[name-defined]
            )
            for event in events
        }
        # Requests to internal systems are sent by the RpcClient (request/reply with a deadline);
        # these publishers only document them, with the answer expected, in the AsyncAPI file.
        for request in requests:
            reply = INTERNAL_REQUEST_REPLIES[request]
            fields = ", ".join(f"`{info.alias or name}`" for name, info in reply.model_fields.items())
            about_requests, about_reply = (
                " ".join((doc or "").split()) for doc in (InternalRequest.__doc__, reply.__doc__)
            )
            broker.publisher(
                exchange=topology.requests,
                routing_key=request.value,
                persist=True,
                mandatory=True,
                title=f"request {request.value}",
                description=f"{about_requests} Reply: {reply.__name__} ({fields}): {about_reply}",
                schema=Envelope[INTERNAL_REQUEST_PAYLOADS[request]],  # type: ignore[name-defined]
            )

    async def _publish(
        self, publisher: RabbitPublisher, kind: str, payload: Payload, correlation_id: str | None
    ) -> Envelope[Any]:
        envelope: Envelope[Any] = Envelope(type=kind, node=self.node, data=payload)
        try:
            await asyncio.wait_for(
                publisher.publish(
                    envelope.to_bus(),
                    content_type="application/json",
                    correlation_id=correlation_id,
                    message_id=str(envelope.event_id),
                ),
                timeout=self.confirm_timeout,
            )
        except TimeoutError as exc:
            raise BusUnavailable(f"broker did not confirm {kind} within {self.confirm_timeout}s") from exc
        except Exception as exc:
            raise BusUnavailable(f"broker refused {kind}: {exc}") from exc
        return envelope

    async def send_command(
        self, command: CommandType, payload: Payload, correlation_id: str | None = None
    ) -> Envelope[Any]:
        return await self._publish(self._commands[command], command.value, payload, correlation_id)

    async def emit_event(self, event: EventType, payload: Payload, correlation_id: str | None = None) -> Envelope[Any]:
        return await self._publish(self._events[event], event.value, payload, correlation_id)
