"""The authorization benchmark's bare EMP endpoints: the least an EMP must do to answer AuthorizeStart.

``python -m bench.authorization_baseline --ports P0,P1,… --hash-prefix K --redis-url U`` serves one
Starlette app with uvicorn (uvloop, httptools, no access log) on every port. A POST to any path parses
the JSON body (orjson), takes the medium's key (the upper-cased UID, or the EvcoID upper-cased without
separators — the node's keys), does **one** ``HGET`` of it in the plain Redis hash ``K<i>`` (``i``: the
index of the port the request came in on) and answers an OICP-shaped AuthorizationStart: ``Authorized``
with a new SessionID and the ProviderID of the stored record, else ``NotAuthorized`` 102 (RFID) / 105
(other media). No bearer token check, no validation, no broker, no ledger, no events.

It prints ``ready`` once listening, and exits when its stdin closes (the benchmark's process went
away, however it ended).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import uuid

import orjson
import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def medium_key(identification: dict[str, dict[str, str]]) -> tuple[str, bool]:
    """(store key, is RFID) of an OICP Identification, as the node keys its token store."""
    member = next(iter(identification.values()))
    if "UID" in member:
        return member["UID"].upper(), True
    return member["EvcoID"].upper().replace("-", "").replace("*", ""), False


def create_app(redis: aioredis.Redis, hashes: dict[int, str]) -> Starlette:
    async def authorize_start(request: Request) -> Response:
        body = orjson.loads(await request.body())
        key, rfid = medium_key(body["Identification"])
        raw = await redis.hget(hashes[request.scope["server"][1]], key)
        if raw is not None:
            record = orjson.loads(raw)
            answer = {
                "AuthorizationStatus": "Authorized",
                "SessionID": str(uuid.uuid4()),
                "ProviderID": record["provider_id"],
                "StatusCode": {"Code": "000"},
            }
        else:
            answer = {
                "AuthorizationStatus": "NotAuthorized",
                "StatusCode": {"Code": "102" if rfid else "105", "AdditionalInfo": "unknown authentication medium"},
            }
        return Response(orjson.dumps(answer), media_type="application/json")

    async def ready(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(routes=[Route("/ready", ready), Route("/{path:path}", authorize_start, methods=["POST"])])


async def main_async(args: argparse.Namespace) -> None:
    ports = [int(p) for p in args.ports.split(",")]
    redis = aioredis.from_url(args.redis_url)
    app = create_app(redis, {port: f"{args.hash_prefix}{i}" for i, port in enumerate(ports)})
    sockets = []
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sockets.append(sock)
    config = uvicorn.Config(app, loop="uvloop", http="httptools", access_log=False, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    loop = asyncio.get_running_loop()
    serving = asyncio.create_task(server.serve(sockets=sockets))
    for _ in range(600):  # uvicorn offers no event for "listening"
        if server.started:
            break
        await asyncio.sleep(0.05)
    print("ready", flush=True)
    # stdin closes when the benchmark's process goes away, whatever way it ended
    await loop.run_in_executor(None, sys.stdin.buffer.read)
    server.should_exit = True
    await serving
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", required=True, help="comma-separated ports, one endpoint each")
    parser.add_argument("--hash-prefix", required=True, help="Redis hash of port i: <prefix><i>")
    parser.add_argument("--redis-url", required=True)
    import uvloop

    uvloop.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
