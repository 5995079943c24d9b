"""``oicp-p2p``: the operations team's command line, over a node's internal API.

    oicp-p2p peers list
    oicp-p2p peers show emp DE-GDF
    oicp-p2p peers add peer.yaml          (a PeerConfig as YAML or JSON; "-" reads standard input)
    oicp-p2p peers remove emp DE-GDF
    oicp-p2p peers disable emp DE-GDF     (keeps the peer, stops all traffic with it)
    oicp-p2p peers enable emp DE-GDF
    oicp-p2p peers probe emp DE-GDF       (DNS, TCP, TLS, an OICP round trip; exit code 1 if it fails)
    oicp-p2p probes                       (the latest probe of every peer)
    oicp-p2p routes DE*ABC*E1234          (which peer a call for this ID goes to)
    oicp-p2p journal search|verify|export|public-key|keygen|verify-bundle   (shared/journal/cli.py)

Where the node is: ``--url``/``--token``, else ``OICP_P2P_INTERNAL_URL``/``OICP_P2P_INTERNAL_TOKEN``,
else the node's configuration file (``--config`` or ``OICP_P2P_CONFIG``: ``internal.host/port/token``).
Output is JSON; the exit code is 0 on success, 1 when the node refused (its message on stderr), 2 on
a usage or connection error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from shared.journal import cli as journal_cli
from shared.settings import CONFIG_ENV, ConfigError, load_settings

TIMEOUT_SECONDS = 15


class CliError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _endpoint(args: argparse.Namespace) -> tuple[str, str]:
    url = args.url or os.environ.get("OICP_P2P_INTERNAL_URL")
    token = args.token or os.environ.get("OICP_P2P_INTERNAL_TOKEN")
    if url and token:
        return url.rstrip("/"), token
    config = args.config or os.environ.get(CONFIG_ENV)
    if not config:
        raise CliError("say where the node is: --url and --token, or --config (or OICP_P2P_CONFIG)", 2)
    try:
        settings = load_settings(Path(config))
    except ConfigError as exc:
        raise CliError(str(exc), 2) from exc
    host = settings.internal.host if settings.internal.host not in ("0.0.0.0", "::") else "127.0.0.1"
    return url or f"http://{host}:{settings.internal.port}", token or settings.internal.token.get_secret_value()


def call(base: str, token: str, method: str, path: str, body: Any = None) -> Any:
    """One request to the internal API; the decoded JSON answer, or CliError with the node's message."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        # the operator's own URL, from the command line or the node's configuration
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except (ValueError, AttributeError):
            pass
        raise CliError(f"{method} {path}: HTTP {exc.code}: {detail}", 1) from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise CliError(f"cannot reach the internal API at {base}: {exc}", 2) from exc
    return json.loads(raw) if raw else None


def _peer_path(role: str, peer_id: str) -> str:
    return f"/peers/{urllib.parse.quote(role)}/{urllib.parse.quote(peer_id, safe='')}"


def _read_peer(source: str) -> Any:
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    try:
        return yaml.safe_load(text)  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise CliError(f"{source}: not YAML or JSON: {exc}", 2) from exc


def run(argv: list[str]) -> Any:
    parser = argparse.ArgumentParser(prog="oicp-p2p", description="Operate an oicp-p2p node (internal API).")
    parser.add_argument("--url", help="the internal API, e.g. http://127.0.0.1:7101")
    parser.add_argument("--token", help="the internal API's bearer token")
    parser.add_argument("--config", help="the node's configuration file (for url and token)")
    commands = parser.add_subparsers(dest="command", required=True)
    peers = commands.add_parser("peers", help="the peer registry").add_subparsers(dest="action", required=True)
    peers.add_parser("list", help="every peer, from the file and the API")
    for action in ("show", "remove", "enable", "disable", "probe"):
        sub = peers.add_parser(action)
        sub.add_argument("role", choices=["cpo", "emp"])
        sub.add_argument("peer_id")
    add = peers.add_parser("add", help="register a peer (YAML or JSON file, - for stdin)")
    add.add_argument("file")
    commands.add_parser("probes", help="the latest probe of every peer")
    routes = commands.add_parser("routes", help="which peer a call for an ID goes to")
    routes.add_argument("id")
    journal_cli.add_parser(commands)
    args = parser.parse_args(argv)
    if journal_cli.offline(args):
        return journal_cli.run_offline(args)

    base, token = _endpoint(args)
    if args.command == "journal":
        return journal_cli.run_online(args, base, token)
    if args.command == "routes":
        return call(base, token, "GET", f"/routes/{urllib.parse.quote(args.id, safe='')}")
    if args.command == "probes":
        return call(base, token, "GET", "/probes")
    if args.action == "list":
        return call(base, token, "GET", "/peers")
    if args.action == "add":
        return call(base, token, "POST", "/peers", _read_peer(args.file))
    path = _peer_path(args.role, args.peer_id)
    if args.action == "show":
        return call(base, token, "GET", path)
    if args.action == "probe":
        return call(base, token, "POST", path + "/probe")
    if args.action == "remove":
        call(base, token, "DELETE", path)
        return {"removed": args.peer_id, "role": args.role}
    return call(base, token, "PATCH", path, {"enabled": args.action == "enable"})


def main() -> None:
    try:
        result = run(sys.argv[1:])
    except CliError as exc:
        print(f"oicp-p2p: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    if isinstance(result, dict) and result.get("ok") is False and "failed_step" in result:
        # a probe that failed: the answer is printed, the exit code says it failed (scripts, cron)
        print(f"oicp-p2p: probe of {result.get('peer_id')} failed: {result.get('reason')}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
