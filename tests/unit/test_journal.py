"""The exchange journal's pure parts: canonical bytes, the hash chain and its verification, tamper
detection, entries built from exchanges, Ed25519 bundles (shared/journal)."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import orjson
import pytest

from shared.journal import bundle, signing
from shared.journal.cli import run_offline
from shared.journal.entry import (
    GENESIS_HASH,
    INBOUND,
    OUTBOUND,
    ChainVerifier,
    Exchange,
    build_entry,
    canonical,
    chain_hash,
    entry_hash_holds,
    index_keys,
    seal,
    unpack_body,
)
from shared.journal.recorder import JournalRecorder, OutboundCall

PUSH = orjson.dumps(
    {
        "ActionType": "update",
        "OperatorEvseStatus": {
            "OperatorID": "DE*ABC",
            "EvseStatusRecord": [
                {"EvseID": "DE*ABC*E1", "EvseStatus": "Available"},
                {"EvseID": "DE*ABC*E2", "EvseStatus": "Occupied"},
            ],
        },
    }
)
ACK = orjson.dumps({"Result": True, "StatusCode": {"Code": "000"}, "SessionID": "b2688855-7f00-0002-6d8e-48d0c5ecb1a9"})


def exchange(**overrides: object) -> Exchange:
    fields: dict[str, object] = {
        "ts": 1_700_000_000.25,
        "direction": INBOUND,
        "peer": "DE*ABC",
        "operation": "PushEvseStatus",
        "path": "/api/oicp/evsepush/v21/operators/DE*ABC/status-records",
        "request": PUSH,
        "response": ACK,
        "http_status": 200,
        "status_code": "000",
    }
    fields.update(overrides)
    return Exchange(**fields)  # type: ignore[arg-type]


def chain(n: int) -> list[tuple[int, bytes, str]]:
    """n sealed entries as stored: (seq, canonical bytes, hash)."""
    rows, head = [], GENESIS_HASH
    for seq in range(1, n + 1):
        entry = build_entry("node", exchange(ts=1_700_000_000 + seq))
        _, data, head = seal(entry, seq, head)
        rows.append((seq, data, head))
    return rows


def walk(rows: list[tuple[int, bytes, str]], head_seq: int | None = None, head: str | None = None) -> ChainVerifier:
    verifier = ChainVerifier(1, GENESIS_HASH)
    for seq, data, digest in rows:
        if not verifier.feed(seq, data, digest):
            break
    verifier.finish(head_seq if head_seq is not None else len(rows), head if head is not None else rows[-1][2])
    return verifier


def test_canonical_bytes_ignore_key_order_and_hash() -> None:
    a = {"b": 1, "a": [1, {"y": 2, "x": 1}], "hash": "whatever"}
    b = {"a": [1, {"x": 1, "y": 2}], "b": 1}
    assert canonical(a) == canonical(b) == b'{"a":[1,{"x":1,"y":2}],"b":1}'


def test_an_entry_holds_the_fields_digests_and_compressed_bodies() -> None:
    entry = build_entry("node", exchange())
    assert entry["evse_ids"] == ["DE*ABC*E1", "DE*ABC*E2"]
    assert entry["session_ids"] == ["b2688855-7f00-0002-6d8e-48d0c5ecb1a9"]
    assert entry["cdr_keys"] == []
    assert unpack_body(entry["request_body"]) == PUSH
    assert unpack_body(entry["response_body"]) == ACK
    assert len(entry["request_digest"]) == 64
    assert ("evse", "DE*ABC*E2") in index_keys(entry)
    assert ("status", "000") in index_keys(entry)
    without = build_entry("node", exchange(), store_bodies=False)
    assert without["request_body"] is None and without["request_digest"] == entry["request_digest"]


def test_pins_are_never_stored_but_the_digest_is_of_the_bytes_exchanged() -> None:
    body = orjson.dumps({"Identification": {"QRCodeIdentification": {"EvcoID": "DE-GDF-C12345678-X", "PIN": "1234"}}})
    entry = build_entry("node", exchange(request=body))
    stored = orjson.loads(unpack_body(entry["request_body"]) or b"")
    assert stored["Identification"]["QRCodeIdentification"] == {"EvcoID": "DE-GDF-C12345678-X", "PIN": "(redacted)"}
    assert entry["request_digest"] == hashlib.sha256(body).hexdigest()
    assert unpack_body(build_entry("node", exchange())["request_body"]) == PUSH  # no PIN: byte for byte


def test_the_oicp_status_code_is_read_from_an_outbound_answer() -> None:
    entry = build_entry("node", exchange(direction=OUTBOUND, status_code=None))
    assert entry["status_code"] == "000"
    failed = build_entry("node", exchange(direction=OUTBOUND, status_code=None, response=None, http_status=None))
    assert failed["status_code"] is None
    assert ("status", "none") in index_keys(failed)


def test_cdr_keys_are_the_session_ids_of_cdrs() -> None:
    entry = build_entry("node", exchange(operation="ChargeDetailRecord", request=b'{"SessionID": "s-1"}'))
    assert entry["cdr_keys"] == ["b2688855-7f00-0002-6d8e-48d0c5ecb1a9", "s-1"]


def test_seal_links_each_entry_to_the_previous_hash() -> None:
    rows = chain(3)
    first = orjson.loads(rows[0][1])
    assert first["prev_hash"] == GENESIS_HASH and first["seq"] == 1
    assert orjson.loads(rows[1][1])["prev_hash"] == rows[0][2]
    assert rows[1][2] == chain_hash(rows[0][2], rows[1][1])
    verifier = walk(rows)
    assert verifier.broken is None and verifier.checked == 3


def test_a_changed_field_breaks_the_chain_at_that_entry() -> None:
    rows = chain(5)
    seq, data, digest = rows[2]
    rows[2] = (seq, data.replace(b'"peer":"DE*ABC"', b'"peer":"DE*XYZ"'), digest)
    broken = walk(rows).broken
    assert broken is not None and (broken.seq, broken.reason) == (3, "hash")


def test_a_rewritten_entry_with_a_new_hash_breaks_the_next_link() -> None:
    rows = chain(5)
    seq, data, _ = rows[2]
    forged = data.replace(b'"http_status":200', b'"http_status":500')
    rows[2] = (seq, forged, chain_hash(rows[1][2], forged))
    broken = walk(rows, head=rows[-1][2]).broken
    assert broken is not None and (broken.seq, broken.reason) == (4, "prev_hash")
    assert broken.expected == rows[2][2]


def test_a_deleted_entry_or_tail_is_a_gap() -> None:
    rows = chain(5)
    broken = walk(rows[:2] + rows[3:]).broken
    assert broken is not None and (broken.seq, broken.reason) == (3, "gap")
    tail = walk(rows[:4], head_seq=5, head=rows[4][2]).broken
    assert tail is not None and (tail.seq, tail.reason) == (5, "gap")


def test_a_rewritten_last_entry_differs_from_the_head() -> None:
    rows = chain(3)
    seq, data, _ = rows[2]
    forged = data.replace(b'"http_status":200', b'"http_status":500')
    rows[2] = (seq, forged, chain_hash(rows[1][2], forged))
    head = chain(3)[2][2]
    broken = walk(rows, head=head).broken
    assert broken is not None and (broken.seq, broken.reason) == (3, "head")


def test_signed_bundle_verifies_and_one_changed_byte_fails(tmp_path: Path) -> None:
    key_file = tmp_path / "journal.key"
    public = signing.generate(key_file)
    key = signing.load_private(key_file)
    entries = [{**orjson.loads(data), "hash": digest} for _, data, digest in chain(3)]
    assert all(entry_hash_holds(e) for e in entries)
    data = bundle.build("node", "DE*ABC", None, None, entries)
    signature = signing.sign(key, data)
    outcome = bundle.verify(data, signature, signing.load_public(public.encode()))
    assert outcome["ok"] and outcome["entries"] == 3 and outcome["seqs"] == [1, 3]
    index = data.index(b'"http_status":200') + len(b'"http_status":20')
    changed = data[:index] + b"1" + data[index + 1 :]
    assert not bundle.verify(changed, signature, signing.load_public(public.encode()))["ok"]
    other = signing.generate(tmp_path / "other.key")
    assert not bundle.verify(data, signature, signing.load_public(other.encode()))["ok"]
    with pytest.raises(FileExistsError):
        signing.generate(key_file)  # never overwritten


def test_verify_bundle_command_offline(tmp_path: Path) -> None:
    from shared.cli import CliError

    keygen = argparse.Namespace(action="keygen", key_file=str(tmp_path / "k"), public_key=str(tmp_path / "k.pub"))
    run_offline(keygen)
    key = signing.load_private(tmp_path / "k")
    data = bundle.build("node", "DE*ABC", 1.0, 2.0, [])
    (tmp_path / "b").write_bytes(data)
    (tmp_path / "b.sig").write_text(signing.sign(key, data) + "\n")
    check = argparse.Namespace(
        action="verify-bundle",
        bundle=str(tmp_path / "b"),
        signature=str(tmp_path / "b.sig"),
        public_key=str(tmp_path / "k.pub"),
    )
    assert run_offline(check)["ok"]
    (tmp_path / "b").write_bytes(data.replace(b"DE*ABC", b"DE*ABD"))
    with pytest.raises(CliError) as failed:
        run_offline(check)
    assert failed.value.exit_code == 1


async def test_recording_never_blocks_and_counts_what_it_drops() -> None:
    from shared.metrics import JOURNAL_DROPPED

    recorder = JournalRecorder()
    recorder.record(exchange())  # not started: nothing happens
    import asyncio

    recorder._queue = asyncio.Queue(2)  # started without a writer: the queue fills up
    before = JOURNAL_DROPPED.labels("queue_full")._value.get()
    for _ in range(5):
        recorder.record(exchange())
    assert JOURNAL_DROPPED.labels("queue_full")._value.get() - before == 3


def test_an_outbound_call_is_journaled_only_when_sent() -> None:
    call = OutboundCall("DE*ABC", "PushEvseStatus", "/x")
    assert call.request is None
    assert call.sent(b"{}") == b"{}"
    call.answered(503, b"busy")
    assert (call.http_status, call.response) == (503, b"busy")
