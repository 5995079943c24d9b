"""Outbound mutual TLS: one ``ssl.SSLContext`` per peer TLS configuration (ENGINEERING: aiohttp takes a
context per request), built from ``PeerConfig.tls`` and rebuilt when its files change on disk.

A rebuilt context is a new object, so aiohttp's pool (keyed by the context among others) opens new
connections with the new certificate or CA while calls in flight finish on the old ones.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from shared.settings import PeerConfig, PeerTlsSettings

logger = logging.getLogger(__name__)

#: Files are stat()ed at most this often per configuration: cheap, and a replaced certificate is in
#: use within a few seconds.
RECHECK_SECONDS = 2.0

FileStamp = tuple[int, int, int] | None  # (mtime_ns, size, inode), None when the file is missing


def file_stamp(path: Path | None) -> FileStamp:
    """What changes when a file is rewritten or replaced (a rename keeps mtime but changes the inode)."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def build_client_context(tls: PeerTlsSettings) -> ssl.SSLContext:
    """Verify the peer's server certificate (against ``ca_file``, else the system CAs) with the hostname
    check on, and present the client certificate if one is configured."""
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if tls.client_cert_file is not None and tls.client_key_file is not None:
        context.load_cert_chain(tls.client_cert_file, tls.client_key_file)
    return context


@dataclass
class _Entry:
    context: ssl.SSLContext
    stamps: tuple[FileStamp, ...]
    checked_at: float


class ClientContexts:
    """The contexts of one process, keyed by the peer's TLS files (peers sharing files share one)."""

    def __init__(self, recheck_seconds: float = RECHECK_SECONDS) -> None:
        self._recheck_seconds = recheck_seconds
        self._entries: dict[tuple[Path | None, ...], _Entry] = {}

    def for_peer(self, peer: PeerConfig) -> ssl.SSLContext | None:
        """The peer's context, or None when it has no ``tls`` section (aiohttp's defaults then apply).

        Raises ssl.SSLError/OSError if the files cannot be loaded and no earlier context exists.
        """
        tls = peer.tls
        if tls is None:
            return None
        files = (tls.client_cert_file, tls.client_key_file, tls.ca_file)
        now = time.monotonic()
        entry = self._entries.get(files)
        if entry is not None and now - entry.checked_at < self._recheck_seconds:
            return entry.context
        stamps = tuple(file_stamp(f) for f in files)
        if entry is not None and stamps == entry.stamps:
            entry.checked_at = now
            return entry.context
        try:
            context = build_client_context(tls)
        except (ssl.SSLError, OSError) as exc:
            if entry is None:
                raise
            # A half-written file during a replacement: keep calling with the last good context.
            logger.warning("peer %s: TLS files do not load (%s); keeping the previous ones", peer.id, exc)
            entry.checked_at = now
            return entry.context
        if entry is not None:
            logger.info("peer %s: TLS client certificate/CA reloaded", peer.id)
        self._entries[files] = _Entry(context, stamps, now)
        return context


#: The process's contexts, next to its one pooled aiohttp session.
CLIENT_CONTEXTS = ClientContexts()
