"""Exported journal bundles: JSON lines (a header, then one sealed entry per line, canonical JSON with
its ``hash``) and a detached Ed25519 signature over the bundle's exact bytes.

A partner checks a bundle offline (``oicp-p2p journal verify-bundle BUNDLE SIG --public-key PUB``): the
signature over the bytes, then that every entry is consistent with its own hash (its ``prev_hash`` links
into the node's chain, which only the node's ``/journal/verify`` walks in full).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.journal import signing
from shared.journal.entry import canonical, entry_hash_holds

FORMAT = "oicp-p2p-journal-bundle/1"


def build(node: str, peer: str, start: float | None, end: float | None, entries: Iterable[dict[str, Any]]) -> bytes:
    lines = [orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in entries]
    header = {
        "format": FORMAT,
        "node": node,
        "peer": peer,
        "from": start,
        "to": end,
        "entries": len(lines),
        "exported_at": round(time.time(), 3),
    }
    return b"".join(line + b"\n" for line in [canonical(header), *lines])


def verify(data: bytes, signature_b64: str | bytes, public: Ed25519PublicKey) -> dict[str, Any]:
    """``ok`` and why not: the signature first, then every entry's own hash, then the header's count."""
    if not signing.verify(public, data, signature_b64.strip()):
        return {"ok": False, "error": "signature does not match the bundle (changed, or another key)"}
    lines = data.splitlines()
    try:
        header = orjson.loads(lines[0]) if lines else {}
        entries = [orjson.loads(line) for line in lines[1:]]
    except orjson.JSONDecodeError as exc:
        return {"ok": False, "error": f"not JSON lines: {exc}"}
    if header.get("format") != FORMAT:
        return {"ok": False, "error": f"not a journal bundle (format {header.get('format')!r})"}
    for entry in entries:
        if not entry_hash_holds(entry):
            return {"ok": False, "error": f"entry seq {entry.get('seq')} does not match its hash"}
    if header.get("entries") != len(entries):
        return {"ok": False, "error": f"header says {header.get('entries')} entries, the bundle has {len(entries)}"}
    return {
        "ok": True,
        "node": header.get("node"),
        "peer": header.get("peer"),
        "from": header.get("from"),
        "to": header.get("to"),
        "entries": len(entries),
        "seqs": [entries[0].get("seq"), entries[-1].get("seq")] if entries else [],
    }
