"""The node configuration: the shipped files load, invalid files are refused with the key named,
environment overrides win, processes exit with code 2 on a bad file, and peer tokens stay secret."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import CONFIG_ENV, ConfigError, NodeSettings, PeerConfig, Role, load_settings

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "deploy" / "config"

VALID: dict[str, Any] = {
    "name": "unit-node",
    "operator_ids": ["DE*ABC"],
    "provider_ids": ["DE-XYZ"],
    "oicp": {"host": "127.0.0.1", "port": 7001},
    "internal": {"host": "127.0.0.1", "port": 7101, "token": "internal-secret"},
    "rabbitmq": {"url": "amqp://guest:guest@127.0.0.1:5672/", "prefix": "unit."},
    "redis": {"url": "redis://127.0.0.1:6379/3", "key_prefix": "unit:"},
    "peers": [
        {
            "id": "DE-GDF",
            "role": "emp",
            "base_url": "http://127.0.0.1:8001",
            "inbound_token": "emp-calls-us",
            "outbound_token": "we-call-emp",
            "push": ["PushEvseStatus"],
        },
        {"id": "DE*GEF", "role": "cpo", "base_url": "http://127.0.0.1:9001"},
    ],
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OICP_P2P_* variable of the surrounding shell may leak into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("OICP_P2P_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, data: Any, name: str = "node.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def config(**changes: Any) -> dict[str, Any]:
    """VALID with top-level keys replaced (None removes the key)."""
    data = copy.deepcopy(VALID)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def refused(tmp_path: Path, data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, data))
    return str(info.value)


# ---- the shipped files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "roles"),
    [
        ("demo-cpo.yaml", {Role.CPO}),
        ("demo-emp.yaml", {Role.EMP}),
        ("example.yaml", {Role.CPO, Role.EMP}),
        ("compose-cpo.yaml", {Role.CPO}),
    ],
)
def test_shipped_configuration_loads(file: str, roles: set[Role]) -> None:
    settings = load_settings(CONFIG_DIR / file)
    assert settings.roles == roles
    assert settings.oicp.port != settings.internal.port
    assert settings.peers


def test_shipped_files_are_all_tested() -> None:
    assert {p.name for p in CONFIG_DIR.glob("*.yaml")} == {
        "demo-cpo.yaml",
        "demo-emp.yaml",
        "example.yaml",
        "compose-cpo.yaml",
    }


def test_demo_nodes_are_each_others_peers() -> None:
    cpo = load_settings(CONFIG_DIR / "demo-cpo.yaml")
    emp = load_settings(CONFIG_DIR / "demo-emp.yaml")
    (emp_peer,) = cpo.peers
    (cpo_peer,) = emp.peers
    assert emp_peer.id in emp.provider_ids and cpo_peer.id in cpo.operator_ids
    # the token the EMP presents to the CPO is the one the CPO expects, and the reverse
    assert emp_peer.inbound_token is not None and cpo_peer.outbound_token is not None
    assert emp_peer.inbound_token.get_secret_value() == cpo_peer.outbound_token.get_secret_value()
    assert emp_peer.outbound_token is not None and cpo_peer.inbound_token is not None
    assert emp_peer.outbound_token.get_secret_value() == cpo_peer.inbound_token.get_secret_value()
    assert cpo.rabbitmq.prefix != emp.rabbitmq.prefix and cpo.redis.key_prefix != emp.redis.key_prefix


def test_file_named_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(CONFIG_DIR / "demo-emp.yaml"))
    assert load_settings().name == "demo-emp"


def test_valid_base_loads(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, VALID))
    assert settings.roles == {Role.CPO, Role.EMP}
    assert [p.key for p in settings.peers] == ["DEGDF", "DEGEF"]


# ---- invalid files ------------------------------------------------------------------------------


@pytest.mark.parametrize("port", [0, 65536, "not-a-port"])
def test_wrong_port(tmp_path: Path, port: Any) -> None:
    message = refused(tmp_path, config(oicp={"port": port}))
    assert "oicp.port" in message
    assert str(tmp_path / "node.yaml") in message


def test_missing_required_section(tmp_path: Path) -> None:
    assert "internal: Field required" in refused(tmp_path, config(internal=None))


def test_missing_internal_token(tmp_path: Path) -> None:
    assert "internal.token" in refused(tmp_path, config(internal={"port": 7101}))


@pytest.mark.parametrize(
    ("peer", "needle"),
    [
        ({"id": "DE-XYZ", "role": "cpo", "base_url": "http://a.example"}, "not a valid OperatorID for a cpo peer"),
        ({"id": "DE*AB", "role": "emp", "base_url": "http://a.example"}, "not a valid ProviderID for a emp peer"),
    ],
)
def test_bad_peer_id_for_its_role(tmp_path: Path, peer: dict[str, Any], needle: str) -> None:
    message = refused(tmp_path, config(peers=[peer]))
    assert "peers.0" in message
    assert peer["id"] in message
    assert needle in message


def test_bad_peer_id_names_the_id_key(tmp_path: Path) -> None:
    message = refused(tmp_path, config(peers=[{"id": "DE-XYZ", "role": "cpo", "base_url": "http://a.example"}]))
    assert "peers.0.id:" in message


def test_a_peer_with_the_nodes_own_id_is_refused(tmp_path: Path) -> None:
    own = VALID["operator_ids"][0]
    message = refused(tmp_path, config(peers=[{"id": own, "role": "cpo", "base_url": "http://a.example"}]))
    assert "peers.0.id" in message and "own ID" in message


def test_second_peer_is_located_by_index(tmp_path: Path) -> None:
    peers = [*VALID["peers"], {"id": "DE-XYZ", "role": "cpo", "base_url": "http://a.example"}]
    assert "peers.2" in refused(tmp_path, config(peers=peers))


def test_bad_own_operator_id(tmp_path: Path) -> None:
    assert "operator_ids.0" in refused(tmp_path, config(operator_ids=["DE-ABC"]))


def test_evse_pushes_only_for_emp_peers(tmp_path: Path) -> None:
    peer = {"id": "DE*GEF", "role": "cpo", "base_url": "http://a.example", "push": ["PushEvseStatus"]}
    message = refused(tmp_path, config(peers=[peer]))
    assert "peers.0" in message and "PushEvseStatus can only be pushed to EMP peers" in message


def test_authentication_data_only_for_cpo_peers(tmp_path: Path) -> None:
    peer = {"id": "DE-GDF", "role": "emp", "base_url": "http://a.example", "push": ["PushAuthenticationData"]}
    message = refused(tmp_path, config(peers=[peer]))
    assert "peers.0" in message and "PushAuthenticationData can only be pushed to CPO peers" in message


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("sessions", "backend_timeout_seconds", 0),
        ("sessions", "default_reservation_minutes", 100),
        ("authorization", "fallback", "maybe"),
        ("authorization", "broadcast_timeout_seconds", -1),
    ],
)
def test_authorization_and_session_settings_are_validated(
    tmp_path: Path, section: str, key: str, value: object
) -> None:
    assert f"{section}.{key}" in refused(tmp_path, config(**{section: {key: value}}))


def test_bad_peer_url(tmp_path: Path) -> None:
    peer = {"id": "DE*GEF", "role": "cpo", "base_url": "not a url"}
    assert "peers.0.base_url" in refused(tmp_path, config(peers=[peer]))


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (config(colour="blue"), "colour"),
        (config(redis={"url": "redis://127.0.0.1:6379/0", "keyprefix": "x:"}), "redis.keyprefix"),
        (config(peers=[{**VALID["peers"][1], "token": "x"}]), "peers.0.token"),
    ],
)
def test_unknown_key(tmp_path: Path, data: dict[str, Any], key: str) -> None:
    message = refused(tmp_path, data)
    assert f"{key}: Extra inputs are not permitted" in message


def test_duplicate_peer(tmp_path: Path) -> None:
    # DE-GDF and DEGDF are the same ProviderID (separators do not count).
    twice = [VALID["peers"][0], {**VALID["peers"][0], "id": "DEGDF", "base_url": "http://b.example"}]
    message = refused(tmp_path, config(peers=twice))
    assert "peers:" in message and "configured twice" in message


def test_same_id_in_both_roles_is_not_a_duplicate(tmp_path: Path) -> None:
    peers = [
        {"id": "DE*GEF", "role": "cpo", "base_url": "http://a.example"},
        {"id": "DE*GEF", "role": "emp", "base_url": "http://a.example"},
    ]
    assert len(load_settings(write(tmp_path, config(peers=peers))).peers) == 2


def test_node_without_role(tmp_path: Path) -> None:
    message = refused(tmp_path, config(operator_ids=None, provider_ids=None))
    assert "operator_ids" in message and "provider_ids" in message


def test_node_with_empty_roles(tmp_path: Path) -> None:
    message = refused(tmp_path, config(operator_ids=[], provider_ids=[]))
    assert "needs at least one of operator_ids" in message


def test_oicp_port_equals_internal_port(tmp_path: Path) -> None:
    message = refused(tmp_path, config(internal={"port": 7001, "token": "x"}))
    assert "oicp.port" in message and "internal.port" in message


@pytest.mark.parametrize("text", ["name: [unclosed\n", "a: b: c\n", "\tname: tab\n"])
def test_not_yaml(tmp_path: Path, text: str) -> None:
    message = refused(tmp_path, text)
    assert "is not valid YAML" in message
    assert str(tmp_path / "node.yaml") in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_not_a_mapping(tmp_path: Path, text: str) -> None:
    assert "must hold a mapping at the top level" in refused(tmp_path, text)


def test_empty_file_names_the_required_keys(tmp_path: Path) -> None:
    message = refused(tmp_path, "")
    for key in ("name", "oicp", "internal"):
        assert f"  {key}: Field required" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_missing_file_named_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist"):
        load_settings()


# ---- environment overrides ----------------------------------------------------------------------


def test_environment_merges_into_a_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, VALID)
    before = load_settings(path)
    monkeypatch.setenv("OICP_P2P_REDIS__KEY_PREFIX", "from-env:")
    after = load_settings(path)
    assert after.redis.key_prefix == "from-env:"
    # only that key changed: the rest of the section and of the file are the file's
    assert after.redis.url == "redis://127.0.0.1:6379/3"
    assert after.redis.model_dump(exclude={"key_prefix"}) == before.redis.model_dump(exclude={"key_prefix"})
    assert after.model_dump(exclude={"redis"}) == before.model_dump(exclude={"redis"})


def test_environment_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, VALID)
    monkeypatch.setenv("OICP_P2P_NAME", "renamed")
    monkeypatch.setenv("OICP_P2P_OICP__PORT", "7005")
    monkeypatch.setenv("OICP_P2P_INTERNAL__TOKEN", "token-from-env")
    monkeypatch.setenv("OICP_P2P_RABBITMQ__URL", "amqp://user:secret@rabbitmq:5672/vhost")
    monkeypatch.setenv("OICP_P2P_OPERATOR_IDS", '["DE*QQQ"]')
    settings = load_settings(path)
    assert settings.name == "renamed"
    assert settings.oicp.port == 7005 and settings.oicp.host == "127.0.0.1"
    assert settings.internal.token.get_secret_value() == "token-from-env"
    assert settings.internal.port == 7101
    assert settings.rabbitmq.url == "amqp://user:secret@rabbitmq:5672/vhost"
    assert settings.rabbitmq.prefix == "unit."
    assert settings.operator_ids == ["DE*QQQ"]


def test_environment_sets_a_section_the_file_lacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, config(delivery=None))
    monkeypatch.setenv("OICP_P2P_DELIVERY__LEASE_SECONDS", "30")
    settings = load_settings(path)
    assert settings.delivery.lease_seconds == 30
    assert settings.delivery.poll_interval_seconds == 1.0


def test_environment_completes_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A container image can ship the file without secrets and take them from the environment."""
    path = write(tmp_path, config(internal={"port": 7101}))
    monkeypatch.setenv("OICP_P2P_INTERNAL__TOKEN", "secret-from-env")
    assert load_settings(path).internal.token.get_secret_value() == "secret-from-env"


def test_invalid_environment_value_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, VALID)
    monkeypatch.setenv("OICP_P2P_OICP__PORT", "not-a-port")
    with pytest.raises(ConfigError, match=r"oicp\.port"):
        load_settings(path)


def test_environment_can_create_a_conflict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OICP_P2P_INTERNAL__PORT", "7001")
    with pytest.raises(ConfigError, match=r"oicp\.port and internal\.port must differ"):
        load_settings(write(tmp_path, VALID))


def test_unknown_key_in_environment_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OICP_P2P_REDIS__KEYPREFIX", "x:")
    with pytest.raises(ConfigError, match=r"redis\.keyprefix"):
        load_settings(write(tmp_path, VALID))


def test_settings_without_a_file_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OICP_P2P_NAME", "env-only")
    monkeypatch.setenv("OICP_P2P_PROVIDER_IDS", '["DE-XYZ"]')
    monkeypatch.setenv("OICP_P2P_OICP__PORT", "7001")
    monkeypatch.setenv("OICP_P2P_INTERNAL__PORT", "7101")
    monkeypatch.setenv("OICP_P2P_INTERNAL__TOKEN", "t")
    settings = load_settings()
    assert settings.name == "env-only" and settings.roles == {Role.EMP}


def test_no_file_and_no_environment_names_the_required_keys() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "invalid configuration in environment" in str(info.value)
    assert "name: Field required" in str(info.value)


# ---- processes ----------------------------------------------------------------------------------


def run(args: list[str], config_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("OICP_P2P_")}
    if config_file is not None:
        env[CONFIG_ENV] = str(config_file)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_service_exits_2_on_invalid_configuration(tmp_path: Path) -> None:
    bad = write(tmp_path, config(oicp={"port": 70000}))
    result = run(["-m", "services.cdr"], config_file=bad)
    assert result.returncode == 2, result.stderr
    assert "oicp.port" in result.stderr
    assert str(bad) in result.stderr


def test_service_exits_2_on_missing_configuration(tmp_path: Path) -> None:
    result = run(["-m", "services.cdr"], config_file=tmp_path / "nope.yaml")
    assert result.returncode == 2, result.stderr
    assert "does not exist" in result.stderr


def test_node_launcher_exits_2_on_invalid_configuration(tmp_path: Path) -> None:
    bad = write(tmp_path, config(internal={"port": 7001, "token": "x"}))
    result = run(["-m", "shared.node", str(bad)])
    assert result.returncode == 2, result.stderr
    assert "oicp.port and internal.port must differ" in result.stderr


def test_node_launcher_checks_every_file_before_starting_anything(tmp_path: Path) -> None:
    bad = write(tmp_path, "name: [unclosed\n", "bad.yaml")
    result = run(["-m", "shared.node", str(CONFIG_DIR / "demo-cpo.yaml"), str(bad)])
    assert result.returncode == 2, result.stderr
    assert "is not valid YAML" in result.stderr
    assert "OICP on" in result.stdout  # the good file was read, but no process was started
    assert "all processes stopped" not in result.stdout


def test_node_launcher_refuses_a_port_taken_twice_on_its_host(tmp_path: Path) -> None:
    ports = {"evse_push": 9301, "authorization": 9302, "sessions": 9303, "cdr": 9302}
    bad = write(tmp_path, config(metrics={"ports": ports}))
    result = run(["-m", "shared.node", str(bad)])
    assert result.returncode == 2, result.stderr
    assert "metrics.ports.cdr is 9302, which metrics.ports.authorization" in result.stderr
    # two demo nodes on one host: the second must not reuse the first's ports
    result = run(["-m", "shared.node", str(CONFIG_DIR / "demo-cpo.yaml"), str(CONFIG_DIR / "demo-cpo.yaml")])
    assert result.returncode == 2 and "oicp.port is 7001" in result.stderr, result.stderr


# ---- peer tokens --------------------------------------------------------------------------------

INBOUND, OUTBOUND = "inbound-secret-1", "outbound-secret-2"


def peer(**fields: Any) -> PeerConfig:
    base = {"id": "DE-GDF", "role": "emp", "base_url": "https://emp.example.com", "push": ["PushEvseStatus"]}
    return PeerConfig.model_validate({**base, **fields})


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    "tokens",
    [
        {"inbound_token": INBOUND, "outbound_token": OUTBOUND},
        {"inbound_token_sha256": sha256(INBOUND), "outbound_token": OUTBOUND},
        {"inbound_token": INBOUND},
        {},
    ],
)
def test_public_view_never_contains_a_token(tokens: dict[str, str]) -> None:
    view = peer(**tokens).public_view()
    text = json.dumps(view)
    for secret in (INBOUND, OUTBOUND, sha256(INBOUND)):
        assert secret not in text
    assert not {"inbound_token", "outbound_token", "inbound_token_sha256"} & set(view)
    assert view["has_inbound_token"] is ("inbound_token" in tokens or "inbound_token_sha256" in tokens)
    assert view["has_outbound_token"] is ("outbound_token" in tokens)
    assert view["id"] == "DE-GDF" and view["role"] == "emp" and view["push"] == ["PushEvseStatus"]


def test_storage_dict_keeps_the_inbound_token_only_as_its_digest() -> None:
    stored = peer(inbound_token=INBOUND, outbound_token=OUTBOUND).storage_dict()
    assert "inbound_token" not in stored
    assert stored["inbound_token_sha256"] == sha256(INBOUND)
    assert INBOUND not in json.dumps(stored)
    # the outbound secret is needed to call the peer, so it is kept
    assert stored["outbound_token"] == OUTBOUND


def test_storage_dict_round_trips() -> None:
    original = peer(inbound_token=INBOUND, outbound_token=OUTBOUND)
    restored = PeerConfig.model_validate_json(json.dumps(original.storage_dict()))
    assert restored.inbound_token is None
    assert restored.token_sha256 == original.token_sha256 == sha256(INBOUND)
    assert restored.outbound_token is not None and restored.outbound_token.get_secret_value() == OUTBOUND
    assert restored.public_view() == original.public_view()


def test_storage_dict_with_a_digest_only() -> None:
    stored = peer(inbound_token_sha256=sha256(INBOUND)).storage_dict()
    assert stored["inbound_token_sha256"] == sha256(INBOUND)
    assert stored["outbound_token"] is None


def test_tokens_do_not_leak_through_repr_or_settings_dump(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, VALID))
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        for secret in ("emp-calls-us", "we-call-emp", "internal-secret"):
            assert secret not in text


def test_inbound_token_digest_must_be_sha256_hex() -> None:
    with pytest.raises(ValueError, match="inbound_token_sha256"):
        peer(inbound_token_sha256="not-a-digest")


def test_node_settings_can_be_built_directly() -> None:
    """What shared.bus.asyncapi does: no file, no environment."""
    settings = NodeSettings(
        name="direct",
        operator_ids=["DE*ABC"],
        oicp={"port": 7001},
        internal={"port": 7101, "token": "t"},
    )
    assert settings.roles == {Role.CPO}


def test_cdr_fetches_only_from_cpo_peers(tmp_path: Path) -> None:
    peer = {"id": "DE-GDF", "role": "emp", "base_url": "http://a.example", "cdr_fetch_interval_seconds": 60}
    message = refused(tmp_path, config(peers=[peer]))
    assert "peers.0" in message and "cdr_fetch_interval_seconds can only be configured for CPO peers" in message


def test_cdr_settings_are_validated(tmp_path: Path) -> None:
    assert "cdr.max_attempts" in refused(tmp_path, config(cdr={"max_attempts": 0}))
