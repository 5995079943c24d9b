"""HTTPS with client certificates on the OICP port (DIGEST §10: partners are identified by their TLS
client certificate, as Hubject does).

Two things uvicorn does not do by itself:

* It does not put the client certificate into the ASGI scope: ``ClientCertHttpProtocol`` reads it from
  the transport once the handshake is done and adds ``scope["extensions"]["tls"]["client_cert"]`` (the
  dict of ``SSLObject.getpeercert()``) to every request of the connection.
* It builds its SSLContext once. ``ServerTls`` keeps a *current* context and hands it to each new
  connection from the listening context's ``sni_callback`` (called on every ClientHello, with or without
  SNI), so a replaced certificate, key or CA bundle applies to new connections without a restart. A CA
  bundle can only be replaced by a fresh context (``load_verify_locations`` only adds), hence the swap.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Collection, Mapping
from typing import Any

from services.gateway.protocol import GuardedHttpProtocol
from shared.peers.tls import FileStamp, file_stamp
from shared.settings import ClientCertificates, IdentityField, OicpTlsSettings

logger = logging.getLogger(__name__)

VERIFY_MODES = {
    ClientCertificates.REQUIRED: ssl.CERT_REQUIRED,
    ClientCertificates.OPTIONAL: ssl.CERT_OPTIONAL,
    ClientCertificates.NONE: ssl.CERT_NONE,
}

#: getpeercert()'s dict: subject/issuer as tuples of RDNs, subjectAltName as (type, value) pairs.
PeerCert = Mapping[str, Any]


def build_server_context(tls: OicpTlsSettings) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    context.verify_mode = VERIFY_MODES[tls.client_certificates]
    if tls.client_ca_file is not None and tls.client_certificates is not ClientCertificates.NONE:
        context.load_verify_locations(cafile=str(tls.client_ca_file))
    # No session resumption: a resumed session skips client certificate verification, so a removed CA
    # would still let its clients in. Full handshakes cost little at peer-to-peer request rates.
    context.options |= ssl.OP_NO_TICKET
    context.num_tickets = 0
    return context


class ServerTls:
    """The OICP port's TLS contexts: the listening one (given to uvicorn) and the current one."""

    def __init__(self, tls: OicpTlsSettings) -> None:
        self.settings = tls
        self._files = (tls.cert_file, tls.key_file, tls.client_ca_file)
        self._stamps = self._read_stamps()
        self.current = build_server_context(tls)
        self._checked_at = time.monotonic()
        # The listening context only starts handshakes; the callback moves each one to ``current``.
        self.listening = build_server_context(tls)
        self.listening.sni_callback = self._on_client_hello

    def _read_stamps(self) -> tuple[FileStamp, ...]:
        return tuple(file_stamp(f) for f in self._files)

    def uvicorn_factory(self, config: object, default: object) -> ssl.SSLContext:
        """``uvicorn.Config(ssl_context_factory=...)``: our context, not one built from file names."""
        return self.listening

    def reload_if_changed(self) -> bool:
        """Rebuild ``current`` if a file changed since the last look; at most every reload interval.

        Runs on the event loop inside a handshake: a stat() of three files per interval, and a context
        build (a few milliseconds) only when something changed.
        """
        now = time.monotonic()
        if now - self._checked_at < self.settings.reload_interval_seconds:
            return False
        self._checked_at = now
        stamps = self._read_stamps()
        if stamps == self._stamps:
            return False
        try:
            context = build_server_context(self.settings)
        except (ssl.SSLError, OSError) as exc:
            # Typically a certificate written before its key: keep serving the last good pair and look
            # again next interval (the stamps are not recorded, so the change is still pending).
            logger.warning("OICP TLS files do not load (%s); keeping the previous ones", exc)
            return False
        self._stamps = stamps
        self.current = context
        logger.info("OICP TLS certificate/CA files reloaded")
        return True

    def _on_client_hello(self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        try:
            self.reload_if_changed()
            ssl_object.context = self.current
        except Exception:  # an exception here would abort the handshake with an internal error alert
            logger.exception("choosing the TLS context failed; the listening context serves this connection")


class ClientCertHttpProtocol(GuardedHttpProtocol):
    """uvicorn's httptools protocol that also puts the verified client certificate into the scope."""

    _client_cert: PeerCert | None = None

    def connection_made(self, transport: Any) -> None:  # asyncio's or uvloop's SSL transport
        super().connection_made(transport)
        # Called after the handshake; an empty dict means no (verified) certificate was presented.
        self._client_cert = transport.get_extra_info("peercert") or None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._client_cert is not None:
            self.scope.setdefault("extensions", {})["tls"] = {"client_cert": self._client_cert}  # type: ignore[typeddict-item]


def client_cert_of(scope: Mapping[str, Any]) -> PeerCert | None:
    extensions = scope.get("extensions") or {}
    tls = extensions.get("tls") or {}
    cert = tls.get("client_cert")
    return cert or None


def certificate_identities(cert: PeerCert, field: IdentityField) -> frozenset[str]:
    """The values of ``field`` in the certificate (a certificate may carry several SANs)."""
    if field is IdentityField.SUBJECT_CN:
        return frozenset(value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName")
    kind = "DNS" if field is IdentityField.SAN_DNS else "URI"
    return frozenset(value for key, value in cert.get("subjectAltName", ()) if key == kind)


def describe(identities: Collection[str]) -> str:
    return ", ".join(sorted(identities)) or "(none)"
