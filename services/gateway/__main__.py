"""Run the gateway: the OICP port and the internal port in one process, one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Generator
from typing import Any

import uvicorn

from services.gateway.context import SERVICE, GatewayContext
from services.gateway.internal_api import create_internal_app
from services.gateway.oicp_face import create_oicp_app
from services.gateway.protocol import GuardedHttpProtocol, guarded
from services.gateway.tls import ClientCertHttpProtocol, ServerTls
from shared.journal.recorder import JOURNAL
from shared.logs import setup_logging
from shared.settings import ConfigError, load_settings
from shared.stores.redis import KeySpace, create_redis


class _Server(uvicorn.Server):
    """uvicorn.Server without its own signal handling: serve() stops all servers together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve() -> None:
    settings = load_settings()
    setup_logging(settings.name, SERVICE, settings.log_level)
    ctx = GatewayContext.build(settings)
    await ctx.start()
    # the exchange journal of the OICP face, on a Redis pool of its own (its writes never queue behind the answers')
    journal_redis = create_redis(settings.redis, f"{settings.name}-{SERVICE}-journal")
    await JOURNAL.start(settings.name, settings.journal, journal_redis, KeySpace(settings.redis.key_prefix))

    def server(app: object, host: str, port: int, **options: Any) -> uvicorn.Server:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="uvloop",
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
            **{"http": "httptools", **options},
        )
        return _Server(config)

    # The OICP port with TLS: our own (reloading) context, and a protocol that hands the client
    # certificate to the app. The internal port stays plain HTTP on its own interface.
    header_timeout = settings.oicp.header_timeout_seconds
    oicp_tls: dict[str, Any] = {"http": guarded(GuardedHttpProtocol, header_timeout)}
    if settings.oicp.tls is not None:
        server_tls = ServerTls(settings.oicp.tls)
        oicp_tls = {
            "http": guarded(ClientCertHttpProtocol, header_timeout),
            "ssl_context_factory": server_tls.uvicorn_factory,
        }
    servers = [
        server(create_oicp_app(ctx), settings.oicp.host, settings.oicp.port, **oicp_tls),
        server(create_internal_app(ctx), settings.internal.host, settings.internal.port),
    ]

    def stop() -> None:
        for s in servers:
            s.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        await asyncio.gather(*(s.serve() for s in servers))
    finally:
        stop()
        await JOURNAL.stop()
        await journal_redis.aclose()
        await ctx.stop()


def main() -> None:
    try:
        import uvloop

        uvloop.run(serve())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
