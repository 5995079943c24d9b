"""Prometheus metrics of the node (names and labels per ENGINEERING: units in names, `_total` on
counters, bounded label sets — operation, face, peer, status code; never EVSE or session IDs).

Two kinds, and where each is served:

* process-local counters and histograms (requests, latencies, decisions): every process counts what it
  did and serves them itself — the gateway on its internal API, each worker on ``metrics.ports``
  (:class:`MetricsServer`). Prometheus sums them over processes and replicas.
* node-wide state (sessions by state, CDR outbox, delivery lanes, RabbitMQ queues, Redis): it lives in
  Redis and RabbitMQ, shared by every replica of every worker, so no worker process could tell it. The
  gateway reads it when it is scraped (:class:`NodeStateCollector`, filled by
  ``services/gateway/node_metrics.py``). Every gateway replica reports the same values: aggregate
  these with ``max``, never ``sum``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Iterator, Sequence

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

logger = logging.getLogger(__name__)

# The *_created series double every counter and histogram and no dashboard reads them.
disable_created_metrics()

OICP_REQUESTS = Counter(
    "oicp_requests_total",
    "OICP requests answered by the gateway",
    ["operation", "face", "peer", "status_code"],
)
OICP_REQUEST_DURATION = Histogram(
    "oicp_request_duration_seconds",
    "Time to answer an OICP request",
    ["operation", "face"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OICP_REQUESTS_REJECTED = Counter(
    "oicp_requests_rejected_total",
    "OICP requests refused before reaching a handler",
    ["reason"],
)
PEER_DELIVERY_REQUESTS = Counter(
    "oicp_peer_delivery_requests_total",
    "Outbound OICP calls of the delivery lanes",
    ["peer", "operation", "outcome"],
)
PEER_DELIVERY_DURATION = Histogram(
    "oicp_peer_delivery_duration_seconds",
    "Duration of outbound OICP calls of the delivery lanes",
    ["peer", "operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EVSE_STATUS_PROPAGATION = Histogram(
    "oicp_evse_status_propagation_seconds",
    "From an internal EVSE status change to the peer's positive acknowledgement",
    ["peer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

RATE_LIMITED = Counter(
    "oicp_rate_limited_total",
    "Calls held back by the per-peer, per-operation rate limits: inbound refused with HTTP 429; outbound "
    "waited for a free slot, or refused when the wait would not fit the call's timeout",
    ["direction", "peer", "operation", "outcome"],
)

CDRS_RECEIVED = Counter(
    "oicp_cdrs_received_total",
    "CDRs received from CPO peers (EMP role), by what became of them",
    ["peer", "outcome"],
)
CDRS_SENT = Counter("oicp_cdrs_sent_total", "CDRs acknowledged by their EMP peer (CPO role)", ["peer"])
CDRS_PARKED_TOTAL = Counter(
    "oicp_cdrs_parked_total", "CDR deliveries given up (cdr.max_attempts) or refused by the EMP peer", ["peer"]
)
AUTHORIZATIONS = Counter(
    "oicp_authorizations_total",
    "Authorization decisions: role emp = this node decided for a CPO's request, role cpo = this node "
    "asked its EMP peers (or its offline tokens) and this was the outcome",
    ["role", "operation", "result"],
)

DEAD_LETTERED = Counter(
    "oicp_dead_lettered_total",
    "Messages this process sent to the dead-letter queue, by command and kind (rejected: the message is "
    "wrong; failed: its handler kept failing)",
    ["command", "kind"],
)
HANDLER_OUTAGE_RETRIES = Counter(
    "oicp_handler_outage_retries_total",
    "Handler runs repeated in place because Redis or RabbitMQ could not be reached",
    ["command"],
)

CONSUMERS_RECOVERED = Counter(
    "oicp_consumers_recovered_total",
    "Subscriptions a worker made again because RabbitMQ showed its queue without any consumer",
    ["queue"],
)

JOURNAL_ENTRIES = Counter(
    "oicp_journal_entries_total",
    "OICP exchanges this process wrote to the exchange journal, by direction (inbound, outbound)",
    ["direction"],
)
JOURNAL_DROPPED = Counter(
    "oicp_journal_dropped_total",
    "OICP exchanges this process could not journal (queue_full: the writer fell behind; redis: the write failed)",
    ["reason"],
)

# ---- node-wide state, read by the gateway at scrape time ---------------------------------------------

#: name → (help, label names) of every node-wide gauge; one table so the dashboards, the alerts and
#: the docs have one place to look.
NODE_STATE_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "oicp_sessions": ("Sessions in the ledger by state", ("state",)),
    "oicp_sessions_without_cdr": (
        "Sessions that ended longer ago than sessions.cdr_missing_after_seconds and still have no CDR",
        (),
    ),
    "oicp_cdrs_pending": ("CDRs waiting for their EMP peer's acknowledgement (CPO outbox)", ("peer",)),
    "oicp_cdrs_parked": (
        "CDRs whose delivery was given up after cdr.max_attempts or refused (replay them)",
        ("peer",),
    ),
    "oicp_cdrs_without_session": (
        "CDRs whose session the ledger did not know: in = received (EMP), out = submitted (CPO)",
        ("direction",),
    ),
    "oicp_peer_delivery_backlog": (
        "Records waiting for delivery to a peer (EVSE records coalesced per EVSE; CDRs for ChargeDetailRecord)",
        ("peer", "operation"),
    ),
    "oicp_peer_last_success_timestamp_seconds": (
        "When the peer last acknowledged a delivery of this operation (absent before the first)",
        ("peer", "operation"),
    ),
    "oicp_peer_consecutive_failures": (
        "Failed delivery attempts to the peer since its last success",
        ("peer", "operation"),
    ),
    "oicp_peer_lane_state": (
        "Delivery lane state: 1 for the current one of ok, failing (backing off), resync (full load due)",
        ("peer", "operation", "state"),
    ),
    "oicp_queue_messages": ("Messages ready in the node's RabbitMQ queues", ("queue", "kind")),
    "oicp_queue_consumers": (
        "Consumers of the node's RabbitMQ queues (a work queue without consumers is processed by no one)",
        ("queue", "kind"),
    ),
    "oicp_journal_unsealed_entries": ("Journal entries written but not yet sealed into the hash chain", ()),
    "oicp_journal_oldest_unsealed_age_seconds": (
        "Age of the oldest journal entry not yet sealed into the hash chain (0 when none waits)",
        (),
    ),
    "oicp_redis_up": ("1 when Redis answered the gateway's scrape, else 0", ()),
    "oicp_rabbitmq_up": ("1 when RabbitMQ answered the gateway's scrape, else 0", ()),
    "oicp_peer_probe_success": (
        "1 when the latest probe of the peer passed every step, else 0 (failed_step: dns, tcp, tls, oicp; "
        "'' when it passed)",
        ("peer", "role", "failed_step"),
    ),
    "oicp_peer_probe_duration_seconds": ("Duration of the latest probe of the peer, by step", ("peer", "role", "step")),
    "oicp_peer_probe_timestamp_seconds": ("When the latest probe of the peer started", ("peer", "role")),
    "oicp_peer_certificate_expiry_timestamp_seconds": (
        "notAfter of the TLS certificates of the latest probe of an https peer: certificate=server (the one "
        "the peer presented) or client (this node's tls.client_cert_file for the peer)",
        ("peer", "role", "certificate"),
    ),
}
LANE_STATES = ("ok", "failing", "resync")


class NodeState:
    """One scrape's worth of node-wide values, collected by name."""

    def __init__(self) -> None:
        self._families = {
            name: GaugeMetricFamily(name, help_text, labels=list(labels))
            for name, (help_text, labels) in NODE_STATE_GAUGES.items()
        }

    def set(self, name: str, value: float, *labels: str) -> None:
        self._families[name].add_metric(list(labels), float(value))

    def families(self) -> list[Metric]:
        return [f for f in self._families.values() if f.samples]


class NodeStateCollector(Collector):
    """Serves the last snapshot the gateway took (collectors are synchronous; the snapshot is read from
    Redis and RabbitMQ asynchronously right before). A peer removed since simply is not in it."""

    def __init__(self) -> None:
        self._snapshot: list[Metric] = []

    def update(self, state: NodeState) -> None:
        self._snapshot = state.families()

    def collect(self) -> Iterator[Metric]:
        return iter(self._snapshot)

    def describe(self) -> Iterable[Metric]:
        return []


def bearer_matches(authorization: str, tokens: Sequence[bytes]) -> bool:
    """``Authorization: Bearer <one of tokens>``; every comparison runs, so the time taken says nothing
    about which token was close."""
    scheme, _, token = authorization.partition(" ")
    given = token.strip().encode()
    matches = [hmac.compare_digest(given, t) for t in tokens]
    return scheme.lower() == "bearer" and any(matches)


class MetricsServer:
    """A worker process's own small HTTP server: ``/metrics`` (bearer token) and ``/healthz``
    (liveness, no token). aiohttp is already every worker's HTTP library; it runs on the worker's loop."""

    def __init__(self, host: str, port: int, tokens: Sequence[bytes], service: str) -> None:
        self.host, self.port, self.service = host, port, service
        self._tokens = list(tokens)
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        if not bearer_matches(request.headers.get("Authorization", ""), self._tokens):
            return web.json_response({"detail": "missing or wrong bearer token"}, status=401)
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": self.service})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        logger.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def metrics_endpoint(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
