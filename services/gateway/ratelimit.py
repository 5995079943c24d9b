"""Inbound rate limits: a peer calling an operation more often than its limit allows gets HTTP 429
with ``Retry-After`` (shared.ratelimit has the limits and the algorithm).

The check runs right after the caller is identified and before its body is read: a peer over its
limit costs neither the read nor the validation of a body of up to ``oicp.max_body_bytes``. The one
exception is the dispatching PullEvseStatus path, whose limit depends on the variant the body asks
for (ById, ByOperatorId or the full pull): it is checked once the body is parsed.

The refusal is an OICP answer like every other (eRoamingAcknowledgement, or NotAuthorized for
AuthorizeStart/Stop) with status code ``021`` (System error): OICP has no code for "too many
requests", and 021 is the one clients treat as transient and retry - ``017`` would say the
credentials are wrong and ``022`` that the request is, neither of which is true nor should be fixed
by the client. The HTTP status 429 and Retry-After carry the actual meaning, as at Hubject.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from shared.metrics import RATE_LIMITED
from shared.oicp import OICPModel, StatusCodeValue
from shared.oicp.operations import Operation
from shared.ratelimit import DISPATCHING_OPERATION, Direction, limited_operation
from shared.settings import PeerConfig

if TYPE_CHECKING:
    from services.gateway.context import GatewayContext

logger = logging.getLogger(__name__)

TOO_MANY_REQUESTS = 429


def retry_after_header(seconds: float) -> int:
    """Retry-After is whole seconds (RFC 9110 delay-seconds); rounded up, and at least 1."""
    return max(1, math.ceil(seconds))


async def check_inbound(
    ctx: GatewayContext, caller: PeerConfig, operation: Operation, body: OICPModel | None = None
) -> None:
    """Count one call of ``caller`` to ``operation``; raise a Refusal (HTTP 429, Retry-After) beyond
    its limit. Called twice per request: before the body is read (``body`` None) and after it is
    parsed; only the call that can name the limited operation counts."""
    dispatching = operation.name == DISPATCHING_OPERATION
    if (body is None) == dispatching:
        return  # the dispatching path counts once its body is known, every other path before it is read
    name = limited_operation(operation.name, body)
    try:
        decision = await ctx.rate_limiter.check(Direction.INBOUND, caller, name)
    except (RedisError, OSError) as exc:
        # Fails open: a limiter that cannot be asked must not turn the node away from every partner
        # (whatever needs Redis to answer fails on its own, with 021).
        logger.warning("inbound rate limit of %s/%s not checked: %s", caller.id, name, exc)
        return
    if decision.allowed:
        return
    from services.gateway.oicp_face import Refusal  # not at the top: oicp_face imports this module

    RATE_LIMITED.labels(Direction.INBOUND.value, caller.id, name, "refused").inc()
    retry_after = retry_after_header(decision.retry_after)
    raise Refusal(
        StatusCodeValue.SYSTEM_ERROR,
        f"rate limit exceeded: {caller.id} may call {name} {decision.limit} times per minute; "
        f"retry after {retry_after} s",
        "rate_limited",
        TOO_MANY_REQUESTS,
        retry_after=retry_after,
    )
