"""What every worker process shares: settings loading, logging, and the FastStream run loop."""

from __future__ import annotations

import sys
from collections.abc import Callable

from faststream import FastStream

from shared.logs import setup_logging
from shared.settings import ConfigError, NodeSettings, load_settings


def run_worker(service: str, create_app: Callable[[NodeSettings], FastStream]) -> None:
    """Entry point of ``python -m services.<service>``: config from $OICP_P2P_CONFIG, exit 2 on a
    bad configuration (the message names the key), SIGTERM/SIGINT stop it gracefully."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    setup_logging(settings.name, service, settings.log_level)
    import uvloop

    uvloop.run(create_app(settings).run())
