"""Run whole nodes: the gateway and every worker of each node as separate processes.

``python -m shared.node deploy/config/demo-cpo.yaml deploy/config/demo-emp.yaml`` is what ``make run``
does; the end-to-end tests start nodes the same way. Output of every process goes to this console,
each line already tagged ``node/service`` by the services' log format. Ctrl-C (or SIGTERM) stops
every process gracefully; a process that dies is restarted, except on a configuration error.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.settings import CONFIG_ENV, WORKER_SERVICES, ConfigError, load_settings

SERVICES = ("gateway", *WORKER_SERVICES)
CONFIG_ERROR_EXIT = 2


@dataclass
class Child:
    node: str
    service: str
    config: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        env = dict(os.environ, **{CONFIG_ENV: str(self.config)})
        if self.service == DEMO_BACKEND:
            argv = [sys.executable, str(DEMO_BACKEND_SCRIPT)]
        else:
            argv = [sys.executable, "-m", f"services.{self.service}"]
        self.process = subprocess.Popen(argv, env=env)


# The demo's stand-in for a CPO's charge point backend (answers remote starts and reservations).
DEMO_BACKEND = "demo-backend"
DEMO_BACKEND_SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "scripts" / "demo_backend.py"


def run(configs: list[Path], demo_backend_for: list[Path] | None = None) -> int:
    children: list[Child] = []
    # Here every process of every node shares one host: a port taken twice would leave a worker
    # restarting forever. (In containers the workers may all use one port: each has its own address.)
    port_owners: dict[int, str] = {}
    for config in configs:
        try:
            settings = load_settings(config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return CONFIG_ERROR_EXIT
        for key, port in settings.listen_ports().items():
            if (owner := port_owners.get(port)) is not None:
                print(f"{config}: {key} is {port}, which {owner} has already", file=sys.stderr)
                return CONFIG_ERROR_EXIT
            port_owners[port] = f"{key} of {config}"
        children += [Child(settings.name, service, config) for service in SERVICES]
        if config in (demo_backend_for or []):
            children.append(Child(settings.name, DEMO_BACKEND, config))
        print(
            f"node {settings.name}: OICP on {'https' if settings.oicp.tls else 'http'}://{settings.oicp.host}:"
            f"{settings.oicp.port}, internal API on "
            f"http://{settings.internal.host}:{settings.internal.port}, worker metrics on ports "
            + ", ".join(f"{s} {settings.metrics.port_of(s)}" for s in WORKER_SERVICES),
            flush=True,
        )

    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for child in children:
        child.start()
    exit_code = 0
    while not stopping:
        time.sleep(0.2)
        for child in children:
            assert child.process is not None
            code = child.process.poll()
            if code is None or stopping:
                continue
            if code == CONFIG_ERROR_EXIT:
                print(f"{child.node}/{child.service} refused its configuration; stopping", file=sys.stderr)
                stopping, exit_code = True, CONFIG_ERROR_EXIT
                break
            now = time.monotonic()
            child.restarts = [t for t in child.restarts if now - t < 60] + [now]
            print(f"{child.node}/{child.service} exited with {code}; restarting", file=sys.stderr, flush=True)
            time.sleep(min(5.0, 0.5 * len(child.restarts)))
            child.start()
    for child in children:
        if child.process and child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        if child.process is None:
            continue
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
    print("all processes stopped", flush=True)
    return exit_code


def main() -> None:
    parser = argparse.ArgumentParser(description="Run oicp-p2p nodes (every service as a process).")
    parser.add_argument("configs", nargs="+", type=Path, help="node configuration files (YAML)")
    parser.add_argument(
        "--demo-backend",
        action="append",
        type=Path,
        default=[],
        metavar="CONFIG",
        help="also run the demo charge point backend for this node (one of the configs)",
    )
    args = parser.parse_args()
    sys.exit(run(args.configs, args.demo_backend))


if __name__ == "__main__":
    main()
