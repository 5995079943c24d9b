"""The exchange journal on the internal API: search, chain verification, the node's public key and the
signed export of a peer's entries (README, Exchange journal)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.gateway.context import GatewayContext
from shared.journal import bundle, signing
from shared.journal.entry import unpack_body
from shared.journal.store import MAX_SEARCH, JournalStore, Query
from shared.stores.redis import KeySpace

Endpoint = Callable[[Request], Awaitable[Response]]
SIGNATURE_HEADER = "X-Journal-Signature"
BUNDLE_MEDIA_TYPE = "application/x-ndjson"


class _JSON(Response):
    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


def _problem(status: int, detail: str) -> Response:
    return _JSON({"error": detail}, status_code=status)


def parse_moment(name: str, raw: str | None) -> float | None:
    """ISO 8601 (UTC if no offset) or Unix seconds."""
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(raw.replace(" ", "+"))  # a "+" in a query string arrives as " "
    except ValueError:
        raise ValueError(f"{name} must be an ISO 8601 time or Unix seconds, got {raw!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _with_bodies(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry plus its bodies decoded (JSON when they are), for reading; the sealed fields unchanged."""
    out = dict(entry)
    for field in ("request", "response"):
        raw = unpack_body(entry.get(f"{field}_body"))
        if raw is None:
            continue
        try:
            out[field] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            out[field] = raw.decode(errors="replace")
    return out


def journal_routes(ctx: GatewayContext, protected: Callable[[Endpoint], Endpoint]) -> list[Route]:
    store = JournalStore(ctx.redis, KeySpace(ctx.settings.redis.key_prefix))
    settings = ctx.settings.journal

    async def search(request: Request) -> Response:
        params = request.query_params
        raw_limit = params.get("limit", "100")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_SEARCH:
            raise ValueError(f"limit must be an integer from 1 to {MAX_SEARCH}")
        query = Query(
            session=params.get("session"),
            evse=params.get("evse"),
            cdr=params.get("cdr"),
            peer=params.get("peer"),
            operation=params.get("operation"),
            status=params.get("status"),
            start=parse_moment("from", params.get("from")),
            end=parse_moment("to", params.get("to")),
            limit=int(raw_limit),
        )
        entries = await store.search(query)
        if params.get("bodies", "false").lower() in ("1", "true", "yes"):
            entries = [_with_bodies(e) for e in entries]
        return _JSON({"entries": entries, "count": len(entries)})

    async def verify(request: Request) -> Response:
        raw = request.query_params.get("from_seq")
        if raw is not None and not raw.isdigit():
            raise ValueError("from_seq must be a positive integer")
        return _JSON(await store.verify(int(raw) if raw else None))

    def _key() -> Any:
        if settings.signing_key_file is None:
            return None
        return signing.load_private(settings.signing_key_file)

    async def public_key(request: Request) -> Response:
        try:
            key = _key()
        except signing.KeyError_ as exc:
            return _problem(503, str(exc))
        if key is None:
            return _problem(404, "no signing key configured (journal.signing_key_file)")
        return _JSON({"algorithm": "Ed25519", "public_key": signing.public_pem(key), "node": ctx.settings.name})

    async def export(request: Request) -> Response:
        params = request.query_params
        peer = params.get("peer")
        if not peer:
            raise ValueError("peer is required")
        start, end = parse_moment("from", params.get("from")), parse_moment("to", params.get("to"))
        try:
            key = _key()
        except signing.KeyError_ as exc:
            return _problem(503, str(exc))
        if key is None:
            return _problem(409, "no signing key configured (journal.signing_key_file): nothing can be signed")
        data = bundle.build(ctx.settings.name, peer, start, end, await store.export(peer, start, end))
        return Response(
            data,
            media_type=BUNDLE_MEDIA_TYPE,
            headers={SIGNATURE_HEADER: signing.sign(key, data)},
        )

    return [
        Route("/journal", protected(search), methods=["GET"]),
        Route("/journal/verify", protected(verify), methods=["GET"]),
        Route("/journal/public-key", protected(public_key), methods=["GET"]),
        Route("/journal/export", protected(export), methods=["GET"]),
    ]
