"""The deployment files stay true to the code: compose runs every service of a node, its config loads."""

from __future__ import annotations

from pathlib import Path

import yaml

from shared.node import SERVICES
from shared.settings import load_settings

REPO = Path(__file__).resolve().parents[2]


def test_compose_runs_every_service_with_a_valid_config(monkeypatch: object) -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    for name in SERVICES:
        assert services[name]["command"] == ["python", "-m", f"services.{name}"], name
        config = services[name]["environment"]["OICP_P2P_CONFIG"]
        assert config.startswith("/app/")
        assert load_settings(REPO / config.removeprefix("/app/")).name
    for infrastructure in ("rabbitmq", "redis"):
        assert "healthcheck" in services[infrastructure]
    assert "--appendonly" in services["redis"]["command"]


def test_dockerfile_installs_the_locked_dependencies() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "uv sync --frozen" in dockerfile and "COPY shared" in dockerfile and "COPY services" in dockerfile
