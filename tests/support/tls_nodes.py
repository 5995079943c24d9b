"""Nodes with HTTPS and client certificates on their OICP port, and a client that picks its certificate
per request (tests/e2e/test_mtls.py). The internal port stays plain HTTP, so NodeProcesses' readiness
checks work unchanged."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.support.certs import Issued
from tests.support.nodes import NodeSpec

OICP_TIMEOUT = aiohttp.ClientTimeout(total=10)
# What a refused TLS handshake looks like to a client: with TLS 1.3 the server checks the client
# certificate after the client considers the handshake done, so the refusal may surface at the first read.
HANDSHAKE_REFUSED = (aiohttp.ClientError, ssl.SSLError, ConnectionError)


@dataclass
class TlsNodeSpec(NodeSpec):
    """A NodeSpec whose ``oicp`` section carries ``tls`` (the settings' OicpTlsSettings)."""

    tls: dict[str, Any] = field(default_factory=dict)

    @property
    def oicp_url(self) -> str:
        return f"https://127.0.0.1:{self.oicp_port}"

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["oicp"]["tls"] = {
            key: str(value) if isinstance(value, Path) else value for key, value in self.tls.items()
        }
        return config


def client_context(ca_file: Path, cert: Issued | None = None) -> ssl.SSLContext:
    """Verify the node's server certificate against ``ca_file``; present ``cert`` if given."""
    context = ssl.create_default_context(cafile=str(ca_file))
    if cert is not None:
        context.load_cert_chain(cert.cert, cert.key)
    return context


async def oicp_post(
    url: str, body: dict[str, Any], context: ssl.SSLContext, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    """One request on a new connection (so a reloaded server certificate or CA applies to it)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=OICP_TIMEOUT) as http:
        async with http.post(
            url, data=orjson.dumps(body), headers={"Content-Type": "application/json", **headers}, ssl=context
        ) as response:
            return response.status, orjson.loads(await response.read())


async def server_common_name(port: int, context: ssl.SSLContext) -> str:
    """The subject CN of the certificate the server presents to a new connection."""
    _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=context), OICP_TIMEOUT.total)
    try:
        cert = writer.get_extra_info("peercert")
        return next(value for rdn in cert["subject"] for key, value in rdn if key == "commonName")
    finally:
        writer.close()


def replace_file(source: Path, target: Path) -> None:
    """Replace ``target`` atomically, as an operator (or certbot) would: copy beside it, then rename."""
    temporary = target.with_name(target.name + ".new")
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)
