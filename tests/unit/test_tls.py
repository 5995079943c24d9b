"""TLS settings are validated with the key named, certificates name peers by the configured field,
client and server contexts are rebuilt when their files change, and the TLS demo configs load with
the certificates ``make certs`` writes."""

from __future__ import annotations

import copy
import os
import re
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.gateway.tls import ServerTls, certificate_identities
from shared.peers.tls import ClientContexts
from shared.settings import ConfigError, IdentityField, PeerConfig, load_settings
from tests.support.certs import Authority, Issued
from tests.support.tls_nodes import replace_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("OICP_P2P_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ca = Authority.create(tmp_path_factory.mktemp("pki"))
    return {
        "ca": ca,
        "server": ca.issue("server", "server.localhost", server=True),
        "server2": ca.issue("server2", "server2.localhost", server=True),
        "client": ca.issue("client", "DE*ABC", san=["DNS:abc.example", "URI:urn:oicp:DE*ABC"]),
    }


def node(pki: dict[str, Any], **tls: Any) -> dict[str, Any]:
    server: Issued = pki["server"]
    client: Issued = pki["client"]
    return {
        "name": "tls-unit",
        "operator_ids": ["DE*XYZ"],
        "oicp": {
            "port": 7001,
            "tls": {
                "cert_file": str(server.cert),
                "key_file": str(server.key),
                "client_ca_file": str(pki["ca"].cert),
                **tls,
            },
        },
        "internal": {"port": 7101, "token": "t"},
        "peers": [
            {
                "id": "DE-GDF",
                "role": "emp",
                "base_url": "https://127.0.0.1:8001",
                "certificate_identity": "DE-GDF",
                "tls": {
                    "client_cert_file": str(client.cert),
                    "client_key_file": str(client.key),
                    "ca_file": str(pki["ca"].cert),
                },
            }
        ],
    }


def load(tmp_path: Path, data: dict[str, Any]) -> Any:
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_settings(path)


def test_a_complete_tls_configuration_loads(tmp_path: Path, pki: dict[str, Any]) -> None:
    settings = load(tmp_path, node(pki))
    assert settings.oicp.tls.client_certificates.value == "required"
    assert settings.oicp.tls.identity_field is IdentityField.SUBJECT_CN
    assert settings.peers[0].auth.value == "either"


def broken(pki: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(node(pki))
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("oicp", "tls", "cert_file"), "/nonexistent/server.pem", "oicp.tls.cert_file: Value error, file /nonexistent"),
        (("oicp", "tls", "client_ca_file"), "/nonexistent/ca.pem", "oicp.tls.client_ca_file: Value error, file"),
        (("oicp", "tls", "client_ca_file"), None, "client_certificates: required needs client_ca_file"),
        (("oicp", "tls", "client_certificates"), "sometimes", "oicp.tls.client_certificates"),
        (("oicp", "tls", "identity_field"), "email", "oicp.tls.identity_field"),
        (("oicp", "tls", "reload_interval_seconds"), 0, "oicp.tls.reload_interval_seconds"),
        (("peers", 0, "tls", "client_key_file"), None, "client_cert_file and client_key_file go together"),
        (("peers", 0, "tls", "ca_file"), "/nonexistent/ca.pem", "peers.0.tls.ca_file: Value error, file"),
        (("peers", 0, "base_url"), "http://127.0.0.1:8001", "is not https"),
        (("peers", 0, "auth"), "certificates", "peers.0.auth"),
    ],
)
def test_invalid_tls_settings_name_the_key(
    tmp_path: Path, pki: dict[str, Any], path: tuple[Any, ...], value: Any, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(tmp_path, broken(pki, path, value))


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path: Path, pki: dict[str, Any]) -> None:
    data = broken(pki, ("oicp", "tls", "key_file"), str(pki["server2"].key))
    with pytest.raises(ConfigError, match="do not load as certificate and key"):
        load(tmp_path, data)


def test_certificate_identities_need_client_certificates_and_are_unique(tmp_path: Path, pki: dict[str, Any]) -> None:
    data = broken(pki, ("oicp", "tls", "client_certificates"), "none")
    del data["oicp"]["tls"]["client_ca_file"]
    with pytest.raises(ConfigError, match="must be required or optional to identify peers by certificate"):
        load(tmp_path, data)
    data = node(pki)
    data["peers"].append(
        {"id": "DE-OTH", "role": "emp", "base_url": "https://x.example", "certificate_identity": "DE-GDF"}
    )
    with pytest.raises(ConfigError, match=re.escape("peers.1.certificate_identity: 'DE-GDF' is peers.0's already")):
        load(tmp_path, data)


def test_peer_auth_needs_the_matching_credential() -> None:
    base = {"id": "DE-GDF", "role": "emp", "base_url": "http://127.0.0.1:8001"}
    with pytest.raises(ValueError, match="auth: certificate needs certificate_identity"):
        PeerConfig.model_validate({**base, "auth": "certificate"})
    with pytest.raises(ValueError, match="auth: token needs inbound_token"):
        PeerConfig.model_validate({**base, "auth": "token"})
    peer = PeerConfig.model_validate({**base, "auth": "token", "inbound_token": "secret"})
    assert "inbound_token" not in peer.storage_dict() and peer.storage_dict()["inbound_token_sha256"]


def test_certificate_identities_by_field() -> None:
    cert = {
        "subject": ((("countryName", "DE"),), (("commonName", "DE*ABC"),)),
        "subjectAltName": (("DNS", "abc.example"), ("DNS", "abc2.example"), ("URI", "urn:oicp:DE*ABC")),
    }
    assert certificate_identities(cert, IdentityField.SUBJECT_CN) == {"DE*ABC"}
    assert certificate_identities(cert, IdentityField.SAN_DNS) == {"abc.example", "abc2.example"}
    assert certificate_identities(cert, IdentityField.SAN_URI) == {"urn:oicp:DE*ABC"}
    assert certificate_identities({}, IdentityField.SAN_URI) == frozenset()


def test_client_contexts_are_cached_and_rebuilt_when_files_change(tmp_path: Path, pki: dict[str, Any]) -> None:
    live = tmp_path / "client"
    live.mkdir()
    replace_file(pki["client"].cert, live / "c.pem")
    replace_file(pki["client"].key, live / "c.key")
    peer = PeerConfig.model_validate(
        {
            "id": "DE-GDF",
            "role": "emp",
            "base_url": "https://127.0.0.1:8001",
            "tls": {"client_cert_file": str(live / "c.pem"), "client_key_file": str(live / "c.key")},
        }
    )
    contexts = ClientContexts(recheck_seconds=0)
    first = contexts.for_peer(peer)
    assert first is not None and first.check_hostname and first.verify_mode is ssl.CERT_REQUIRED
    assert contexts.for_peer(peer) is first  # unchanged files: the same context (and aiohttp pool)
    replace_file(pki["server"].cert, live / "c.pem")  # a half-done replacement: the key does not match
    assert contexts.for_peer(peer) is first
    replace_file(pki["server"].key, live / "c.key")
    assert contexts.for_peer(peer) is not first
    no_tls = PeerConfig.model_validate({"id": "DE-GDF", "role": "emp", "base_url": "http://127.0.0.1:8001"})
    assert contexts.for_peer(no_tls) is None


def test_server_tls_swaps_its_current_context_when_files_change(tmp_path: Path, pki: dict[str, Any]) -> None:
    live = tmp_path / "server"
    live.mkdir()
    for source, name in ((pki["server"].cert, "s.pem"), (pki["server"].key, "s.key"), (pki["ca"].cert, "ca.pem")):
        replace_file(source, live / name)
    data = node(pki, cert_file=str(live / "s.pem"), key_file=str(live / "s.key"), client_ca_file=str(live / "ca.pem"))
    settings = load(tmp_path, data)
    server = ServerTls(settings.oicp.tls.model_copy(update={"reload_interval_seconds": 1e-9}))
    first = server.current
    assert server.listening is not first and server.listening.verify_mode is ssl.CERT_REQUIRED
    assert not server.reload_if_changed()
    replace_file(pki["server2"].cert, live / "s.pem")
    assert not server.reload_if_changed() and server.current is first  # key not yet replaced
    replace_file(pki["server2"].key, live / "s.key")
    assert server.reload_if_changed() and server.current is not first


def test_shipped_tls_demo_configs_load_with_make_certs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The configs name deploy/certs/... relative to the working directory, as `make run-tls` runs."""
    subprocess.run(
        [str(ROOT / "deploy" / "scripts" / "make-certs.sh"), str(tmp_path / "deploy" / "certs")],
        check=True,
        capture_output=True,
    )
    monkeypatch.chdir(tmp_path)
    cpo = load_settings(ROOT / "deploy" / "config" / "tls" / "demo-cpo.yaml")
    emp = load_settings(ROOT / "deploy" / "config" / "tls" / "demo-emp.yaml")
    (emp_peer,) = cpo.peers
    (cpo_peer,) = emp.peers
    # each node's client certificate carries the identity the other node expects
    for peer, identity in ((cpo_peer, "DE*GEF"), (emp_peer, "DE-GDF")):
        assert peer.certificate_identity == identity and str(peer.base_url).startswith("https://")
    client_cn = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-in", str(emp_peer.tls.client_cert_file)],  # type: ignore[union-attr]
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "DE*GEF" in client_cn
    assert cpo.oicp.tls is not None and emp.oicp.tls is not None
