"""The monitoring files under test (deploy/prometheus/, deploy/grafana/), what the tests derive from
them, and a real Prometheus to run them in.

Shared by the static checks (tests/unit/test_monitoring_files.py: promtool, the metric contract, the
dashboards' consistency) and the live one (tests/e2e/test_monitoring.py: a Prometheus scraping running
nodes with the compose file's own jobs and the real alert rules).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
import yaml

from shared.metrics import NODE_STATE_GAUGES
from shared.settings import WORKER_SERVICES
from tests.support.nodes import POLL_INTERVAL, REPO, NodeSpec, free_port

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARD_DIR = GRAFANA_DIR / "dashboards"
DASHBOARD_GENERATOR = GRAFANA_DIR / "dashboards.py"
DATASOURCE_PROVISIONING = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yaml"
DASHBOARD_PROVISIONING = GRAFANA_DIR / "provisioning" / "dashboards" / "oicp.yaml"
OPERATIONS_DOC = REPO / "docs" / "operations.md"
RUNBOOK_PREFIX = "docs/operations.md#"

#: The services of a node, as the scrape jobs label them (``service``).
NODE_SERVICES = ("gateway", *WORKER_SERVICES)

# ---- the metric contract ----------------------------------------------------------------------------

#: Counters and gauges by their full names (shared/metrics.py, FastStream's middleware, Prometheus' own).
PLAIN_METRICS = frozenset(
    {
        # process-local (sum over processes)
        "oicp_requests_total",
        "oicp_requests_rejected_total",
        "oicp_rate_limited_total",
        "oicp_peer_delivery_requests_total",
        "oicp_cdrs_received_total",
        "oicp_cdrs_sent_total",
        "oicp_cdrs_parked_total",
        "oicp_authorizations_total",
        "oicp_dead_lettered_total",
        "oicp_handler_outage_retries_total",
        "oicp_consumers_recovered_total",
        "oicp_journal_entries_total",
        "oicp_journal_dropped_total",
        # node-wide, exported by the gateway (max over gateway replicas)
        "oicp_sessions",
        "oicp_sessions_without_cdr",
        "oicp_cdrs_pending",
        "oicp_cdrs_parked",
        "oicp_cdrs_without_session",
        "oicp_peer_delivery_backlog",
        "oicp_peer_last_success_timestamp_seconds",
        "oicp_peer_consecutive_failures",
        "oicp_peer_lane_state",
        "oicp_queue_messages",
        "oicp_queue_consumers",
        "oicp_redis_up",
        "oicp_rabbitmq_up",
        "oicp_journal_unsealed_entries",
        "oicp_journal_oldest_unsealed_age_seconds",
        "oicp_peer_probe_success",
        "oicp_peer_probe_duration_seconds",
        "oicp_peer_probe_timestamp_seconds",
        "oicp_peer_certificate_expiry_timestamp_seconds",
        # FastStream's RabbitPrometheusMiddleware, per worker process
        "faststream_received_messages_total",
        "faststream_received_processed_messages_total",
        "faststream_received_processed_messages_exceptions_total",
        "faststream_published_messages_total",
        "faststream_received_messages_in_process",
        # Prometheus' own per target
        "up",
    }
)
#: Histograms by their base names (queried as ``_bucket``, ``_sum``, ``_count``).
HISTOGRAMS = frozenset(
    {
        "oicp_request_duration_seconds",
        "oicp_peer_delivery_duration_seconds",
        "oicp_evse_status_propagation_seconds",
        "faststream_received_processed_messages_duration_seconds",
    }
)
#: Exported by the gateway from Redis and RabbitMQ: the same on every replica, never to be summed.
NODE_WIDE_GAUGES = frozenset(NODE_STATE_GAUGES)

_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"inf", "nan", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_HISTOGRAM_SUFFIX = re.compile(r"_(?:bucket|sum|count)$")
_NAME_MATCHER = re.compile(r'__name__\s*=~?\s*"([^"]*)"')


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what
    remains once strings, label matchers, ranges and grouping clauses are gone, minus function calls
    and keywords; plus the alternatives of ``__name__`` matchers. Good enough for the dashboards' and
    alerts' expressions; promtool checks the syntax."""
    names = {name for match in _NAME_MATCHER.finditer(expr) for name in match.group(1).split("|")}
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def unknown_metrics(expr: str) -> set[str]:
    """Names in ``expr`` that are neither in the contract nor a histogram series of it."""
    unknown = set()
    for name in metric_names(expr):
        if name in PLAIN_METRICS:
            continue
        base = _HISTOGRAM_SUFFIX.sub("", name)
        if base != name and base in HISTOGRAMS:
            continue
        unknown.add(name)
    return unknown


# ---- what the dashboards and the alert rules ask ------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """One query of the monitoring: a dashboard panel's target, a template variable, or an alert."""

    origin: str  # "dashboard 'OICP peer' / panel 'Backlog' / A", "alert OicpPeerDown"
    expr: str


def dashboards() -> dict[str, dict[str, Any]]:
    """File name → the committed dashboard JSON."""
    return {p.name: orjson.loads(p.read_bytes()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that queries (rows left out; panels inside collapsed rows included)."""
    found = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found += panel.get("panels", [])
        else:
            found.append(panel)
    return found


def label_values_selector(query: str) -> str | None:
    """The series selector of a Grafana ``label_values(<selector>, <label>)`` variable query."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*[a-zA-Z_]\w*\s*\)\s*", query, re.DOTALL)
    return match.group(1) if match else None


def dashboard_expressions() -> list[Expression]:
    found = []
    for dashboard in dashboards().values():
        for panel in panels(dashboard):
            for target in panel["targets"]:
                origin = f"dashboard {dashboard['title']!r} / panel {panel['title']!r} / {target['refId']}"
                found.append(Expression(origin, target["expr"]))
        for variable in dashboard["templating"]["list"]:
            query = variable.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            selector = label_values_selector(query or "")
            if selector:
                found.append(Expression(f"dashboard {dashboard['title']!r} / variable ${variable['name']}", selector))
    return found


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def alert_expressions() -> list[Expression]:
    return [Expression(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]


def substitute(expr: str, rate_interval: str = "1m") -> str:
    """A panel's expression as Grafana sends it: its interval variables filled in, every template
    variable by its "All" value (``.*``)."""
    for variable in ("$__rate_interval", "$__interval", "$__range"):
        expr = expr.replace(variable, rate_interval)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


_COMPARISON = re.compile(r"\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?-?[0-9.]+(?:e[+-]?\d+)?\s*$")


def without_threshold(expr: str) -> str:
    """``<expression> > 60`` → ``<expression>``: what an alert compares (for alerts a test cannot make
    true, it can still prove that the compared series exist)."""
    stripped = _COMPARISON.sub("", expr.strip())
    assert stripped != expr.strip(), f"no trailing comparison in {expr!r}"
    return stripped


# ---- the binaries -------------------------------------------------------------------------------------


def require_binary(name: str) -> str:
    """The path of ``name``; fails (never skips) the test when it is missing: monitoring that is not
    tested is not known to work."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: run `make services` (deploy/scripts/ensure-services.sh installs the "
            "Debian package `prometheus`, which brings prometheus and promtool) or `apt-get install prometheus`",
            pytrace=False,
        )
    return path


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


# ---- a scrape configuration for nodes on this machine -------------------------------------------------


def job_service(job: dict[str, Any]) -> str | None:
    """The ``service`` label a job gives its targets (by relabelling or as a static label)."""
    for rule in job.get("relabel_configs", []):
        if rule.get("target_label") == "service":
            return str(rule["replacement"])
    for static in job.get("static_configs", []):
        if "service" in static.get("labels", {}):
            return str(static["labels"]["service"])
    return None


def target_of(node: NodeSpec, service: str) -> str:
    """host:port of the service's /metrics (the node knows where each service serves it)."""
    return urlsplit(node.metrics_url(service)).netloc


def local_config(nodes: list[NodeSpec], token_file: Path, listen: str, interval: str = "1s") -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml for nodes on 127.0.0.1: the same jobs (names, paths, token,
    relabelling) with static targets instead of the compose DNS names, every node's process in its
    service's job (labelled ``node``), the real alert rules, and a fast interval. The nodes must share
    one monitoring token (a job has one). RabbitMQ's own job is left out: no panel or alert uses the
    broker's metrics (the gateway reports the node's queues), and the plugin may be off locally."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"] = {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval}
    config["rule_files"] = [str(ALERTS)]
    jobs = []
    for job in config["scrape_configs"]:
        service = job_service(job)
        if service in NODE_SERVICES:
            job.pop("dns_sd_configs", None)
            job["static_configs"] = [
                {"targets": [target_of(node, service)], "labels": {"node": node.name}} for node in nodes
            ]
            job["authorization"]["credentials_file"] = str(token_file)
        elif service == "prometheus":
            job["static_configs"] = [{"targets": [listen], "labels": {"service": "prometheus"}}]
        else:
            continue
        jobs.append(job)
    config["scrape_configs"] = jobs
    return config


# ---- a real Prometheus ---------------------------------------------------------------------------------


class PrometheusServer:
    """The installed ``prometheus`` binary on a free port with its own storage in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.listen = f"127.0.0.1:{self.port}"
        self.config_path = directory / "prometheus.yml"
        self.log_path = directory / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    async def start(self, timeout: float = 30) -> None:
        binary = require_binary("prometheus")
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address={self.listen}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with self.http.get(f"{self.url}/-/ready") as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus not ready in {timeout}s:\n{self.log_tail()}")
            await asyncio.sleep(POLL_INTERVAL)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    async def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``'s data (fails on an error answer, e.g. a query that does not parse)."""
        assert self.http is not None
        async with self.http.get(f"{self.url}/api/v1/{path}", params=params) as response:
            body = await response.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's series (a vector; a scalar counts as one)."""
        data = await self.api("query", query=expr)
        if data["resultType"] == "vector":
            return list(data["result"])
        return [{"metric": {}, "value": data["result"]}]

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
