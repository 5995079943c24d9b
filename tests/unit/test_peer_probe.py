"""The peer prober against local servers on 127.0.0.1: every step (DNS, TCP, TLS with the peer's CA and
the certificate's days left, the OICP round trip) and how each fails (refused, untrusted certificate,
HTTP 500, a timeout, a body that does not conform to the schema, a StatusCode that refuses us)."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from pydantic import ValidationError

from shared.oicp.operations import OPERATIONS_BY_NAME
from shared.peers.client import PeerClient
from shared.peers.probe import PeerProber, ProbeResult, certificate_not_after, unknown_evse_id
from shared.settings import NodeSettings, PeerConfig
from tests.oicp_schema import validate_request, validate_response
from tests.support.certs import Authority
from tests.support.nodes import free_port

CPO_PEER = "DE*ABC"
EMP_PEER = "DE-XYZ"
OWN_PROVIDER = "DE-OWN"
OWN_OPERATOR = "DE*OWN"
PULL_PATH = OPERATIONS_BY_NAME["PullEvseStatusById"].path
STOP_PATH = OPERATIONS_BY_NAME["AuthorizeStop"].path

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("OICP_P2P_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("probe-pki")
    ca = Authority.create(directory / "ca")
    other = Authority.create(directory / "other", "other")
    return {
        "ca": ca,
        "other": other,
        "server": ca.issue("server", "localhost", server=True),
        "client": ca.issue("client", OWN_OPERATOR),
    }


def settings() -> NodeSettings:
    return NodeSettings(
        name="probe-unit",
        operator_ids=[OWN_OPERATOR],
        provider_ids=[OWN_PROVIDER],
        oicp={"port": free_port()},
        internal={"port": free_port(), "token": "t"},
    )


def peer(role: str, base_url: str, **extra: Any) -> PeerConfig:
    return PeerConfig.model_validate(
        {"role": role, "id": CPO_PEER if role == "cpo" else EMP_PEER, "base_url": base_url, "timeout_seconds": 1.0}
        | extra
    )


class Server:
    """An aiohttp server on 127.0.0.1 answering every POST with ``handler``; records the bodies."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler, self.tls = handler, tls
        self.port = free_port()
        self.bodies: list[tuple[str, dict[str, Any]]] = []
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append((request.path, orjson.loads(await request.read())))
        return await self.handler(request)

    async def __aenter__(self) -> Server:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.tls).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def answering(body: Any, status: int = 200, delay: float = 0.0) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if delay:
            await asyncio.sleep(delay)
        return web.json_response(body, status=status)

    return handler


async def evse_not_found(request: web.Request) -> web.StreamResponse:
    evse_ids = orjson.loads(await request.read())["EvseID"]
    return web.json_response(
        {
            "EVSEStatusRecords": {"EvseStatusRecord": [{"EvseID": e, "EvseStatus": "EvseNotFound"} for e in evse_ids]},
            "StatusCode": {"Code": "000", "Description": "Success"},
        }
    )


NOT_AUTHORIZED = {
    "AuthorizationStatus": "NotAuthorized",
    "StatusCode": {"Code": "400", "Description": "Session is invalid"},
}


@pytest.fixture
async def prober() -> AsyncIterator[PeerProber]:
    client = PeerClient.create()
    yield PeerProber(settings(), client)
    await client.close()


def steps(result: ProbeResult) -> dict[str, str]:
    return {s.name: s.status for s in result.steps}


async def test_a_cpo_peer_answering_pull_evse_status_by_id_passes(prober: PeerProber) -> None:
    async with Server(evse_not_found) as server:
        result = await prober.probe(peer("cpo", f"http://localhost:{server.port}"))
    assert result.ok, result.reason
    assert steps(result) == {"dns": "ok", "tcp": "ok", "tls": "skipped", "oicp": "ok"}
    assert result.failed_step is None and result.reason is None
    assert result.operation == "PullEvseStatusById" and result.answer_valid is True and result.status_code == "000"
    assert result.address in {"127.0.0.1", "::1"}
    assert result.certificate_not_after is None
    path, body = server.bodies[0]
    assert path == "/api/oicp/evsepull/v21/providers/DE-OWN/status-records-by-id"
    assert body["ProviderID"] == OWN_PROVIDER and body["EvseID"][0].startswith("DE*ABC*EPROBE")
    validate_request(PULL_PATH, body)
    assert all(s.duration_seconds >= 0 for s in result.steps)
    assert "EvseNotFound" in (result.steps[3].detail or "")


async def test_an_emp_peer_is_probed_with_authorize_stop_of_an_unknown_session(prober: PeerProber) -> None:
    async with Server(answering(NOT_AUTHORIZED)) as server:
        result = await prober.probe(peer("emp", f"http://127.0.0.1:{server.port}"))
    assert result.ok, result.reason
    assert result.operation == "AuthorizeStop" and result.status_code == "400"
    assert "NotAuthorized" in (result.steps[3].detail or "")
    path, body = server.bodies[0]
    assert path == "/api/oicp/charging/v21/operators/DE*OWN/authorize/stop"
    assert body["OperatorID"] == OWN_OPERATOR and body["SessionID"]
    validate_request(STOP_PATH, body)


async def test_a_refused_connection_fails_at_tcp(prober: PeerProber) -> None:
    result = await prober.probe(peer("cpo", f"http://127.0.0.1:{free_port()}"))
    assert not result.ok
    assert result.failed_step == "tcp"
    assert result.reason is not None and result.reason.startswith("tcp: connection failed")
    assert steps(result) == {"dns": "ok", "tcp": "failed", "tls": "skipped", "oicp": "skipped"}


async def test_a_name_that_does_not_resolve_fails_at_dns(prober: PeerProber) -> None:
    result = await prober.probe(peer("cpo", "http://no-such-peer.invalid:8080"))
    assert result.failed_step == "dns", result.reason
    assert steps(result)["tcp"] == "skipped"


async def test_tls_with_the_peers_ca_reports_the_certificate_expiry(prober: PeerProber, pki: dict[str, Any]) -> None:
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(pki["server"].cert, pki["server"].key)
    async with Server(answering(NOT_AUTHORIZED), tls=server_tls) as server:
        client = {"client_cert_file": str(pki["client"].cert), "client_key_file": str(pki["client"].key)}
        result = await prober.probe(
            peer("emp", f"https://localhost:{server.port}", tls={"ca_file": str(pki["ca"].cert), **client})
        )
        untrusted = await prober.probe(
            peer("emp", f"https://localhost:{server.port}", tls={"ca_file": str(pki["other"].cert)})
        )
    assert result.ok, result.reason
    assert steps(result) == {"dns": "ok", "tcp": "ok", "tls": "ok", "oicp": "ok"}
    # tests/support/certs.py issues certificates for 2 days
    assert result.certificate_days_left is not None and 1.9 < result.certificate_days_left <= 2.0
    assert result.certificate_not_after is not None and result.certificate_not_after > result.started_at
    assert "TLS" in (result.steps[2].detail or "")
    assert result.client_certificate_days_left is not None and 1.9 < result.client_certificate_days_left <= 2.0
    assert result.client_certificate_not_after == certificate_not_after(pki["client"].cert)
    assert untrusted.failed_step == "tls"
    assert "certificate" in (untrusted.reason or "")
    assert untrusted.certificate_not_after is None and steps(untrusted)["oicp"] == "skipped"


async def test_a_body_that_does_not_conform_fails_the_oicp_step(prober: PeerProber) -> None:
    async with Server(answering({"EVSEStatusRecords": {"EvseStatusRecord": [{"EvseID": "x"}]}})) as server:
        result = await prober.probe(peer("cpo", f"http://127.0.0.1:{server.port}"))
    assert result.failed_step == "oicp"
    assert result.answer_valid is False
    assert "does not conform" in (result.reason or "")


async def test_http_500_fails_the_oicp_step(prober: PeerProber) -> None:
    async with Server(answering({"error": "boom"}, status=500)) as server:
        result = await prober.probe(peer("cpo", f"http://127.0.0.1:{server.port}"))
    assert result.failed_step == "oicp"
    assert result.answer_valid is None
    assert "HTTP 500" in (result.reason or "")


async def test_a_peer_that_does_not_answer_in_time_fails_the_oicp_step(prober: PeerProber) -> None:
    async with Server(answering(NOT_AUTHORIZED, delay=3.0)) as server:
        result = await prober.probe(peer("emp", f"http://127.0.0.1:{server.port}"))
    assert result.failed_step == "oicp"
    assert "1.0s" in (result.reason or "")
    assert result.duration_seconds < 2.5


async def test_an_answer_that_refuses_this_node_fails(prober: PeerProber) -> None:
    refused = {"AuthorizationStatus": "NotAuthorized", "StatusCode": {"Code": "017", "Description": "Unauthorized"}}
    async with Server(answering(refused)) as server:
        result = await prober.probe(peer("emp", f"http://127.0.0.1:{server.port}"))
    assert result.failed_step == "oicp" and result.answer_valid is True and result.status_code == "017"
    assert "error 017" in (result.reason or "")


async def test_operation_none_probes_the_network_only(prober: PeerProber) -> None:
    async with Server(evse_not_found) as server:
        result = await prober.probe(peer("cpo", f"http://127.0.0.1:{server.port}", probe={"operation": "none"}))
        assert server.bodies == []
    assert result.ok and steps(result)["oicp"] == "skipped" and result.operation is None


def test_probe_operations_fit_the_peers_role() -> None:
    with pytest.raises(ValidationError, match="AuthorizeStop can only be used with EMP peers"):
        peer("cpo", "http://127.0.0.1:1", probe={"operation": "AuthorizeStop"})
    with pytest.raises(ValidationError, match="PullEvseStatusById can only be used with CPO peers"):
        peer("emp", "http://127.0.0.1:1", probe={"operation": "PullEvseStatusById"})
    assert peer("emp", "http://127.0.0.1:1").probe.enabled


@pytest.mark.parametrize("operator_id", ["DE*ABC", "DEABC", "+49*810"])
def test_unknown_evse_ids_are_evse_ids_of_the_operator(operator_id: str) -> None:
    from shared.oicp.ids import operator_id_of_evse

    evse_id = unknown_evse_id(operator_id)
    assert operator_id_of_evse(evse_id) == operator_id.replace("*", "")
    assert unknown_evse_id(operator_id) != evse_id


def test_the_peers_answers_of_these_tests_conform_to_hubjects_schema() -> None:
    validate_response(STOP_PATH, NOT_AUTHORIZED)
    records = [{"EvseID": "DE*ABC*E1", "EvseStatus": "EvseNotFound"}]
    validate_response(PULL_PATH, {"EVSEStatusRecords": {"EvseStatusRecord": records}, "StatusCode": {"Code": "000"}})


def test_certificate_not_after_reads_what_openssl_reads(pki: dict[str, Any], tmp_path: Path) -> None:
    for certificate in (pki["ca"].cert, pki["server"].cert, pki["client"].cert):
        end = subprocess.run(
            ["openssl", "x509", "-enddate", "-noout", "-in", str(certificate)], capture_output=True, text=True
        ).stdout
        assert certificate_not_after(certificate) == ssl.cert_time_to_seconds(end.strip().partition("=")[2])
    (tmp_path / "not-a-cert.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert certificate_not_after(tmp_path / "not-a-cert.pem") is None
    assert certificate_not_after(tmp_path / "missing.pem") is None


def test_results_are_plain_json(tmp_path: Path) -> None:
    result = ProbeResult("DE*ABC", "cpo", "http://x", started_at=1.0)
    assert orjson.loads(orjson.dumps(result.as_dict()))["steps"] == []
