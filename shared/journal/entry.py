"""Journal entries: their fields, their canonical bytes and the hash chain over them.

An entry is a JSON object. Sealed, it carries ``seq`` (1, 2, … without gaps), ``prev_hash`` (the
previous entry's ``hash``; 64 zeros for the first) and ``hash`` = SHA-256 (hex) of ``prev_hash`` (ASCII)
followed by the entry's canonical bytes without ``hash``. Canonical bytes: JSON with sorted keys, no
whitespace, UTF-8 (orjson ``OPT_SORT_KEYS``), so any change to any field — or to the order of the
chain — changes a hash that the next entry or the chain's head pins.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

GENESIS_HASH = "0" * 64
INBOUND = "inbound"  # a peer called this node (the gateway's OICP face)
OUTBOUND = "outbound"  # this node called a peer (PeerClient.call)

#: JSON keys of the bodies whose values are searchable (OICP field names).
SESSION_FIELDS = frozenset({"SessionID", "CPOPartnerSessionID", "EMPPartnerSessionID"})
EVSE_FIELDS = frozenset({"EvseID", "EVSEID"})
#: Values never stored in a journaled body (OICP QRCodeIdentification.PIN, the plain PIN).
SECRET_FIELDS = frozenset({"PIN"})
REDACTED = "(redacted)"
MAX_KEYS_PER_KIND = 1000  # a 1000-record PushEvseData is indexed by every EvseID, larger ones by the first 1000
SEARCH_KINDS = ("session", "evse", "cdr", "peer", "operation", "status")


def canonical(entry: dict[str, Any]) -> bytes:
    """The entry's canonical bytes (sorted keys, no whitespace), without its ``hash``."""
    return orjson.dumps({k: v for k, v in entry.items() if k != "hash"}, option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: str, canonical_bytes: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_bytes).hexdigest()


def seal(entry: dict[str, Any], seq: int, prev_hash: str) -> tuple[dict[str, Any], bytes, str]:
    """The sealed entry, its canonical bytes (what is stored) and its hash."""
    sealed = {**entry, "seq": seq, "prev_hash": prev_hash}
    sealed.pop("hash", None)
    data = canonical(sealed)
    digest = chain_hash(prev_hash, data)
    return {**sealed, "hash": digest}, data, digest


def digest(body: bytes | None) -> str | None:
    return hashlib.sha256(body).hexdigest() if body is not None else None


def pack_body(body: bytes | None) -> str | None:
    """A body as stored: secrets redacted, zlib-compressed (level 1: the writer shares the process's
    event loop, and JSON still shrinks about fivefold), base64."""
    return base64.b64encode(zlib.compress(redact(body), 1)).decode("ascii") if body is not None else None


def redact(body: bytes) -> bytes:
    """The body with the values of SECRET_FIELDS replaced (a QR code's PIN is never stored; the digest
    stays that of the bytes exchanged). Bodies without such a field are kept byte for byte."""
    if not any(b'"' + name.encode() + b'"' in body for name in SECRET_FIELDS):
        return body
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    level: list[Any] = [data]
    while level:
        children: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                for key, value in node.items():
                    if key in SECRET_FIELDS and isinstance(value, str):
                        node[key] = REDACTED
                    elif isinstance(value, dict | list):
                        children.append(value)
            else:
                children += [v for v in node if isinstance(v, dict | list)]
        level = children
    return orjson.dumps(data)


def unpack_body(packed: str | None) -> bytes | None:
    return zlib.decompress(base64.b64decode(packed)) if packed is not None else None


@dataclass(frozen=True)
class Exchange:
    """One OICP exchange as a producer hands it over (cheap: the bodies are the bytes already there)."""

    ts: float
    direction: str
    peer: str
    operation: str
    path: str
    request: bytes | None
    response: bytes | None
    http_status: int | None
    status_code: str | None
    error: str | None = None
    duration_ms: float | None = None


def _keys_of(body: bytes | None, sessions: set[str], evses: set[str]) -> None:
    """Collect SessionIDs and EvseIDs anywhere in a JSON body (level by level, bounded)."""
    if not body:
        return
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    level: list[Any] = [data]
    while level:
        children: list[Any] = []
        for node in level:
            items: Iterable[tuple[Any, Any]] = node.items() if isinstance(node, dict) else enumerate(node)
            for key, value in items:
                if isinstance(value, dict | list):
                    children.append(value)
                elif isinstance(value, str) and isinstance(key, str):
                    if key in SESSION_FIELDS and len(sessions) < MAX_KEYS_PER_KIND:
                        sessions.add(value)
                    elif key in EVSE_FIELDS and len(evses) < MAX_KEYS_PER_KIND:
                        evses.add(value)
        level = children


def _status_code_of(body: bytes | None) -> str | None:
    """The OICP StatusCode.Code of an answer (top level, as every OICP answer carries it)."""
    if not body:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    status = data.get("StatusCode") if isinstance(data, dict) else None
    code = status.get("Code") if isinstance(status, dict) else None
    return code if isinstance(code, str) else None


def build_entry(node: str, exchange: Exchange, store_bodies: bool = True) -> dict[str, Any]:
    """The journal entry of an exchange (before sealing): searchable keys, digests, compressed bodies.
    CDR keys are the SessionIDs of the CDRs exchanged (one CDR per SessionID)."""
    sessions: set[str] = set()
    evses: set[str] = set()
    _keys_of(exchange.request, sessions, evses)
    _keys_of(exchange.response, sessions, evses)
    is_cdr = "ChargeDetailRecord" in exchange.operation
    status_code = exchange.status_code or _status_code_of(exchange.response)
    return {
        "ts": round(exchange.ts, 6),
        "node": node,
        "direction": exchange.direction,
        "peer": exchange.peer,
        "operation": exchange.operation,
        "path": exchange.path,
        "http_status": exchange.http_status,
        "status_code": status_code,
        "error": exchange.error,
        "duration_ms": exchange.duration_ms,
        "session_ids": sorted(sessions),
        "evse_ids": sorted(evses),
        "cdr_keys": sorted(sessions) if is_cdr else [],
        "request_digest": digest(exchange.request),
        "response_digest": digest(exchange.response),
        "request_body": pack_body(exchange.request) if store_bodies else None,
        "response_body": pack_body(exchange.response) if store_bodies else None,
    }


def index_keys(entry: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, value) of every secondary index the entry belongs to."""
    keys = [("peer", entry["peer"]), ("operation", entry["operation"])]
    status = entry.get("status_code") or (f"http-{entry['http_status']}" if entry.get("http_status") else "none")
    keys.append(("status", status))
    keys += [("session", s) for s in entry.get("session_ids", [])]
    keys += [("evse", e) for e in entry.get("evse_ids", [])]
    keys += [("cdr", c) for c in entry.get("cdr_keys", [])]
    return keys


@dataclass(frozen=True)
class Broken:
    """The first link of a chain that does not hold."""

    seq: int
    reason: str  # hash | prev_hash | gap | unreadable | head
    expected: str
    found: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "reason": self.reason, "expected": self.expected, "found": self.found}


class ChainVerifier:
    """Walks stored entries in order (stored canonical bytes + stored hash) and keeps the first broken link."""

    def __init__(self, first_seq: int, anchor_hash: str) -> None:
        self.expected_seq = first_seq
        self.prev_hash = anchor_hash
        self.checked = 0
        self.broken: Broken | None = None

    def feed(self, seq: int, data: bytes, stored_hash: str) -> bool:
        """False once a link is broken (the walk may stop)."""
        if self.broken is not None:
            return False
        try:
            entry = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.broken = Broken(seq, "unreadable", "canonical JSON", data[:60].decode(errors="replace"))
            return False
        if seq != self.expected_seq or entry.get("seq") != seq:
            self.broken = Broken(self.expected_seq, "gap", str(self.expected_seq), str(entry.get("seq", seq)))
            return False
        if entry.get("prev_hash") != self.prev_hash:
            self.broken = Broken(seq, "prev_hash", self.prev_hash, str(entry.get("prev_hash")))
            return False
        computed = chain_hash(self.prev_hash, data)
        if computed != stored_hash:
            self.broken = Broken(seq, "hash", stored_hash, computed)
            return False
        self.prev_hash = stored_hash
        self.expected_seq += 1
        self.checked += 1
        return True

    def finish(self, head_seq: int, head_hash: str) -> None:
        """The chain must end where the sealer says it does (a deleted or rewritten tail shows here)."""
        if self.broken is not None:
            return
        last = self.expected_seq - 1
        if last != head_seq:
            self.broken = Broken(last + 1 if last < head_seq else head_seq, "gap", str(head_seq), str(last))
        elif head_seq > 0 and self.prev_hash != head_hash:
            self.broken = Broken(head_seq, "head", head_hash, self.prev_hash)


def entry_hash_holds(entry: dict[str, Any]) -> bool:
    """A single exported entry is consistent with its own hash and prev_hash."""
    return chain_hash(str(entry.get("prev_hash", "")), canonical(entry)) == entry.get("hash")
