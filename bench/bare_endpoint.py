"""The gateway ingest scenario's baseline: ``python -m bench.bare_endpoint PORT``.

A bare Starlette app with one POST route for any path, served like the gateway serves its OICP port
(uvicorn, one process, uvloop, httptools, no access log, no lifespan): it reads the body, parses the
JSON with orjson and answers an OICP acknowledgement (``Result: true``, ``StatusCode 000``). No
caller identification, no validation, no broker, no Redis: what HTTP + JSON alone cost here.
"""

from __future__ import annotations

import sys

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ACK = orjson.dumps({"Result": True, "StatusCode": {"Code": "000", "Description": "Success"}})


async def ingest(request: Request) -> Response:
    body = orjson.loads(await request.body())
    if not isinstance(body, dict):
        return Response(b'{"Result":false,"StatusCode":{"Code":"019"}}', 400, media_type="application/json")
    return Response(ACK, media_type="application/json")


app = Starlette(routes=[Route("/{path:path}", ingest, methods=["POST"])])


def main() -> None:
    port = int(sys.argv[1])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
