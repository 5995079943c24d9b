"""Mutual TLS between two real nodes (every service a process) on 127.0.0.1 (issue #6, DIGEST §10).

A throw-away CA issues the nodes' server certificates and the peers' client certificates. The EMP
node requires client certificates and names peers by a URI SAN; the CPO node takes them optionally
(by subject CN), so a peer configured for a bearer token can still call it without one:

* the CPO's evse_push lane delivers a status to the EMP node over mTLS with its per-peer certificate;
* a certificate of no registered peer gets 017, no certificate or one of another CA fails the
  handshake, another peer's certificate gets 017 for this peer's ID in the path;
* replaced server certificate and CA bundle files apply to new connections without a restart;
* bearer tokens still identify a token peer, and must name the same peer as a certificate sent with them.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from shared.oicp.operations import OPERATIONS, Operation
from tests.support.certs import Authority, Issued
from tests.support.nodes import NodeProcesses, cleanup, free_port, wait_until
from tests.support.tls_nodes import (
    HANDSHAKE_REFUSED,
    TlsNodeSpec,
    client_context,
    oicp_post,
    replace_file,
    server_common_name,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

CPO_ID = "DE*MTL"
EMP_ID = "DE-MTL"
OTHER_CPO_ID = "DE*OTH"  # a second registered CPO peer of the EMP node
TOKEN_EMP_ID = "DE-TOK"  # an EMP peer of the CPO node that calls with a bearer token
TOKEN = "token-emp-calls-cpo"
RELOAD_INTERVAL = 0.3  # the EMP node looks for changed TLS files this often
RELOAD_DEADLINE = 15.0


def uri_of(peer_id: str) -> str:
    return f"urn:oicp:{peer_id}"


def operation(name: str) -> Operation:
    return next(op for op in OPERATIONS if op.name == name)


@dataclass
class Certs:
    ca: Authority
    rogue: Authority
    emp_live: Path  # the EMP node's TLS files, replaced by the reload test
    cpo_client: Issued
    emp_client: Issued
    other_client: Issued
    stranger: Issued
    rogue_client: Issued
    reloaded_server: Issued


@dataclass
class MtlsPair:
    cpo: TlsNodeSpec
    emp: TlsNodeSpec
    certs: Certs


def make_certs(directory: Path) -> Certs:
    ca = Authority.create(directory / "ca")
    rogue = Authority.create(directory / "rogue", "rogue")

    def client(authority: Authority, name: str, peer_id: str) -> Issued:
        # CN for the CPO node (subject_cn), URI SAN for the EMP node (san_uri)
        return authority.issue(name, peer_id, san=[f"URI:{uri_of(peer_id)}"])

    live = directory / "emp-live"
    live.mkdir()
    emp_server = ca.issue("emp-server", "emp.localhost", server=True)
    for source, name in ((emp_server.cert, "server.pem"), (emp_server.key, "server.key"), (ca.cert, "ca.pem")):
        shutil.copyfile(source, live / name)
    ca.issue("cpo-server", "cpo.localhost", server=True)
    return Certs(
        ca=ca,
        rogue=rogue,
        emp_live=live,
        cpo_client=client(ca, "cpo-client", CPO_ID),
        emp_client=client(ca, "emp-client", EMP_ID),
        other_client=client(ca, "other-client", OTHER_CPO_ID),
        stranger=client(ca, "stranger", "DE*UNK"),
        rogue_client=client(rogue, "rogue-client", CPO_ID),
        reloaded_server=ca.issue("reloaded-server", "reloaded.localhost", server=True),
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mtls(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MtlsPair]:
    directory = tmp_path_factory.mktemp("mtls")
    certs = make_certs(directory)
    ca_dir = certs.ca.directory
    cpo = TlsNodeSpec(
        "mtls-cpo",
        operator_ids=[CPO_ID],
        tls={
            "cert_file": ca_dir / "cpo-server.pem",
            "key_file": ca_dir / "cpo-server.key",
            "client_ca_file": certs.ca.cert,
            "client_certificates": "optional",
            "identity_field": "subject_cn",
        },
    )
    emp = TlsNodeSpec(
        "mtls-emp",
        provider_ids=[EMP_ID],
        tls={
            "cert_file": certs.emp_live / "server.pem",
            "key_file": certs.emp_live / "server.key",
            "client_ca_file": certs.emp_live / "ca.pem",
            "client_certificates": "required",
            "identity_field": "san_uri",
            "reload_interval_seconds": RELOAD_INTERVAL,
        },
    )
    cpo.peers = [
        {
            "id": EMP_ID,
            "role": "emp",
            "base_url": emp.oicp_url,
            "auth": "certificate",
            "certificate_identity": EMP_ID,
            "tls": {
                "client_cert_file": str(certs.cpo_client.cert),
                "client_key_file": str(certs.cpo_client.key),
                "ca_file": str(certs.ca.cert),
            },
            "push": ["PushEvseStatus"],
        },
        {
            "id": TOKEN_EMP_ID,
            "role": "emp",
            "base_url": f"https://127.0.0.1:{free_port()}",  # never called: nothing is pushed to it
            "auth": "token",
            "inbound_token": TOKEN,
        },
    ]
    emp.peers = [
        {
            "id": CPO_ID,
            "role": "cpo",
            "base_url": cpo.oicp_url,
            "auth": "certificate",
            "certificate_identity": uri_of(CPO_ID),
            "tls": {
                "client_cert_file": str(certs.emp_client.cert),
                "client_key_file": str(certs.emp_client.key),
                "ca_file": str(certs.ca.cert),
            },
        },
        {
            "id": OTHER_CPO_ID,
            "role": "cpo",
            "base_url": f"https://127.0.0.1:{free_port()}",
            "certificate_identity": uri_of(OTHER_CPO_ID),
        },
    ]
    processes = NodeProcesses([cpo, emp], directory)
    try:
        await processes.start()
        yield MtlsPair(cpo, emp, certs)
    finally:
        processes.stop()
        await cleanup([cpo, emp])


def code_of(answer: dict[str, Any]) -> str:
    return str(answer["StatusCode"]["Code"])


def status_push_url(node: TlsNodeSpec, operator_id: str) -> str:
    return node.oicp_url + operation("PushEvseStatus").path.format(operatorID=operator_id)


def status_push(operator_id: str) -> dict[str, Any]:
    return {
        "ActionType": "update",
        "OperatorEvseStatus": {
            "OperatorID": operator_id,
            "OperatorName": "mTLS test",
            "EvseStatusRecord": [{"EvseID": f"{operator_id}*E1", "EvseStatus": "Available"}],
        },
    }


def status_pull_url(node: TlsNodeSpec, provider_id: str) -> str:
    return node.oicp_url + operation("PullEvseStatus").path.format(providerID=provider_id)


async def test_status_push_reaches_the_emp_node_over_mtls(mtls: MtlsPair) -> None:
    evse_id = f"{CPO_ID}*E{uuid.uuid4().hex[:8].upper()}"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{mtls.cpo.internal_url}/commands/cpo.evse.status.set",
            json={"records": [{"EvseID": evse_id, "EvseStatus": "Occupied"}]},
            headers={"Authorization": f"Bearer {mtls.cpo.internal_token}"},
        ) as response:
            assert response.status == 202, await response.text()

        async def emp_status() -> str | None:
            async with http.get(
                f"{mtls.emp.internal_url}/evses/{evse_id}/status",
                headers={"Authorization": f"Bearer {mtls.emp.internal_token}"},
            ) as response:
                return (await response.json())["EvseStatus"] if response.status == 200 else None

        assert await wait_until(emp_status, what="the status on the EMP node") == "Occupied"


async def test_a_peer_certificate_identifies_the_peer(mtls: MtlsPair) -> None:
    context = client_context(mtls.certs.ca.cert, mtls.certs.emp_client)
    status, answer = await oicp_post(status_pull_url(mtls.cpo, EMP_ID), {"ProviderID": EMP_ID}, context)
    assert status == 200 and code_of(answer) == "000", answer
    # a token-only peer's ID is not this certificate's
    status, answer = await oicp_post(status_pull_url(mtls.cpo, TOKEN_EMP_ID), {"ProviderID": TOKEN_EMP_ID}, context)
    assert code_of(answer) == "017", answer


async def test_a_certificate_of_no_registered_peer_gets_017(mtls: MtlsPair) -> None:
    context = client_context(mtls.certs.ca.cert, mtls.certs.stranger)
    for url, body in (
        (status_push_url(mtls.emp, "DE*UNK"), status_push("DE*UNK")),
        (status_pull_url(mtls.cpo, EMP_ID), {"ProviderID": EMP_ID}),
    ):
        status, answer = await oicp_post(url, body, context)
        assert status == 200 and code_of(answer) == "017", answer
        assert "no registered peer" in answer["StatusCode"]["AdditionalInfo"]


async def test_no_certificate_cannot_connect_where_one_is_required(mtls: MtlsPair) -> None:
    with pytest.raises(HANDSHAKE_REFUSED):
        await oicp_post(status_push_url(mtls.emp, CPO_ID), status_push(CPO_ID), client_context(mtls.certs.ca.cert))


async def test_another_peers_certificate_gets_017_for_this_peers_ids(mtls: MtlsPair) -> None:
    context = client_context(mtls.certs.ca.cert, mtls.certs.other_client)
    status, answer = await oicp_post(status_push_url(mtls.emp, CPO_ID), status_push(CPO_ID), context)
    assert (
        status == 200 and code_of(answer) == "017" and "not the caller's ID" in answer["StatusCode"]["AdditionalInfo"]
    ), answer
    # its own ID in the path, another's in the body
    status, answer = await oicp_post(status_push_url(mtls.emp, OTHER_CPO_ID), status_push(CPO_ID), context)
    assert status == 200 and code_of(answer) == "017", answer


async def test_a_certificate_of_another_ca_is_refused_at_the_handshake(mtls: MtlsPair) -> None:
    context = client_context(mtls.certs.ca.cert, mtls.certs.rogue_client)
    with pytest.raises(HANDSHAKE_REFUSED):
        await oicp_post(status_push_url(mtls.emp, CPO_ID), status_push(CPO_ID), context)
    # where certificates are optional, a presented one must still verify
    with pytest.raises(HANDSHAKE_REFUSED):
        await oicp_post(status_pull_url(mtls.cpo, EMP_ID), {"ProviderID": EMP_ID}, context)


async def test_bearer_tokens_identify_token_peers_where_certificates_are_optional(mtls: MtlsPair) -> None:
    no_cert = client_context(mtls.certs.ca.cert)
    url = status_pull_url(mtls.cpo, TOKEN_EMP_ID)
    status, answer = await oicp_post(url, {"ProviderID": TOKEN_EMP_ID}, no_cert, token=TOKEN)
    assert status == 200 and code_of(answer) == "000", answer
    status, answer = await oicp_post(url, {"ProviderID": TOKEN_EMP_ID}, no_cert, token="wrong-token")
    assert code_of(answer) == "017", answer
    # a certificate and a token of different peers
    with_cert = client_context(mtls.certs.ca.cert, mtls.certs.emp_client)
    status, answer = await oicp_post(url, {"ProviderID": TOKEN_EMP_ID}, with_cert, token=TOKEN)
    assert code_of(answer) == "017" and "bearer token" in answer["StatusCode"]["AdditionalInfo"], answer


async def test_replaced_certificate_and_ca_apply_to_new_connections(mtls: MtlsPair) -> None:
    """Runs last in this module: it swaps the EMP node's files and puts the CA back at the end."""
    certs, port = mtls.certs, mtls.emp.oicp_port
    trusted = client_context(certs.ca.cert, certs.cpo_client)
    assert await server_common_name(port, trusted) == "emp.localhost"

    replace_file(certs.reloaded_server.key, certs.emp_live / "server.key")
    replace_file(certs.reloaded_server.cert, certs.emp_live / "server.pem")

    async def served_name() -> str:
        return await server_common_name(port, trusted)

    await wait_until(
        lambda: _equals(served_name(), "reloaded.localhost"), timeout=RELOAD_DEADLINE, what="the new server cert"
    )

    # Only the rogue CA trusted for client certificates now: its client gets in, ours no longer.
    replace_file(certs.rogue.cert, certs.emp_live / "ca.pem")
    rogue = client_context(certs.ca.cert, certs.rogue_client)
    url, body = status_push_url(mtls.emp, CPO_ID), status_push(CPO_ID)
    await wait_until(lambda: _accepted(url, body, rogue), timeout=RELOAD_DEADLINE, what="the rogue CA accepted")
    assert not await _accepted(url, body, trusted)

    replace_file(certs.ca.cert, certs.emp_live / "ca.pem")
    await wait_until(lambda: _accepted(url, body, trusted), timeout=RELOAD_DEADLINE, what="our CA accepted again")
    assert not await _accepted(url, body, rogue)


async def _equals(value: Any, expected: str) -> bool:
    return await value == expected


async def _accepted(url: str, body: dict[str, Any], context: Any) -> bool:
    """The TLS handshake passes and an OICP answer comes back (017 or not: the identity is not the point)."""
    try:
        status, _ = await oicp_post(url, body, context)
    except HANDSHAKE_REFUSED:
        return False
    return status == 200
