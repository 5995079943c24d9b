"""The internal API: for the company's own systems and operators, on its own port, token-protected.

It publishes exactly the commands of the bus (``POST /commands/{type}``), manages peers (the P2P
counterpart of Hubject's RegisterProvider / RegisterOperator), shows look-ups and delivery state,
and serves ``/readyz`` and ``/metrics`` (with the internal token or the read-only
``internal.monitoring_token``). Without a token: ``/healthz`` (liveness probes) and the OpenAPI documents
``/openapi/oicp.json`` and ``/openapi/internal.json`` (documentation, no data).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import orjson
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.context import GatewayContext
from services.gateway.journal_api import journal_routes
from services.gateway.node_metrics import NodeMetrics
from services.gateway.openapi import openapi_routes
from shared.bus.client import BusUnavailable
from shared.bus.inspect import DeadLetterQueue
from shared.bus.messages import COMMAND_PAYLOADS, INTERNAL_COMMANDS, CommandType, EvseStatusSet, Payload
from shared.metrics import bearer_matches, metrics_endpoint
from shared.oicp import StatusCodeValue
from shared.oicp.ids import normalize_id, operator_id_of_evse
from shared.oicp.messages import DEFAULT_PAGE_SIZE
from shared.oicp.messages import MAX_CDR_PAGE_SIZE as MAX_PAGE_SIZE
from shared.peers.client import PeerClient
from shared.peers.probe import PeerProber
from shared.peers.registry import PeerConflict
from shared.peers.routing import explain
from shared.settings import PeerConfig, PushOperation, Role
from shared.stores.evse_data import EvseDataQuery
from shared.stores.pull_state import GET_CHARGE_DETAIL_RECORDS
from shared.stores.sessions import SessionState

logger = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


# Commands whose negative outcome is still an answer (a refused remote start, a NotAuthorized medium):
# HTTP 200 with the outcome, as long as the worker replied.
OUTCOME_COMMANDS = frozenset(
    {
        CommandType.CPO_AUTHORIZE_START,
        CommandType.CPO_AUTHORIZE_STOP,
        CommandType.EMP_REMOTE_START,
        CommandType.EMP_REMOTE_STOP,
        CommandType.EMP_RESERVATION_START,
        CommandType.EMP_RESERVATION_STOP,
        CommandType.CPO_SESSION_NOTIFY,
        CommandType.EMP_CDR_FETCH,
    }
)
# Commands whose outcome the internal API waits for (request/reply); the others are queued (202).
REPLYING_COMMANDS = frozenset(
    {
        CommandType.CPO_EVSE_DATA_SET,
        CommandType.CPO_PRICING_PRODUCTS_SET,
        CommandType.CPO_EVSE_PRICING_SET,
        CommandType.EMP_TOKEN_SET,
        CommandType.CPO_CDR_SUBMIT,
        CommandType.CPO_CDR_REPLAY,
        *OUTCOME_COMMANDS,
    }
)
REPLY_HTTP_STATUS = {StatusCodeValue.DATA_TRANSACTION_ERROR: 409}


def command_role(command: CommandType) -> Role | None:
    """The role whose workers take a command (its name's ``cpo.``/``emp.`` prefix), None if any."""
    prefix = command.value.partition(".")[0]
    return Role(prefix) if prefix in {r.value for r in Role} else None


class JSON(Response):
    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


def problem(status: int, detail: str, errors: list[dict[str, str]] | None = None) -> JSON:
    body: dict[str, object] = {"error": detail}
    if errors:
        body["errors"] = errors
    return JSON(body, status_code=status)


def validation_problem(exc: ValidationError) -> JSON:
    errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
    return problem(422, "invalid request: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3]), errors)


async def json_body(request: Request) -> object:
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from exc


# Every answer of the internal API: nothing is cached, sniffed, framed or loaded from elsewhere, and
# no browser may call it from another origin (no CORS headers are ever sent, so none may).
SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """Pure ASGI (ENGINEERING: BaseHTTPMiddleware layers cost most of the throughput)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_internal_app(ctx: GatewayContext) -> ASGIApp:
    expected = ctx.settings.internal.token.get_secret_value().encode()
    monitoring_tokens = ctx.settings.internal.monitoring_tokens()
    node_metrics = NodeMetrics(ctx)
    # On-demand peer probes: their own pooled session (the gateway makes no other outbound OICP calls),
    # counted against the peer's outbound rate limits like every call of the node.
    probe_client = PeerClient.create(limiter=ctx.rate_limiter)
    prober = PeerProber(ctx.settings, probe_client)
    dead_letter_queue = DeadLetterQueue(node_metrics.inspector, ctx.topology.dead_letters.name)

    def bearer_is(request: Request, tokens: list[bytes]) -> bool:
        return bearer_matches(request.headers.get("authorization", ""), tokens)

    def monitored(endpoint: Endpoint) -> Endpoint:
        """/readyz and /metrics: the internal token or the monitoring token."""

        async def wrapper(request: Request) -> Response:
            if not bearer_is(request, monitoring_tokens):
                return problem(401, "missing or wrong bearer token")
            return await endpoint(request)

        return wrapper

    def protected(endpoint: Endpoint) -> Endpoint:
        async def wrapper(request: Request) -> Response:
            if not bearer_is(request, [expected]):
                return problem(401, "missing or wrong bearer token")
            try:
                return await endpoint(request)
            except ValueError as exc:
                return problem(400, str(exc))
            except BusUnavailable as exc:
                return problem(503, str(exc))

        return wrapper

    async def healthz(request: Request) -> Response:
        return JSON({"status": "ok", "node": ctx.settings.name})

    async def readyz(request: Request) -> Response:
        checks = await ctx.ready()
        return JSON({"ready": all(checks.values()), "checks": checks}, status_code=200 if all(checks.values()) else 503)

    # ---- peers --------------------------------------------------------------------------------

    async def list_peers(request: Request) -> Response:
        return JSON([p.public_view() for p in await ctx.registry.all(fresh=True)])

    async def add_peer(request: Request) -> Response:
        try:
            peer = PeerConfig.model_validate(await json_body(request))
        except ValidationError as exc:
            return validation_problem(exc)
        if not ctx.registry.knows_profile(peer.profile):
            detail = f"profile: {peer.profile!r} is neither built in nor in the configuration's profiles"
            return problem(422, f"invalid request: {detail}", [{"field": "profile", "message": detail}])
        try:
            stored = await ctx.registry.add(peer)
        except PeerConflict as exc:
            return problem(409, str(exc))
        return JSON(stored.public_view(), status_code=201)

    def _role(request: Request) -> Role:
        try:
            return Role(request.path_params["role"])
        except ValueError as exc:
            raise ValueError("role must be 'cpo' or 'emp'") from exc

    async def show_peer(request: Request) -> Response:

        peer = await ctx.registry.get(_role(request), normalize_id(request.path_params["peer_id"]))
        if peer is None:
            return problem(404, "no such peer")
        view = peer.public_view()
        if peer.role is Role.EMP:
            view["delivery"] = [(await ctx.delivery.state(peer.id, peer.key, op)).as_dict() for op in peer.push]
        elif peer.pull is not None:
            view["pulls"] = await ctx.pulls.pull_state(peer)
        if (probe := await ctx.probes.get(peer.role.value, peer.key)) is not None:
            view["probe"] = probe
        return JSON(view)

    async def remove_peer(request: Request) -> Response:
        try:
            removed = await ctx.registry.remove(_role(request), normalize_id(request.path_params["peer_id"]))
        except PeerConflict as exc:
            return problem(409, str(exc))
        return Response(status_code=204) if removed else problem(404, "no such peer")

    async def switch_peer(request: Request) -> Response:
        """``{"enabled": false}`` stops all traffic with a peer (file or API peer) without deleting it."""
        body = await json_body(request)
        if not isinstance(body, dict) or set(body) != {"enabled"} or not isinstance(body["enabled"], bool):
            return problem(422, 'body must be {"enabled": true} or {"enabled": false}')
        peer = await ctx.registry.set_enabled(
            _role(request), normalize_id(request.path_params["peer_id"]), body["enabled"]
        )
        if peer is None:
            return problem(404, "no such peer")
        return JSON(peer.public_view())

    # ---- peer probes --------------------------------------------------------------------------

    async def probe_peer(request: Request) -> Response:
        """Probe the peer now (DNS, TCP, TLS, an OICP round trip), store the result and return it; a
        failed probe is still a 200 (``ok: false``, ``failed_step``, ``reason``). Disabled peers too."""
        peer = await ctx.registry.get(_role(request), normalize_id(request.path_params["peer_id"]))
        if peer is None:
            return problem(404, "no such peer")
        result = (await prober.probe(peer)).as_dict()
        await ctx.probes.save(peer.role.value, peer.key, result)
        return JSON(result)

    async def list_probes(request: Request) -> Response:
        """The latest probe of every registered peer (periodic or on demand); never-probed peers are absent."""
        results = await ctx.probes.all()
        found = [results.get(ctx.probes.field(p.role.value, p.key)) for p in await ctx.registry.all(fresh=True)]
        return JSON([r for r in found if r is not None])

    # ---- commands -----------------------------------------------------------------------------

    async def send_command(request: Request) -> Response:
        name = request.path_params["command"]
        try:
            command = CommandType(name)
        except ValueError:
            command = None
        if command is None or command not in INTERNAL_COMMANDS:
            allowed = ", ".join(sorted(c.value for c in INTERNAL_COMMANDS))
            return problem(404, f"no internal command {name!r}; commands: {allowed}")
        role = command_role(command)
        if role is not None and role not in ctx.settings.roles:
            # Its queue has no consumer on this node: it would wait (or sit) there for ever.
            roles = ", ".join(sorted(r.value.upper() for r in ctx.settings.roles))
            return problem(404, f"{name} is a command of the {role.value.upper()} role; this node is {roles}")
        try:
            payload: Payload = COMMAND_PAYLOADS[command].model_validate(await json_body(request))
        except ValidationError as exc:
            return validation_problem(exc)
        if isinstance(payload, EvseStatusSet):
            foreign = [r.evse_id for r in payload.records if ctx.settings.own_operator_of(r.evse_id) is None]
            if foreign:
                return problem(422, f"EvseIDs not of this node's operators {ctx.settings.operator_ids}: {foreign[:5]}")
        correlation_id = request.headers.get("x-correlation-id")
        if command in REPLYING_COMMANDS:
            # insert/update can conflict (009): the caller gets the worker's verdict, not just "queued".
            reply = await ctx.rpc.request(
                command, payload, timeout=ctx.reply_timeout(command), correlation_id=correlation_id
            )
            if reply.ok or command in OUTCOME_COMMANDS:
                status = 200
            else:
                status = REPLY_HTTP_STATUS.get(reply.code, 422)
            return JSON({"type": command.value, **reply.model_dump(mode="json")}, status_code=status)
        envelope = await ctx.bus.send_command(command, payload, correlation_id=correlation_id)
        return JSON({"accepted": True, "event_id": str(envelope.event_id), "type": command.value}, status_code=202)

    # ---- look-ups -----------------------------------------------------------------------------

    async def evse_status(request: Request) -> Response:
        evse_id = request.path_params["evse_id"]
        try:
            own, roaming = (
                (await ctx.own_status.get_many([evse_id]))[evse_id],
                (await ctx.roaming_status.get_many([evse_id]))[evse_id],
            )
        except ValueError as exc:
            return problem(422, str(exc))
        if own is None and roaming is None:
            return problem(404, f"no status known for {evse_id}")
        stored = own or roaming
        assert stored is not None
        return JSON(
            {
                "EvseID": evse_id,
                "EvseStatus": stored.status,
                "changed_at": stored.changed_at,
                "source": "own" if own else "roaming",
            }
        )

    def _scope(request: Request) -> str:
        scope = request.query_params.get("scope", "roaming" if Role.EMP in ctx.settings.roles else "own")
        if scope not in ("own", "roaming"):
            raise ValueError("scope must be 'own' (this CPO's EVSEs) or 'roaming' (what CPO peers pushed)")
        return scope

    def _int_param(request: Request, name: str, default: int, maximum: int) -> int:
        raw = request.query_params.get(name)
        try:
            value = default if raw is None else int(raw)
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {raw!r}") from None
        if not 0 <= value <= maximum:
            raise ValueError(f"{name} must be between 0 and {maximum}, got {value}")
        return value

    def _float_param(request: Request, name: str) -> float | None:
        raw = request.query_params.get(name)
        try:
            return None if raw is None else float(raw)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {raw!r}") from None

    async def list_evses(request: Request) -> Response:
        """EVSEs with their status, by operator and/or by area, paged (served from the indexes)."""
        scope = _scope(request)
        data = ctx.own_data if scope == "own" else ctx.roaming_data
        statuses = ctx.own_status if scope == "own" else ctx.roaming_status
        page = _int_param(request, "page", 0, 1_000_000)
        size = _int_param(request, "size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        query = EvseDataQuery(operator_ids=request.query_params.getlist("operator"))
        lat, lon, radius = (_float_param(request, n) for n in ("lat", "lon", "radius_km"))
        if (lat, lon, radius) != (None, None, None):
            if None in (lat, lon, radius):
                raise ValueError("an area needs lat, lon and radius_km")
            query.search_center = (lat, lon, radius)  # type: ignore[assignment]
        records, total = await data.query(query, page, size)
        found = await statuses.get_many([r["EvseID"] for r in records]) if records else {}
        for record in records:
            stored = found.get(record["EvseID"])
            record["EvseStatus"] = stored.status if stored else None
        return JSON({"scope": scope, "page": page, "size": size, "totalElements": total, "content": records})

    async def show_evse(request: Request) -> Response:
        """One EVSE's data and status, from this node's own EVSEs or from what CPO peers pushed."""
        evse_id = request.path_params["evse_id"]
        try:
            operator_id_of_evse(evse_id)
        except ValueError as exc:
            return problem(422, str(exc))
        for scope, data, statuses in (
            ("own", ctx.own_data, ctx.own_status),
            ("roaming", ctx.roaming_data, ctx.roaming_status),
        ):
            stored = (await data.get_many([evse_id]))[evse_id]
            status = (await statuses.get_many([evse_id]))[evse_id]
            if stored is None and status is None:
                continue
            return JSON(
                {
                    "EvseID": evse_id,
                    "scope": scope,
                    "OperatorID": stored.operator_id if stored else None,
                    "OperatorName": stored.operator_name if stored else None,
                    "lastUpdate": stored.last_update.isoformat() if stored else None,
                    "data": stored.record if stored else None,
                    "EvseStatus": status.status if status else None,
                    "status_changed_at": status.changed_at if status else None,
                }
            )
        return problem(404, f"no data or status known for {evse_id}")

    async def delivery_state(request: Request) -> Response:
        lanes = []
        for peer in await ctx.registry.enabled(Role.EMP):
            for op in peer.push:
                lanes.append((await ctx.delivery.state(peer.id, peer.key, PushOperation(op))).as_dict())
        return JSON(lanes)

    async def pull_states(request: Request) -> Response:
        """The scheduled pulls from pull-only CPO peers: cursor, last success, last error, next attempt."""
        states = [
            {"peer_id": peer.id, **await ctx.pulls.pull_state(peer)}
            for peer in await ctx.registry.enabled(Role.CPO)
            if peer.pull is not None
        ]
        return JSON(states)

    # ---- routing ------------------------------------------------------------------------------

    async def show_route(request: Request) -> Response:
        """Where a call for this ID would go: its direct peer, the default route (the hub), or none;
        one entry per reading of the ID (``DE*ABC`` is an OperatorID and a ProviderID alike)."""
        any_id = request.path_params["id"]
        readings = await explain(ctx.registry, any_id)
        if not readings:
            return problem(422, f"{any_id!r} is not an EvseID, EvcoID, OperatorID or ProviderID")
        return JSON(readings)

    # ---- sessions -----------------------------------------------------------------------------

    async def show_session(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        session = await ctx.sessions.get(session_id)
        if session is None:
            return problem(404, f"no session {session_id}")
        return JSON({**session.as_dict(), "history": await ctx.sessions.history(session_id)})

    async def list_sessions(request: Request) -> Response:
        """Sessions by state (most recently changed first) or by EVSE; without a filter, the counts."""
        limit = _int_param(request, "limit", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        state, evse_id = request.query_params.get("state"), request.query_params.get("evse")
        if state is not None:
            try:
                wanted = SessionState(state)
            except ValueError:
                raise ValueError(f"state must be one of {', '.join(s.value for s in SessionState)}") from None
            sessions = await ctx.sessions.by_state(wanted, limit)
            if evse_id is not None:
                sessions = [s for s in sessions if s.evse_id == evse_id]
        elif evse_id is not None:
            sessions = await ctx.sessions.by_evse(evse_id, limit)
        else:
            return JSON({"counts": await ctx.sessions.count_by_state()})
        return JSON({"sessions": [s.as_dict() for s in sessions]})

    async def sessions_without_cdr(request: Request) -> Response:
        """Ended sessions still waiting for their CDR, longer than ``older_than`` seconds (default: the
        configured cdr_missing_after_seconds)."""
        raw = request.query_params.get("older_than")
        try:
            older_than = float(raw) if raw is not None else ctx.settings.sessions.cdr_missing_after_seconds
        except ValueError:
            raise ValueError(f"older_than must be a number of seconds, got {raw!r}") from None
        limit = _int_param(request, "limit", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        return JSON({"sessions": [s.as_dict() for s in await ctx.sessions.without_cdr(older_than, limit)]})

    # ---- tokens (EMP role) -------------------------------------------------------------------

    async def list_tokens(request: Request) -> Response:
        """The token store in key order, paged (PINs are never shown)."""
        page = _int_param(request, "page", 0, 1_000_000)
        size = _int_param(request, "size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        tokens = await ctx.tokens.page(page * size, size)
        return JSON(
            {"total": await ctx.tokens.count(), "page": page, "size": size, "tokens": [t.as_dict() for t in tokens]}
        )

    async def show_token(request: Request) -> Response:
        stored = await ctx.tokens.get(request.path_params["key"])
        if stored is None:
            return problem(404, f"no token {request.path_params['key']}")
        return JSON(stored.as_dict())

    # ---- CDRs -----------------------------------------------------------------------------------

    def _moment(request: Request, name: str) -> datetime | None:
        raw = request.query_params.get(name)
        if raw is None:
            return None
        try:
            moment = datetime.fromisoformat(raw.replace(" ", "+"))  # a "+" in a query string arrives as " "
        except ValueError:
            raise ValueError(f"{name} must be an ISO 8601 time, got {raw!r}") from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    def _direction(request: Request) -> str:
        direction = request.query_params.get("direction", "in" if Role.EMP in ctx.settings.roles else "out")
        if direction not in ("in", "out"):
            raise ValueError("direction must be 'in' (received from CPO peers) or 'out' (submitted, to EMP peers)")
        return direction

    async def show_cdr(request: Request) -> Response:
        """A CDR by SessionID: as submitted and delivered (out), as received (in), or both."""
        session_id = request.path_params["session_id"]
        sent, received = await ctx.cdr_outbox.get(session_id), await ctx.cdr_inbox.get(session_id)
        if sent is None and received is None:
            return problem(404, f"no CDR for session {session_id}")
        return JSON({"out": sent.as_dict() if sent else None, "in": received.as_dict() if received else None})

    async def list_cdrs(request: Request) -> Response:
        """CDRs by time or by peer (``peer``), oldest first, paged."""
        page = _int_param(request, "page", 0, 1_000_000)
        size = _int_param(request, "size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        from_, to = _moment(request, "from"), _moment(request, "to")
        peer = request.query_params.get("peer")
        store = ctx.cdr_inbox if _direction(request) == "in" else ctx.cdr_outbox
        if peer is not None:
            found = await store.by_peer(normalize_id(peer), from_, to, page * size, size)
        else:
            found = await store.by_time(from_, to, page * size, size)
        return JSON({"page": page, "size": size, "cdrs": [c.as_dict() for c in found]})

    async def parked_cdrs(request: Request) -> Response:
        """CDRs whose delivery was given up after cdr.max_attempts (or refused): replay with cpo.cdr.replay."""
        page = _int_param(request, "page", 0, 1_000_000)
        size = _int_param(request, "size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        parked = await ctx.cdr_outbox.parked(page * size, size)
        total = await ctx.cdr_outbox.count_parked()
        return JSON({"total": total, "page": page, "size": size, "cdrs": [c.as_dict() for c in parked]})

    async def cdrs_without_session(request: Request) -> Response:
        """CDRs whose SessionID the ledger did not know when they came (offline sessions, errors)."""
        page = _int_param(request, "page", 0, 1_000_000)
        size = _int_param(request, "size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        store = ctx.cdr_inbox if _direction(request) == "in" else ctx.cdr_outbox
        found = await store.unknown_sessions(page * size, size)
        return JSON({"total": await store.count_unknown_sessions(), "cdrs": [c.as_dict() for c in found]})

    async def cdr_fetches(request: Request) -> Response:
        """Scheduled and on-demand GetChargeDetailRecords from CPO peers: window cursor, outcome, errors."""
        return JSON(
            [
                {
                    "peer_id": peer.id,
                    "interval_seconds": peer.cdr_fetch_interval_seconds,
                    **await ctx.pulls.operation_state(peer.key, GET_CHARGE_DETAIL_RECORDS),
                }
                for peer in await ctx.registry.enabled(Role.CPO)
            ]
        )

    # ---- dead letters ---------------------------------------------------------------------------

    async def dead_letters(request: Request) -> Response:
        """The dead-letter queue, oldest first, without removing anything: each message with the
        command it was, its error, the service that gave up, and its body."""
        limit = _int_param(request, "limit", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        try:
            total, messages = await dead_letter_queue.read(limit)
        except Exception as exc:  # RabbitMQ unreachable: say so, as the other bus-backed routes do
            raise BusUnavailable(f"cannot read the dead-letter queue: {exc}") from exc
        return JSON({"total": total, "messages": messages})

    def _settle(replay: bool) -> Endpoint:
        async def settle(request: Request) -> Response:
            body = await json_body(request)
            if not isinstance(body, dict) or set(body) - {"message_ids", "all"}:
                raise ValueError('body must be {"message_ids": [...]} or {"all": true}')
            ids, everything = body.get("message_ids"), body.get("all") is True
            if everything == (ids is not None):
                raise ValueError('give either "message_ids" (a non-empty list of strings) or "all": true')
            if not everything and (not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids)):
                raise ValueError("message_ids must be a non-empty list of strings")
            try:
                outcome = await dead_letter_queue.settle(None if everything else set(ids), replay=replay)
            except Exception as exc:
                raise BusUnavailable(f"cannot settle dead letters: {exc}") from exc
            logger.info("dead letters %s: %s", "replayed" if replay else "discarded", outcome)
            return JSON(outcome)

        return settle

    async def metrics(request: Request) -> Response:
        await node_metrics.refresh()
        return await metrics_endpoint(request)

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", monitored(readyz)),
        Route("/metrics", monitored(metrics)),
        Route("/peers", protected(list_peers), methods=["GET"]),
        Route("/peers", protected(add_peer), methods=["POST"]),
        Route("/peers/{role}/{peer_id}", protected(show_peer), methods=["GET"]),
        Route("/peers/{role}/{peer_id}", protected(remove_peer), methods=["DELETE"]),
        Route("/peers/{role}/{peer_id}", protected(switch_peer), methods=["PATCH"]),
        Route("/peers/{role}/{peer_id}/probe", protected(probe_peer), methods=["POST"]),
        Route("/probes", protected(list_probes), methods=["GET"]),
        Route("/commands/{command}", protected(send_command), methods=["POST"]),
        Route("/evses", protected(list_evses), methods=["GET"]),
        Route("/evses/{evse_id}", protected(show_evse), methods=["GET"]),
        Route("/evses/{evse_id}/status", protected(evse_status), methods=["GET"]),
        Route("/delivery", protected(delivery_state), methods=["GET"]),
        Route("/pulls", protected(pull_states), methods=["GET"]),
        Route("/routes/{id}", protected(show_route), methods=["GET"]),
        Route("/tokens", protected(list_tokens), methods=["GET"]),
        Route("/tokens/{key}", protected(show_token), methods=["GET"]),
        Route("/cdrs", protected(list_cdrs), methods=["GET"]),
        Route("/cdrs/parked", protected(parked_cdrs), methods=["GET"]),
        Route("/cdrs/unknown-sessions", protected(cdrs_without_session), methods=["GET"]),
        Route("/cdrs/fetches", protected(cdr_fetches), methods=["GET"]),
        Route("/cdrs/{session_id}", protected(show_cdr), methods=["GET"]),
        Route("/dead-letters", protected(dead_letters), methods=["GET"]),
        Route("/dead-letters/replay", protected(_settle(replay=True)), methods=["POST"]),
        Route("/dead-letters/discard", protected(_settle(replay=False)), methods=["POST"]),
        Route("/sessions", protected(list_sessions), methods=["GET"]),
        Route("/sessions/without-cdr", protected(sessions_without_cdr), methods=["GET"]),
        Route("/sessions/{session_id}", protected(show_session), methods=["GET"]),
        *journal_routes(ctx, protected),
        *openapi_routes(),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await node_metrics.close()
        await probe_client.close()

    return SecurityHeaders(Starlette(routes=routes, lifespan=lifespan))
