"""``oicp-p2p peers …`` and ``oicp-p2p routes …`` against a real node's internal API: an operations
team registers, disables, enables and removes a peer and asks where an ID is routed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EMP_ID, Pair
from tests.support.nodes import REPO, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

NEW_PEER = "DE-CLI"


async def cli(*args: str) -> tuple[int, Any, str]:
    """Run the command line as an operator would; (exit code, JSON output or None, stderr)."""

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shared.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=60
        )

    done = await asyncio.to_thread(run)
    output = json.loads(done.stdout) if done.stdout.strip() else None
    return done.returncode, output, done.stderr


def endpoint(pair: Pair) -> list[str]:
    return ["--url", pair.cpo.internal_url, "--token", pair.cpo.internal_token]


async def test_a_peers_life_through_the_command_line(pair: Pair, tmp_path: Path) -> None:
    peer_file = tmp_path / "peer.yaml"
    peer_file.write_text(
        f"id: {NEW_PEER}\nrole: emp\nbase_url: http://127.0.0.1:{free_port()}\ninbound_token: cli-secret\n"
    )
    code, added, err = await cli(*endpoint(pair), "peers", "add", str(peer_file))
    assert code == 0, err
    assert added["id"] == NEW_PEER and added["has_inbound_token"] and "cli-secret" not in json.dumps(added)
    try:
        code, peers, _ = await cli(*endpoint(pair), "peers", "list")
        assert code == 0 and {NEW_PEER, EMP_ID} <= {p["id"] for p in peers}

        code, shown, _ = await cli(*endpoint(pair), "peers", "disable", "emp", NEW_PEER)
        assert code == 0 and shown["enabled"] is False
        code, routes, _ = await cli(*endpoint(pair), "routes", "DE-CLI-C12345678-X")
        assert code == 0 and routes == [
            {"id": "DE-CLI-C12345678-X", "kind": "EvcoID", "role": "emp", "key": "DECLI", "peer_id": None, "via": None}
        ]
        code, shown, _ = await cli(*endpoint(pair), "peers", "enable", "emp", NEW_PEER)
        assert code == 0 and shown["enabled"] is True
        code, routes, _ = await cli(*endpoint(pair), "routes", "DE-CLI-C12345678-X")
        assert routes[0]["peer_id"] == NEW_PEER and routes[0]["via"] == "direct"
        code, shown, _ = await cli(*endpoint(pair), "peers", "show", "emp", NEW_PEER)
        assert code == 0 and shown["id"] == NEW_PEER and shown["enabled"] is True
    finally:
        code, removed, err = await cli(*endpoint(pair), "peers", "remove", "emp", NEW_PEER)
    assert code == 0 and removed == {"removed": NEW_PEER, "role": "emp"}, err
    code, _, err = await cli(*endpoint(pair), "peers", "show", "emp", NEW_PEER)
    assert code == 1 and "HTTP 404" in err


async def test_the_command_line_finds_the_node_from_its_configuration(pair: Pair) -> None:
    config = next(c for c in pair.processes.configs if c.stem == pair.cpo.name)
    code, peers, err = await cli("--config", str(config), "peers", "list")
    assert code == 0, err
    assert EMP_ID in {p["id"] for p in peers}


async def test_the_command_line_says_what_went_wrong(pair: Pair) -> None:
    code, _, err = await cli("--url", pair.cpo.internal_url, "--token", "wrong", "peers", "list")
    assert code == 1 and "HTTP 401" in err
    code, _, err = await cli(*endpoint(pair), "peers", "remove", "emp", EMP_ID)  # defined in the file
    assert code == 1 and "configuration file" in err
    code, _, err = await cli("--url", f"http://127.0.0.1:{free_port()}", "--token", "x", "peers", "list")
    assert code == 2 and "cannot reach" in err
    code, _, err = await cli("peers", "list")
    assert code == 2 and "--url" in err
