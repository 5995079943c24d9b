"""Prometheus metrics of the node (names and labels per ENGINEERING: units in names, `_total` on
counters, bounded label sets — operation, face, peer, status code; never EVSE or session IDs)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

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
PEER_DELIVERY_BACKLOG = Gauge(
    "oicp_peer_delivery_backlog",
    "Records waiting for delivery to a peer (coalesced: at most one per EVSE)",
    ["peer", "operation"],
)
EVSE_STATUS_PROPAGATION = Histogram(
    "oicp_evse_status_propagation_seconds",
    "From an internal EVSE status change to the peer's positive acknowledgement",
    ["peer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

# Session gauges are read from the ledger in Redis when /metrics is scraped (the gateway serves them):
# the ledger is shared by every replica of every worker, so no single worker process could tell.
SESSIONS = Gauge("oicp_sessions", "Sessions in the ledger by state", ["state"])
SESSIONS_WITHOUT_CDR = Gauge(
    "oicp_sessions_without_cdr",
    "Sessions that ended longer ago than sessions.cdr_missing_after_seconds and still have no CDR",
)

CDRS_PENDING = Gauge("oicp_cdrs_pending", "CDRs waiting for their EMP's acknowledgement (CPO outbox)")
CDRS_PARKED = Gauge(
    "oicp_cdrs_parked", "CDRs whose delivery was given up after cdr.max_attempts or refused (replay them)"
)
CDRS_WITHOUT_SESSION = Gauge(
    "oicp_cdrs_without_session",
    "CDRs whose session the ledger did not know: in = received (EMP), out = submitted (CPO)",
    ["direction"],
)
RATE_LIMITED = Counter(
    "oicp_rate_limited_total",
    "Calls held back by the per-peer, per-operation rate limits: inbound refused with HTTP 429; outbound "
    "waited for a free slot, or refused when the wait would not fit the call's timeout",
    ["direction", "peer", "operation", "outcome"],
)


async def metrics_endpoint(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
