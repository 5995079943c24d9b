"""The monitoring files, checked without a GUI and without running nodes: Prometheus' configuration and
alert rules pass promtool; every dashboard query parses (as a recording rule, through promtool) and
selects only metrics of the contract (shared/metrics.py, FastStream's middleware); the committed
dashboards are the generator's output; datasource uids agree; every alert is documented in
docs/operations.md under the anchor its runbook_url names. What the queries return against live nodes
is tests/e2e/test_monitoring.py's job."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import prometheus_client
import pytest
import yaml

import shared.metrics
from shared.node import SERVICES
from tests.support.nodes import REPO, NodeSpec
from tests.support.prometheus import (
    ALERTS,
    DASHBOARD_DIR,
    DASHBOARD_GENERATOR,
    DASHBOARD_PROVISIONING,
    DATASOURCE_PROVISIONING,
    HISTOGRAMS,
    NODE_WIDE_GAUGES,
    OPERATIONS_DOC,
    PLAIN_METRICS,
    PROMETHEUS_CONFIG,
    RUNBOOK_PREFIX,
    alert_expressions,
    alert_rules,
    dashboard_expressions,
    dashboards,
    job_service,
    local_config,
    metric_names,
    panels,
    promtool,
    substitute,
    unknown_metrics,
)

SECRET = "/run/secrets/monitoring_token"
SEVERITIES = {"critical", "warning"}
GRID_WIDTH = 24


def generator() -> ModuleType:
    """deploy/grafana/dashboards.py, imported from its path (deploy/ is not a package)."""
    spec = importlib.util.spec_from_file_location("oicp_grafana_dashboards", DASHBOARD_GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def provisioned_datasource() -> dict[str, Any]:
    [datasource] = yaml.safe_load(DATASOURCE_PROVISIONING.read_text())["datasources"]
    return dict(datasource)


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            found.add(slug)
    return found


# ---- Prometheus ------------------------------------------------------------------------------------


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    # promtool opens the credentials file and resolves rule_files against the config's directory:
    # a copy with the token in a temp file, next to a copy of the rules.
    token = tmp_path / "monitoring_token"
    token.write_text("token\n")
    text = PROMETHEUS_CONFIG.read_text()
    assert SECRET in text
    (tmp_path / "prometheus.yml").write_text(text.replace(SECRET, str(token)))
    (tmp_path / ALERTS.name).write_text(ALERTS.read_text())
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_alert_rules_pass_promtool() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(alert_rules())} rules found" in result.stdout


def test_scrape_jobs_cover_every_service_of_the_node() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == [ALERTS.name]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    by_service = {job_service(job): name for name, job in jobs.items()}
    assert set(SERVICES) <= set(by_service), "every service of shared.node is scraped"
    compose_node = yaml.safe_load((REPO / "deploy" / "config" / "compose-cpo.yaml").read_text())
    for service in SERVICES:
        name = by_service[service]
        job = jobs[name]
        assert name == f"oicp-{service.replace('_', '-')}", "the dashboards select job=~'oicp-.*'"
        assert job["authorization"]["credentials_file"] == SECRET
        [discovery] = job["dns_sd_configs"]
        # compose DNS: one A record per replica of the service
        assert discovery["names"] == [service] and discovery["type"] == "A"
        expected = (
            compose_node["internal"]["port"] if service == "gateway" else compose_node["metrics"]["ports"][service]
        )
        assert discovery["port"] == expected, f"{service}: the port compose-cpo.yaml gives it"
    assert {"rabbitmq", "prometheus"} <= set(by_service)


def test_the_local_scrape_config_passes_promtool(tmp_path: Path) -> None:
    """The e2e test's configuration (the compose jobs with static targets) is a valid one too."""
    token = tmp_path / "token"
    token.write_text("token\n")
    nodes = [NodeSpec("monitored-a"), NodeSpec("monitored-b")]
    config = local_config(nodes, token, "127.0.0.1:9999")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {job["job_name"] for job in config["scrape_configs"]} >= {f"oicp-{s.replace('_', '-')}" for s in SERVICES}


# ---- alerts ----------------------------------------------------------------------------------------


def test_every_alert_is_labelled_annotated_and_documented() -> None:
    doc_anchors = anchors(OPERATIONS_DOC.read_text())
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), "alert names are unique"
    for rule in alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"Oicp[A-Z]\w+", name), name
        assert rule.get("for"), f"{name}: a 'for' keeps one bad scrape from paging"
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations.get("summary") and annotations.get("description"), name
        assert annotations["runbook_url"] == f"{RUNBOOK_PREFIX}{name.lower()}", name
        assert name.lower() in doc_anchors, f"docs/operations.md has no section for {name}"


def test_the_operations_page_documents_only_existing_alerts() -> None:
    documented = {a for a in anchors(OPERATIONS_DOC.read_text()) if a.startswith("oicp") and " " not in a}
    assert documented - {rule["alert"].lower() for rule in alert_rules()} == set()


# ---- dashboards ------------------------------------------------------------------------------------


def test_the_committed_dashboards_are_the_generators_output() -> None:
    rendered = generator().render()
    committed = {p.name: p.read_text(encoding="utf-8") for p in DASHBOARD_DIR.glob("*.json")}
    assert set(committed) == set(rendered), "run `python deploy/grafana/dashboards.py`"
    for name, content in rendered.items():
        assert committed[name] == content, f"{name} is stale: run `python deploy/grafana/dashboards.py`"


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    """promtool parses recording rules: every panel query (variables filled in as Grafana does) as one."""
    expressions = dashboard_expressions()
    rules = [{"record": f"oicp_dashboard:query_{i}", "expr": substitute(e.expr)} for i, e in enumerate(expressions)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    if result.returncode != 0:
        detail = "\n".join(f"query_{i}: {e.origin}: {e.expr}" for i, e in enumerate(expressions))
        pytest.fail(f"{result.stdout}{result.stderr}\n{detail}")
    assert f"{len(rules)} rules found" in result.stdout


def test_every_query_selects_metrics_of_the_contract() -> None:
    """A typo in a metric name fails here instead of showing an empty panel."""
    problems = []
    for e in dashboard_expressions() + alert_expressions():
        if not metric_names(e.expr):
            problems.append(f"{e.origin} selects no metric")
        if unknown := unknown_metrics(e.expr):
            problems.append(f"{e.origin}: not in the contract: {sorted(unknown)}")
    assert problems == []


def test_the_contract_is_what_the_code_defines() -> None:
    """The oicp_* names the monitoring may use are exactly those shared/metrics.py defines."""
    defined = set(shared.metrics.NODE_STATE_GAUGES)
    for value in vars(shared.metrics).values():
        if isinstance(value, prometheus_client.Counter):
            defined.add(f"{value._name}_total")
        elif isinstance(value, prometheus_client.Histogram):
            defined.add(value._name)
    contract = {n for n in PLAIN_METRICS | HISTOGRAMS if n.startswith("oicp_")}
    assert contract == defined
    assert set(shared.metrics.NODE_STATE_GAUGES) == NODE_WIDE_GAUGES


def test_node_wide_gauges_are_never_summed() -> None:
    """Every gateway replica exports the same node-wide values: sum would multiply them."""
    for e in dashboard_expressions() + alert_expressions():
        for gauge in NODE_WIDE_GAUGES:
            assert not re.search(rf"\bsum\s*(?:by\s*\([^)]*\)\s*)?\(\s*{gauge}\b", e.expr), (
                f"{e.origin}: sum of {gauge}"
            )


def test_every_panel_uses_the_provisioned_datasource() -> None:
    datasource = provisioned_datasource()
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    uid = datasource["uid"]
    assert generator().DATASOURCE_UID == uid
    for name, dashboard in dashboards().items():
        for panel in panels(dashboard):
            assert panel["datasource"] == {"type": "prometheus", "uid": uid}, f"{name}: {panel['title']}"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == uid, f"{name}: {panel['title']}"
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                assert variable["datasource"]["uid"] == uid, f"{name}: ${variable['name']}"


def test_dashboards_have_unique_pinned_uids_and_are_provisioned() -> None:
    uids = [d["uid"] for d in dashboards().values()]
    assert len(uids) == len(set(uids)) == 3
    for name, dashboard in dashboards().items():
        assert name == f"{dashboard['uid']}.json"
        assert dashboard["id"] is None, "provisioned dashboards carry no database id"
        assert 36 <= dashboard["schemaVersion"] <= 41
    [provider] = yaml.safe_load(DASHBOARD_PROVISIONING.read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_panels_are_laid_out_on_the_grid_without_overlapping() -> None:
    for name, dashboard in dashboards().items():
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), name
        cells: set[tuple[int, int]] = set()
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= GRID_WIDTH, (name, panel["title"])
            area = {
                (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not cells & area, f"{name}: {panel['title']} overlaps another panel"
            cells |= area
        for panel in panels(dashboard):
            assert panel["title"] and panel["targets"], (name, panel["title"])
            assert panel["type"] in {"timeseries", "stat"}
            assert panel["fieldConfig"]["defaults"]["unit"], (name, panel["title"])


def test_the_peer_dashboard_is_templated_by_peer() -> None:
    dashboard = dashboards()["oicp-peer.json"]
    [variable] = dashboard["templating"]["list"]
    assert variable["name"] == "peer" and variable["multi"] and variable["includeAll"]
    assert variable["allValue"] == ".*"
    for panel in panels(dashboard):
        for target in panel["targets"]:
            assert 'peer=~"$peer"' in target["expr"], f"{panel['title']}: not filtered by the peer variable"
