"""Handlers of the authorization service: functions of (message, dependencies), wired to their queues.

Every command here is answered (request/reply) through ``answer_once``: handled at most once per
event_id, the reply kept for an hour so that a redelivery gets the same answer and is never applied
twice. The effect (token store, authentication data, ledger) is written to Redis before the reply is
returned and the message acknowledged. What a failure does is the ``failure_policy`` middleware's: an
outage (Redis down) runs the handler again in place until it is back, a message that can never be
processed goes to the dead-letter queue at once, any other error is requeued up to the queue's
delivery limit and then dead-lettered with its error.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Any

from faststream.rabbit import RabbitResponse

from services.authorization import cpo, emp
from services.authorization.app import AuthorizationDeps
from shared.bus import replies
from shared.bus.annotations import RabbitMessage
from shared.bus.envelope import Envelope
from shared.bus.messages import (
    AuthDataIngest,
    AuthorizeStartIngest,
    AuthorizeStopIngest,
    CommandReply,
    CommandType,
    CpoAuthorizeStart,
    CpoAuthorizeStop,
    EventType,
    Token,
    TokensChanged,
    TokensSet,
)
from shared.oicp import StatusCodeValue
from shared.oicp.ids import evco_belongs_to, normalize_id
from shared.stores.push import MAX_KEYS_IN_INFO

logger = logging.getLogger(__name__)
CODE = StatusCodeValue


def refused(code: StatusCodeValue, info: str) -> CommandReply:
    return CommandReply(ok=False, code=code, info=info)


def _not_emp(deps: AuthorizationDeps, command: CommandType) -> CommandReply | None:
    if not deps.settings.provider_ids:
        return refused(CODE.SERVICE_NOT_AVAILABLE, f"{command.value}: this node has no EMP role (no provider_ids)")
    return None


def _not_cpo(deps: AuthorizationDeps, command: CommandType) -> CommandReply | None:
    if not deps.settings.operator_ids:
        return refused(CODE.SERVICE_NOT_AVAILABLE, f"{command.value}: this node has no CPO role (no operator_ids)")
    return None


def check_tokens(deps: AuthorizationDeps, tokens: list[Token]) -> tuple[list[Token], CommandReply | None]:
    """Fill in the default ProviderID and check that every token is the node's own: 017 for a
    ProviderID that is not one of the node's, 019 for an EvcoID that is not of the token's provider."""
    own = {normalize_id(p): p for p in deps.settings.provider_ids}
    filled: list[Token] = []
    foreign_providers: list[str] = []
    foreign_evcos: list[str] = []
    for token in tokens:
        provider_id = token.provider_id or deps.settings.provider_ids[0]
        if normalize_id(provider_id) not in own:
            foreign_providers.append(provider_id)
            continue
        evcos = [e for e in (token.identification.evco_id, token.evco_id) if e is not None]
        foreign_evcos += [e for e in evcos if not evco_belongs_to(e, provider_id)]
        filled.append(token.model_copy(update={"provider_id": own[normalize_id(provider_id)]}))
    if foreign_providers:
        shown = ", ".join(sorted(set(foreign_providers))[:MAX_KEYS_IN_INFO])
        return [], refused(
            CODE.UNAUTHORIZED_ACCESS, f"ProviderIDs not of this node {deps.settings.provider_ids}: {shown}"
        )
    if foreign_evcos:
        shown = ", ".join(foreign_evcos[:MAX_KEYS_IN_INFO])
        return [], refused(CODE.INCONSISTENT_EVCO_ID, f"EvcoIDs not of the token's ProviderID: {shown}")
    return filled, None


async def set_tokens(
    deps: AuthorizationDeps, envelope: Envelope[TokensSet], correlation_id: str | None
) -> CommandReply:
    """``emp.token.set``: ActionType semantics on the token store; every change is queued for the CPO
    peers that take PushAuthenticationData in the same Redis script."""
    if problem := _not_emp(deps, CommandType.EMP_TOKEN_SET):
        return problem
    command = envelope.data
    action = command.action_type.value
    tokens, problem = check_tokens(deps, command.tokens)
    if problem:
        return problem
    result = await deps.tokens.apply(action, tokens, await deps.pusher.outboxes())
    if not result.ok:
        return refused(CODE.DATA_TRANSACTION_ERROR, result.conflict_info(action))
    if result.changed or result.deleted:
        await deps.pusher.changed()
    await deps.bus.emit_event(
        EventType.TOKENS_CHANGED,
        TokensChanged(
            action_type=command.action_type,
            keys=result.changed,
            deleted_keys=result.deleted,
            changed_at=envelope.occurred_at.astimezone(UTC),
        ),
        correlation_id=correlation_id,
    )
    return CommandReply(ok=True, changed=len(result.changed), deleted=len(result.deleted))


def register_handlers(deps: AuthorizationDeps) -> None:
    broker, topology = deps.broker, deps.topology

    async def answer_once(
        envelope: Envelope[Any], message: RabbitMessage, handle: Callable[[], Awaitable[CommandReply]]
    ) -> RabbitResponse | None:
        return await replies.answer_once(deps.redis, deps.keys, envelope, message, handle)

    def subscriber(command: CommandType) -> Any:
        return replies.command_subscriber(broker, topology, command)

    @subscriber(CommandType.EMP_TOKEN_SET)
    async def on_token_set(envelope: Envelope[TokensSet], message: RabbitMessage) -> RabbitResponse | None:
        """Change the EMP's token store (ActionType semantics); replies with the outcome."""
        return await answer_once(envelope, message, lambda: set_tokens(deps, envelope, message.correlation_id))

    @subscriber(CommandType.EMP_AUTHORIZE_START)
    async def on_emp_authorize_start(
        envelope: Envelope[AuthorizeStartIngest], message: RabbitMessage
    ) -> RabbitResponse | None:
        """Decide a CPO peer's AuthorizeStart; the reply's answer is the eRoamingAuthorizationStart."""

        async def handle() -> CommandReply:
            return _not_emp(deps, CommandType.EMP_AUTHORIZE_START) or await emp.authorize_start(
                deps, envelope, message.correlation_id
            )

        return await answer_once(envelope, message, handle)

    @subscriber(CommandType.EMP_AUTHORIZE_STOP)
    async def on_emp_authorize_stop(
        envelope: Envelope[AuthorizeStopIngest], message: RabbitMessage
    ) -> RabbitResponse | None:
        """Decide a CPO peer's AuthorizeStop; the reply's answer is the eRoamingAuthorizationStop."""

        async def handle() -> CommandReply:
            return _not_emp(deps, CommandType.EMP_AUTHORIZE_STOP) or await emp.authorize_stop(
                deps, envelope, message.correlation_id
            )

        return await answer_once(envelope, message, handle)

    @subscriber(CommandType.CPO_AUTHORIZE_START)
    async def on_cpo_authorize_start(
        envelope: Envelope[CpoAuthorizeStart], message: RabbitMessage
    ) -> RabbitResponse | None:
        """Authorize a medium for the charge point backend: offline data, the EvcoID's EMP, or a broadcast."""

        async def handle() -> CommandReply:
            return _not_cpo(deps, CommandType.CPO_AUTHORIZE_START) or await cpo.authorize_start(
                deps, envelope, message.correlation_id
            )

        return await answer_once(envelope, message, handle)

    @subscriber(CommandType.CPO_AUTHORIZE_STOP)
    async def on_cpo_authorize_stop(
        envelope: Envelope[CpoAuthorizeStop], message: RabbitMessage
    ) -> RabbitResponse | None:
        """Stop an authorized session: at the EMP that authorized it, or here if it was authorized offline."""

        async def handle() -> CommandReply:
            return _not_cpo(deps, CommandType.CPO_AUTHORIZE_STOP) or await cpo.authorize_stop(
                deps, envelope, message.correlation_id
            )

        return await answer_once(envelope, message, handle)

    @subscriber(CommandType.CPO_AUTH_DATA_INGEST)
    async def on_auth_data_ingest(envelope: Envelope[AuthDataIngest], message: RabbitMessage) -> RabbitResponse | None:
        """Store an EMP peer's PushAuthenticationData; the reply is the peer's OICP answer."""

        async def handle() -> CommandReply:
            return _not_cpo(deps, CommandType.CPO_AUTH_DATA_INGEST) or await cpo.ingest_auth_data(
                deps, envelope, message.correlation_id
            )

        return await answer_once(envelope, message, handle)
