"""Grafana dashboards of an oicp-p2p node, as code.

``python deploy/grafana/dashboards.py`` writes ``deploy/grafana/dashboards/*.json``, which Grafana loads
through ``provisioning/dashboards/oicp.yaml``. Edit the dashboards here, never in the JSON (a test fails
while the committed JSON differs from this file's output), and keep to the metrics of
``shared/metrics.py``: a test checks every expression with promtool, every metric name against the
contract, and — against a real Prometheus scraping two running nodes — that every panel shows data.

Plain Python on purpose (no grafanalib): the JSON model needed is small and this way it is all in view.

Two kinds of metrics (shared/metrics.py): process-local counters and histograms, summed over the
processes and replicas that serve them; and node-wide gauges the gateway reads from Redis and RabbitMQ
at scrape time, which every gateway replica reports identically — those are aggregated with ``max``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATASOURCE_UID = "oicp-prometheus"  # pinned in provisioning/datasources/prometheus.yaml
DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": DATASOURCE_UID}
SCHEMA_VERSION = 39
GRID_WIDTH = 24  # Grafana's grid has 24 columns
OUT_DIR = Path(__file__).resolve().parent / "dashboards"
TAGS = ["oicp"]

RATE = "$__rate_interval"  # Grafana picks a window that fits the scrape interval and the zoom
PEER = 'peer=~"$peer"'
PEER_DASHBOARD_UID = "oicp-peer"
# Every peer a lane delivers to, that calls us, or that we call; "anonymous" is an unrecognised caller.
PEER_VARIABLE_QUERY = (
    'label_values({__name__=~"oicp_peer_lane_state|oicp_peer_delivery_requests_total|oicp_requests_total'
    '|oicp_peer_probe_success",'
    ' peer!="anonymous"}, peer)'
)
# OICP codes that mean something went wrong (0xx but 000: protocol, identity, data, system; 3xx: partner
# unknown or not answering); 1xx/2xx/4xx/6xx are business answers (not authorized, EVSE busy, …).
ERROR_CODES = 'status_code=~"0..|3..", status_code!="000"'
UP_MAPPINGS: list[dict[str, Any]] = [
    {"type": "value", "options": {"0": {"text": "down", "color": "red"}, "1": {"text": "up", "color": "green"}}}
]


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    description: str = ""
    width: int = 8
    height: int = 8
    #: stat panels: the value from which the panel turns red (None: always neutral)
    red_from: float | None = None
    mappings: list[dict[str, Any]] = field(default_factory=list)
    #: panels whose series carry a peer label link to the per-peer dashboard
    links_to_peer: bool = False


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    variables: tuple[dict[str, Any], ...] = ()


def q(expr: str, legend: str = "") -> Query:
    return Query(" ".join(expr.split()), legend)  # one line in the JSON, however it is written here


def quantiles(metric: str, by: str, selector: str = "", legend: str = "") -> tuple[Query, ...]:
    """p50 and p99 of a histogram, summed over processes, per ``by``."""
    inner = f"sum by ({by}, le) (rate({metric}_bucket{{{selector}}}[{RATE}]))"
    return tuple(q(f"histogram_quantile({p}, {inner})", f"{legend} p{round(p * 100)}".strip()) for p in (0.5, 0.99))


# ---- the node overview -----------------------------------------------------------------------------

OVERVIEW = Dashboard(
    uid="oicp-node-overview",
    title="OICP node overview",
    description="One oicp-p2p node: OICP traffic on the gateway, the delivery lanes to peers, queues and workers.",
    rows=(
        Row(
            "Health",
            (
                Panel(
                    "OICP requests/s",
                    (q("sum(rate(oicp_requests_total[$__rate_interval]))", "requests/s"),),
                    unit="reqps",
                    kind="stat",
                    width=4,
                    height=5,
                ),
                Panel(
                    "Error share",
                    (
                        q(
                            f"sum(rate(oicp_requests_total{{{ERROR_CODES}}}[{RATE}]))"
                            f" / sum(rate(oicp_requests_total[{RATE}]))",
                            "errors",
                        ),
                    ),
                    unit="percentunit",
                    kind="stat",
                    description="Share of OICP answers with an error code (0xx except 000, 3xx).",
                    width=4,
                    height=5,
                    red_from=0.1,
                ),
                Panel(
                    "Redis",
                    (q("min(oicp_redis_up)", "Redis"),),
                    kind="stat",
                    description="As seen by the gateway when it was scraped.",
                    width=3,
                    height=5,
                    mappings=UP_MAPPINGS,
                ),
                Panel(
                    "RabbitMQ",
                    (q("min(oicp_rabbitmq_up)", "RabbitMQ"),),
                    kind="stat",
                    description="As seen by the gateway when it was scraped.",
                    width=3,
                    height=5,
                    mappings=UP_MAPPINGS,
                ),
                Panel(
                    "Processes up",
                    (q('sum by (service) (up{job=~"oicp-.*"})', "{{service}}"),),
                    kind="stat",
                    description="Scraped processes per service (gateway replicas, worker replicas).",
                    width=5,
                    height=5,
                ),
                Panel(
                    "Failing lanes",
                    (q('sum(max by (peer, operation) (oicp_peer_lane_state{state="failing"}))', "failing lanes"),),
                    kind="stat",
                    description="Delivery lanes (peer, operation) backing off after failed attempts.",
                    width=5,
                    height=5,
                    red_from=1,
                ),
            ),
        ),
        Row(
            "OICP requests (gateway)",
            (
                Panel(
                    "Requests/s by operation and status code",
                    (
                        q(
                            "sum by (operation, status_code) (rate(oicp_requests_total[$__rate_interval]))",
                            "{{operation}} {{status_code}}",
                        ),
                    ),
                    unit="reqps",
                    width=12,
                ),
                Panel(
                    "Error share by face and peer",
                    (
                        q(
                            f"sum by (face, peer) (rate(oicp_requests_total{{{ERROR_CODES}}}[{RATE}]))"
                            f" / sum by (face, peer) (rate(oicp_requests_total[{RATE}]))",
                            "{{face}} {{peer}}",
                        ),
                    ),
                    unit="percentunit",
                    description="0xx (except 000) and 3xx answers; 'anonymous' = unrecognised callers (017).",
                    width=12,
                ),
                Panel(
                    "Latency p50 / p99 by operation",
                    quantiles("oicp_request_duration_seconds", "operation", legend="{{operation}}"),
                    unit="s",
                    width=12,
                ),
                Panel(
                    "Refused before a handler, by reason",
                    (q("sum by (reason) (rate(oicp_requests_rejected_total[$__rate_interval]))", "{{reason}}"),),
                    unit="reqps",
                    description="Unknown callers, invalid bodies, wrong content type, too large, no such path, …",
                    width=6,
                ),
                Panel(
                    "Rate-limited calls/s",
                    (
                        q(
                            "sum by (direction, outcome) (rate(oicp_rate_limited_total[$__rate_interval]))",
                            "{{direction}} {{outcome}}",
                        ),
                    ),
                    unit="reqps",
                    description="in: partners' calls refused with 429; out: our calls that waited or were refused.",
                    width=6,
                ),
            ),
        ),
        Row(
            "Delivery lanes (node-wide)",
            (
                Panel(
                    "Lane state",
                    (
                        q(
                            "max by (peer, operation, state) (oicp_peer_lane_state) > 0",
                            "{{peer}} {{operation}}: {{state}}",
                        ),
                    ),
                    description="One series per lane, named by its current state: ok, failing, resync.",
                    width=8,
                    links_to_peer=True,
                ),
                Panel(
                    "Backlog by peer and operation",
                    (
                        q(
                            "max by (peer, operation) (oicp_peer_delivery_backlog)",
                            "{{peer}} {{operation}}",
                        ),
                    ),
                    description="Records waiting for delivery (EVSE records coalesced per EVSE; CDRs).",
                    width=8,
                    links_to_peer=True,
                ),
                Panel(
                    "Delivery calls/s by outcome",
                    (
                        q(
                            "sum by (outcome) (rate(oicp_peer_delivery_requests_total[$__rate_interval]))",
                            "{{outcome}}",
                        ),
                    ),
                    unit="reqps",
                    width=8,
                ),
                Panel(
                    "EVSE status propagation p50 / p99",
                    quantiles("oicp_evse_status_propagation_seconds", "peer", legend="{{peer}}"),
                    unit="s",
                    description="From the internal status change to the peer's acknowledgement.",
                    width=12,
                    links_to_peer=True,
                ),
                Panel(
                    "Consecutive failures",
                    (q("max by (peer, operation) (oicp_peer_consecutive_failures) > 0", "{{peer}} {{operation}}"),),
                    description="Failed attempts since the lane's last success (only failing lanes shown).",
                    width=12,
                    links_to_peer=True,
                ),
            ),
        ),
        Row(
            "Queues and workers",
            (
                Panel(
                    "Work queue depth",
                    (q('max by (queue) (oicp_queue_messages{kind="work"})', "{{queue}}"),),
                    description="Messages ready in the node's work queues.",
                    width=8,
                ),
                Panel(
                    "Consumers per work queue",
                    (q('max by (queue) (oicp_queue_consumers{kind="work"})', "{{queue}}"),),
                    description="0 = nobody processes the queue (its worker is down).",
                    width=8,
                ),
                Panel(
                    "Dead letters",
                    (q('max(oicp_queue_messages{kind="dead_letter"})', "dead letters"),),
                    kind="stat",
                    description="Messages in the dead-letter queue (rejected or failed commands).",
                    width=8,
                    red_from=1,
                ),
                Panel(
                    "Messages handled/s by service and queue",
                    (
                        q(
                            "sum by (app_name, handler) (rate(faststream_received_messages_total[$__rate_interval]))",
                            "{{app_name}} {{handler}}",
                        ),
                    ),
                    unit="ops",
                    width=12,
                ),
                Panel(
                    "Handling time p99 by service and queue",
                    (
                        q(
                            "histogram_quantile(0.99, sum by (app_name, handler, le) (rate("
                            "faststream_received_processed_messages_duration_seconds_bucket[$__rate_interval])))",
                            "{{app_name}} {{handler}}",
                        ),
                    ),
                    unit="s",
                    width=12,
                ),
                Panel(
                    "Messages not acknowledged/s by status",
                    (
                        q(
                            "sum by (app_name, status) (rate("
                            'faststream_received_processed_messages_total{status!="acked"}[$__rate_interval]))',
                            "{{app_name}} {{status}}",
                        ),
                        q(
                            "sum by (command, kind) (rate(oicp_dead_lettered_total[$__rate_interval]))",
                            "dead-lettered {{kind}} {{command}}",
                        ),
                    ),
                    unit="ops",
                    description="nacked/error = requeued for another delivery; dead-lettered = sent to the "
                    "dead-letter queue with its error (rejected: wrong message; failed: kept failing).",
                    width=8,
                ),
                Panel(
                    "Handler exceptions/s",
                    (
                        # The counter has no series before a first exception (the usual case): 0 per
                        # service that handles messages instead of "No data", which looks like a fault.
                        q(
                            "sum by (app_name, exception_type)"
                            " (rate(faststream_received_processed_messages_exceptions_total[$__rate_interval]))"
                            " or sum by (app_name) (rate(faststream_received_messages_total[$__rate_interval])) * 0",
                            "{{app_name}} {{exception_type}}",
                        ),
                    ),
                    unit="ops",
                    description="Exceptions other than poison messages (those count as rejected): Redis or "
                    "broker failures mid-handler, bugs. The message is requeued up to the delivery limit.",
                    width=8,
                ),
                Panel(
                    "Messages in process / published/s",
                    (
                        q("sum by (app_name) (faststream_received_messages_in_process)", "{{app_name}} in process"),
                        q(
                            "sum by (app_name) (rate(faststream_published_messages_total[$__rate_interval]))",
                            "{{app_name}} published/s",
                        ),
                    ),
                    width=8,
                ),
            ),
        ),
        Row(
            "Exchange journal",
            (
                Panel(
                    "Exchanges journaled/s",
                    (
                        q(
                            "sum by (service, direction) (rate(oicp_journal_entries_total[$__rate_interval]))",
                            "{{service}} {{direction}}",
                        ),
                    ),
                    unit="ops",
                    description="OICP requests and answers written to the exchange journal, by process and "
                    "direction (inbound: the gateway; outbound: the workers' calls to peers).",
                    width=8,
                ),
                Panel(
                    "Exchanges not journaled/s",
                    (
                        q(
                            "sum by (service, reason) (rate(oicp_journal_dropped_total[$__rate_interval]))",
                            "{{service}} {{reason}}",
                        ),
                    ),
                    unit="ops",
                    description="Dropped, never the OICP answer: redis = the journal write failed, queue_full = "
                    "the writer fell behind (alert OicpJournalEntriesDropped).",
                    width=8,
                ),
                Panel(
                    "Waiting for the sealer",
                    (
                        q("max(oicp_journal_unsealed_entries)", "entries"),
                        q("max(oicp_journal_oldest_unsealed_age_seconds)", "oldest (s)"),
                    ),
                    description="Journal entries not yet hash-chained (not searchable yet) and the oldest one's "
                    "age in seconds (alert OicpJournalNotSealed above 300 s).",
                    width=8,
                ),
            ),
        ),
    ),
)

# ---- one peer (or several) -------------------------------------------------------------------------

PEER_VIEW = Dashboard(
    uid=PEER_DASHBOARD_UID,
    title="OICP peer",
    description="What this node sends to and receives from one partner (or several: the peer variable).",
    variables=(
        {
            "name": "peer",
            "label": "Peer",
            "type": "query",
            "datasource": DATASOURCE,
            "query": PEER_VARIABLE_QUERY,
            "definition": PEER_VARIABLE_QUERY,
            "refresh": 2,  # on time range change: a peer added at runtime shows up
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {},
            "sort": 1,
            "regex": "",
            "hide": 0,
            "options": [],
        },
    ),
    rows=(
        Row(
            "Delivery lanes to the peer (node-wide)",
            (
                Panel(
                    "Lane state",
                    (
                        q(
                            f"max by (peer, operation, state) (oicp_peer_lane_state{{{PEER}}}) > 0",
                            "{{peer}} {{operation}}: {{state}}",
                        ),
                    ),
                    description="One series per lane, named by its current state: ok, failing, resync.",
                    width=8,
                ),
                Panel(
                    "Seconds since last success",
                    (
                        q(
                            f"time() - max by (peer, operation) (oicp_peer_last_success_timestamp_seconds{{{PEER}}})",
                            "{{peer}} {{operation}}",
                        ),
                    ),
                    unit="s",
                    description="No series until the lane's first success.",
                    width=8,
                ),
                Panel(
                    "Consecutive failures",
                    (
                        q(
                            f"max by (peer, operation) (oicp_peer_consecutive_failures{{{PEER}}})",
                            "{{peer}} {{operation}}",
                        ),
                    ),
                    width=8,
                ),
                Panel(
                    "Backlog",
                    (q(f"max by (peer, operation) (oicp_peer_delivery_backlog{{{PEER}}})", "{{peer}} {{operation}}"),),
                    width=8,
                ),
                Panel(
                    "Delivery calls/s by outcome",
                    (
                        q(
                            "sum by (peer, operation, outcome)"
                            f" (rate(oicp_peer_delivery_requests_total{{{PEER}}}[{RATE}]))",
                            "{{peer}} {{operation}} {{outcome}}",
                        ),
                    ),
                    unit="reqps",
                    description="success, refused (an OICP error code), timeout, connect, http, "
                    "invalid_response, rate_limited (held back by our own limit).",
                    width=8,
                ),
                Panel(
                    "Delivery latency p99",
                    (
                        q(
                            "histogram_quantile(0.99, sum by (peer, operation, le)"
                            f" (rate(oicp_peer_delivery_duration_seconds_bucket{{{PEER}}}[{RATE}])))",
                            "{{peer}} {{operation}}",
                        ),
                    ),
                    unit="s",
                    width=8,
                ),
                Panel(
                    "EVSE status propagation p50 / p99",
                    quantiles("oicp_evse_status_propagation_seconds", "peer", PEER, "{{peer}}"),
                    unit="s",
                    description="From the internal status change to the peer's acknowledgement.",
                    width=12,
                ),
                Panel(
                    "CDRs pending / parked",
                    (
                        q(f"max by (peer) (oicp_cdrs_pending{{{PEER}}})", "{{peer}} pending"),
                        q(f"max by (peer) (oicp_cdrs_parked{{{PEER}}})", "{{peer}} parked"),
                    ),
                    description="CPO role: CDRs in the outbox for this EMP peer.",
                    width=12,
                ),
            ),
        ),
        Row(
            "Probes of the peer (node-wide)",
            (
                Panel(
                    "Probe result",
                    (
                        q(
                            f"max by (peer, role, failed_step) (oicp_peer_probe_success{{{PEER}}})",
                            "{{peer}} ({{role}}) failed at: {{failed_step}}",
                        ),
                    ),
                    description="1: the latest probe passed DNS, TCP, TLS and the OICP round trip; 0: it failed "
                    "at failed_step (the reason: GET /probes, oicp-p2p probes).",
                    width=6,
                ),
                Panel(
                    "Probe duration by step",
                    (
                        q(
                            f"max by (peer, step) (oicp_peer_probe_duration_seconds{{{PEER}}})",
                            "{{peer}} {{step}}",
                        ),
                    ),
                    unit="s",
                    width=6,
                ),
                Panel(
                    "TLS certificates: days left",
                    (
                        q(
                            "(min by (peer, certificate) (oicp_peer_certificate_expiry_timestamp_seconds"
                            f"{{{PEER}}}) - time()) / 86400",
                            "{{peer}} {{certificate}}",
                        ),
                    ),
                    unit="d",
                    description="https peers, as of the latest probe: server = the certificate the peer presents, "
                    "client = ours for the peer (tls.client_cert_file).",
                    width=6,
                ),
                Panel(
                    "Seconds since the last probe",
                    (
                        q(
                            f"time() - max by (peer) (oicp_peer_probe_timestamp_seconds{{{PEER}}})",
                            "{{peer}}",
                        ),
                    ),
                    unit="s",
                    description="Grows beyond probes.interval_seconds when no sessions worker probes.",
                    width=6,
                ),
            ),
        ),
        Row(
            "Calls from the peer",
            (
                Panel(
                    "Inbound OICP requests/s by operation and status code",
                    (
                        q(
                            f"sum by (peer, operation, status_code) (rate(oicp_requests_total{{{PEER}}}[{RATE}]))",
                            "{{peer}} {{operation}} {{status_code}}",
                        ),
                    ),
                    unit="reqps",
                    width=12,
                ),
                Panel(
                    "Rate-limited calls/s",
                    (
                        q(
                            "sum by (peer, direction, operation, outcome)"
                            f" (rate(oicp_rate_limited_total{{{PEER}}}[{RATE}]))",
                            "{{peer}} {{direction}} {{operation}} {{outcome}}",
                        ),
                    ),
                    unit="reqps",
                    description="in: the peer's calls refused with 429; out: our calls to it that waited or "
                    "were refused by our limit.",
                    width=12,
                ),
            ),
        ),
    ),
)

# ---- sessions and CDRs -----------------------------------------------------------------------------

SESSIONS_CDRS = Dashboard(
    uid="oicp-sessions-cdrs",
    title="OICP sessions and CDRs",
    description="The session ledger, the CDR outbox (CPO role) and inbox (EMP role), authorizations.",
    rows=(
        Row(
            "Sessions (node-wide)",
            (
                Panel(
                    "Sessions without CDR",
                    (q("max(oicp_sessions_without_cdr)", "sessions"),),
                    kind="stat",
                    description="Ended longer ago than sessions.cdr_missing_after_seconds, still without a CDR.",
                    width=6,
                    red_from=1,
                ),
                Panel(
                    "CDRs parked",
                    (q("sum(max by (peer) (oicp_cdrs_parked))", "parked"),),
                    kind="stat",
                    description="Given up or refused; replay with cpo.cdr.replay.",
                    width=6,
                    red_from=1,
                ),
                Panel(
                    "CDRs without session",
                    (q("max by (direction) (oicp_cdrs_without_session)", "{{direction}}"),),
                    kind="stat",
                    description="in: received for a session the ledger did not know; out: submitted so.",
                    width=12,
                ),
                Panel(
                    "Sessions by state",
                    (q("max by (state) (oicp_sessions)", "{{state}}"),),
                    width=12,
                ),
                Panel(
                    "Session calls/s by operation and status code",
                    (
                        q(
                            "sum by (operation, status_code) (rate(oicp_requests_total{operation=~"
                            '"AuthorizeRemote.*|ChargingNotification"}[$__rate_interval]))',
                            "{{operation}} {{status_code}}",
                        ),
                    ),
                    unit="reqps",
                    description="Remote start/stop and reservations (CPO face), charging notifications (EMP face).",
                    width=12,
                ),
            ),
        ),
        Row(
            "CDRs",
            (
                Panel(
                    "CDRs pending per EMP peer",
                    (q("max by (peer) (oicp_cdrs_pending)", "{{peer}}"),),
                    description="CPO role: waiting for the EMP's acknowledgement.",
                    width=8,
                ),
                Panel(
                    "CDRs parked per EMP peer",
                    (q("max by (peer) (oicp_cdrs_parked)", "{{peer}}"),),
                    width=8,
                ),
                Panel(
                    "CDRs sent / parked per second",
                    (
                        q("sum by (peer) (rate(oicp_cdrs_sent_total[$__rate_interval]))", "{{peer}} sent"),
                        q("sum by (peer) (rate(oicp_cdrs_parked_total[$__rate_interval]))", "{{peer}} parked"),
                    ),
                    unit="ops",
                    description="CPO role: acknowledged by the EMP peer / given up or refused.",
                    width=8,
                ),
                Panel(
                    "CDRs received/s by outcome",
                    (
                        q(
                            "sum by (peer, outcome) (rate(oicp_cdrs_received_total[$__rate_interval]))",
                            "{{peer}} {{outcome}}",
                        ),
                    ),
                    unit="ops",
                    description="EMP role: stored, duplicate (idempotent repeat), conflict (refused 400), refused.",
                    width=12,
                ),
                Panel(
                    "CDR delivery calls/s by outcome",
                    (
                        q(
                            "sum by (peer, outcome) (rate(oicp_peer_delivery_requests_total"
                            '{operation="ChargeDetailRecord"}[$__rate_interval]))',
                            "{{peer}} {{outcome}}",
                        ),
                    ),
                    unit="reqps",
                    width=12,
                ),
            ),
        ),
        Row(
            "Authorizations",
            (
                Panel(
                    "Authorizations/s by result",
                    (
                        q(
                            "sum by (role, operation, result) (rate(oicp_authorizations_total[$__rate_interval]))",
                            "{{role}} {{operation}} {{result}}",
                        ),
                    ),
                    unit="ops",
                    description="role emp: this node decided; role cpo: this node asked (or used offline data).",
                    width=24,
                ),
            ),
        ),
    ),
)

DASHBOARDS: tuple[Dashboard, ...] = (OVERVIEW, PEER_VIEW, SESSIONS_CDRS)


# ---- the JSON model --------------------------------------------------------------------------------


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {
            "refId": chr(ord("A") + i),
            "datasource": DATASOURCE,
            "editorMode": "code",
            "expr": query.expr,
            "legendFormat": query.legend or "__auto",
            "range": True,
        }
        for i, query in enumerate(panel.queries)
    ]
    steps: list[dict[str, Any]] = [{"color": "green" if panel.red_from is not None else "text", "value": None}]
    if panel.red_from is not None:
        steps.append({"color": "red", "value": panel.red_from})
    defaults: dict[str, Any] = {
        "unit": panel.unit,
        "mappings": panel.mappings,
        "thresholds": {"mode": "absolute", "steps": steps},
    }
    if panel.links_to_peer:
        defaults["links"] = [
            {
                "title": "Peer ${__field.labels.peer}",
                "url": f"/d/{PEER_DASHBOARD_UID}?var-peer=${{__field.labels.peer}}&${{__url_time_range}}",
            }
        ]
    if panel.kind == "timeseries":
        defaults["color"] = {"mode": "palette-classic"}
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
        options: dict[str, Any] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    else:
        defaults["color"] = {"mode": "thresholds"}
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value" if panel.red_from is None and not panel.mappings else "background",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        }
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": targets,
    }


def dashboard_json(dashboard: Dashboard) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    for row in dashboard.rows:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        x, line_height = 0, 0
        for panel in row.panels:  # left to right, wrapping at the grid's width
            if x + panel.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            panels.append(panel_json(panel, len(panels) + 1, x, y))
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "id": None,
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": TAGS,
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,  # shared crosshair
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "title": "OICP dashboards",
                "type": "dashboards",
                "tags": TAGS,
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "templating": {"list": list(dashboard.variables)},
        "panels": panels,
    }


def render() -> dict[str, str]:
    """File name → content of every dashboard file (what the staleness test compares)."""
    return {f"{d.uid}.json": json.dumps(dashboard_json(d), indent=2, ensure_ascii=False) + "\n" for d in DASHBOARDS}


def main() -> int:
    OUT_DIR.mkdir(exist_ok=True)
    for name, content in render().items():
        (OUT_DIR / name).write_text(content, encoding="utf-8")
        print(f"wrote {OUT_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
