"""``oicp-p2p journal …``: the exchange journal from the command line.

oicp-p2p journal search [--session|--evse|--cdr|--peer|--operation|--status V] [--from --to --limit --bodies]
oicp-p2p journal verify [--from-seq N]      (walks the chain; exit 1 and the first broken link if it is broken)
oicp-p2p journal public-key [--out FILE]    (the node's Ed25519 public key, PEM)
oicp-p2p journal export --peer ID [--from T] [--to T] --out BUNDLE   (writes BUNDLE and BUNDLE.sig)
oicp-p2p journal keygen KEY_FILE [--public-key FILE]                (offline: a new signing key)
oicp-p2p journal verify-bundle BUNDLE SIG --public-key PUB           (offline: a partner checks a bundle)
"""

from __future__ import annotations

import argparse
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from shared.journal import bundle, signing

SEARCH_FILTERS = ("session", "evse", "cdr", "peer", "operation", "status", "from", "to", "limit")


def add_parser(commands: Any) -> None:
    journal = commands.add_parser("journal", help="the exchange journal").add_subparsers(dest="action", required=True)
    search = journal.add_parser("search", help="journal entries by session, EVSE, peer, operation, status, time")
    for name in SEARCH_FILTERS:
        search.add_argument(f"--{name}", dest=f"f_{name}")
    search.add_argument("--bodies", action="store_true", help="include the decoded request and response bodies")
    verify = journal.add_parser("verify", help="verify the node's hash chain")
    verify.add_argument("--from-seq", dest="from_seq", type=int, help="start here (trusting the entry before)")
    public = journal.add_parser("public-key", help="the node's public key (PEM)")
    public.add_argument("--out", help="write it to this file")
    export = journal.add_parser("export", help="a peer's entries as a signed bundle")
    export.add_argument("--peer", required=True)
    export.add_argument("--from", dest="f_from")
    export.add_argument("--to", dest="f_to")
    export.add_argument("--out", required=True, help="the bundle file; the signature goes to OUT.sig")
    keygen = journal.add_parser("keygen", help="create the node's signing key (offline)")
    keygen.add_argument("key_file")
    keygen.add_argument("--public-key", dest="public_key", help="also write the public key here")
    check = journal.add_parser("verify-bundle", help="check a bundle and its signature (offline)")
    check.add_argument("bundle")
    check.add_argument("signature")
    check.add_argument("--public-key", dest="public_key", required=True, help="the exporting node's public key (PEM)")


def offline(args: argparse.Namespace) -> bool:
    return args.command == "journal" and args.action in ("keygen", "verify-bundle")


def run_offline(args: argparse.Namespace) -> Any:
    from shared.cli import CliError

    if args.action == "keygen":
        try:
            public = signing.generate(Path(args.key_file), Path(args.public_key) if args.public_key else None)
        except FileExistsError:
            raise CliError(f"{args.key_file} exists: a signing key is never overwritten", 2) from None
        except OSError as exc:
            raise CliError(f"cannot write the key: {exc}", 2) from exc
        return {"key_file": args.key_file, "public_key": public}
    try:
        data = Path(args.bundle).read_bytes()
        signature = Path(args.signature).read_bytes()
        public_key = signing.load_public(Path(args.public_key).read_bytes())
    except (OSError, signing.KeyError_) as exc:
        raise CliError(str(exc), 2) from exc
    outcome = bundle.verify(data, signature, public_key)
    if not outcome["ok"]:
        raise CliError(f"bundle NOT verified: {outcome['error']}", 1)
    return outcome


def run_online(args: argparse.Namespace, base: str, token: str) -> Any:
    from shared.cli import CliError, call

    if args.action == "search":
        query = {name: getattr(args, f"f_{name}") for name in SEARCH_FILTERS if getattr(args, f"f_{name}")}
        if args.bodies:
            query["bodies"] = "true"
        return call(base, token, "GET", "/journal?" + urllib.parse.urlencode(query))
    if args.action == "verify":
        outcome = call(base, token, "GET", "/journal/verify" + (f"?from_seq={args.from_seq}" if args.from_seq else ""))
        if not outcome.get("ok"):
            broken = outcome.get("broken") or {}
            raise CliError(
                f"journal chain broken at seq {broken.get('seq')} ({broken.get('reason')}): "
                f"expected {broken.get('expected')}, found {broken.get('found')}",
                1,
            )
        return outcome
    if args.action == "public-key":
        answer = call(base, token, "GET", "/journal/public-key")
        if args.out:
            Path(args.out).write_text(answer["public_key"])
        return answer
    query = {
        "peer": args.peer,
        **({"from": args.f_from} if args.f_from else {}),
        **({"to": args.f_to} if args.f_to else {}),
    }
    request = urllib.request.Request(base + "/journal/export?" + urllib.parse.urlencode(query), method="GET")
    request.add_header("Authorization", f"Bearer {token}")
    try:
        # the operator's own URL, from the command line or the node's configuration
        with urllib.request.urlopen(request, timeout=60) as response:
            data = response.read()
            signature = response.headers.get("X-Journal-Signature", "")
    except urllib.error.HTTPError as exc:
        raise CliError(f"GET /journal/export: HTTP {exc.code}: {exc.read().decode(errors='replace')}", 1) from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise CliError(f"cannot reach the internal API at {base}: {exc}", 2) from exc
    Path(args.out).write_bytes(data)
    Path(args.out + ".sig").write_text(signature + "\n")
    return {"bundle": args.out, "signature": args.out + ".sig", "entries": max(0, data.count(b"\n") - 1)}
