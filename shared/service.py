"""What every worker process shares: its core (broker, bus, Redis), settings loading, logging, and the
FastStream run loop."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NamedTuple

import redis.asyncio as aioredis
from faststream import FastStream
from faststream.rabbit import RabbitBroker

from shared.bus.client import Bus, create_broker
from shared.bus.consumers import ConsumerWatchdog
from shared.bus.messages import EventType, InternalRequest
from shared.bus.middleware import failure_policy
from shared.bus.topology import Topology
from shared.journal.recorder import JOURNAL
from shared.journal.store import JournalSealer, JournalStore
from shared.logs import setup_logging
from shared.metrics import MetricsServer
from shared.settings import ConfigError, NodeSettings, load_settings
from shared.stores.redis import KeySpace, create_redis


class WorkerCore(NamedTuple):
    topology: Topology
    broker: RabbitBroker
    bus: Bus
    redis: aioredis.Redis
    keys: KeySpace


def worker_core(
    settings: NodeSettings,
    service: str,
    events: tuple[EventType, ...],
    requests: tuple[InternalRequest, ...] = (),
) -> WorkerCore:
    """What every worker's composition root starts from, built without connecting (the AsyncAPI
    generator builds the apps offline): its broker with the failure policy (poison, outage, dead letters), the bus with
    the events it publishes (and the internal requests it sends, for the document), Redis."""
    topology = Topology(settings.rabbitmq.prefix, settings.rabbitmq.delivery_limit)
    broker = create_broker(settings, service)
    bus = Bus(broker, topology, settings.name, events=events, requests=requests)
    rabbitmq = settings.rabbitmq
    broker.add_middleware(failure_policy(bus, service, rabbitmq.delivery_limit, rabbitmq.outage_retry_seconds))
    redis = create_redis(settings.redis, f"{settings.name}-{service}")
    return WorkerCore(topology, broker, bus, redis, KeySpace(settings.redis.key_prefix))


def run_worker(service: str, create_app: Callable[[NodeSettings], FastStream]) -> None:
    """Entry point of ``python -m services.<service>``: config from $OICP_P2P_CONFIG, exit 2 on a
    bad configuration (the message names the key), SIGTERM/SIGINT stop it gracefully."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    setup_logging(settings.name, service, settings.log_level)
    import uvloop

    app = create_app(settings)
    server = metrics_server(settings, service)
    # The endpoint is up before the broker connects (a worker waiting for RabbitMQ is alive, and says
    # so) and goes last on shutdown.
    app.on_startup(server.start)
    app.after_shutdown(server.stop)
    rabbitmq = settings.rabbitmq
    # consumers lost in a RabbitMQ restart are subscribed again (shared/bus/consumers.py)
    watchdog = ConsumerWatchdog(
        app.broker, rabbitmq.url, f"{settings.name}/{service}-watchdog", rabbitmq.consumer_check_seconds
    )
    app.after_startup(watchdog.start)
    app.on_shutdown(watchdog.stop)
    journal_redis = create_redis(settings.redis, f"{settings.name}-{service}-journal")
    keys = KeySpace(settings.redis.key_prefix)
    # The exchange journal: this process's outbound calls, and the sealer (one per node, by lease).
    sealer = JournalSealer(JournalStore(journal_redis, keys), settings.journal)

    async def start_journal() -> None:
        await JOURNAL.start(settings.name, settings.journal, journal_redis, keys)
        await sealer.start()

    async def stop_journal() -> None:
        await sealer.stop()
        await JOURNAL.stop()
        await journal_redis.aclose()

    app.on_startup(start_journal)
    app.after_shutdown(stop_journal)
    uvloop.run(app.run())


def metrics_server(settings: NodeSettings, service: str) -> MetricsServer:
    """The worker's /metrics (the internal token or the monitoring token) and /healthz."""
    tokens = settings.internal.monitoring_tokens()
    return MetricsServer(settings.metrics.host, settings.metrics.port_of(service), tokens, service)
