"""EMP role: AuthorizeStart/Stop from CPO peers, decided from the token store or by the internal
decider (DIGEST §9.6). Status codes: see ``services.authorization.media``.

AuthorizeStart:

1. a medium not allowed in authorization messages is refused (RFIDIdentification 022, QR without a
   clear PIN 101);
2. a known token decides: usable → ``Authorized``; blocked/expired → 200 (EvcoID media) or 102 (RFID);
   a QR code whose PIN does not match → 101;
3. an unknown medium: with ``authorization.use_decider`` the internal decider is asked
   (``emp.decider.authorize_start`` on ``oicp.requests``, deadline ``decider_timeout_seconds``). If
   nobody is bound (at once) or nobody answers in time, ``authorization.fallback`` applies: ``tokens``
   → the store's verdict (unknown: 101/102/105/106 by medium), ``not_authorized`` → 106 "No positive
   authentication response", ``authorized`` → ``Authorized``. Without the decider the store's verdict
   stands.

``Authorized`` carries the SessionID (the request's, else a new UUID), the ProviderID (the token's; for
a decider/fallback decision the ProviderID of the EvcoID if it is the node's, else the node's first),
AuthorizationStopIdentifications (the token's, else the medium itself without PIN) and the partner
session IDs of the request. The session is recorded in the ledger (role emp, kind authorize, peer_id
= the calling CPO) before the answer is returned.

AuthorizeStop: only a session of this EMP started by the calling CPO (ledger role emp, peer_id = the
caller) can be stopped, else 400 "Session is invalid"; the medium must be the session's own or one of
its AuthorizationStopIdentifications, else 101/102/105 by medium.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from services.authorization.media import (
    STOP_MISMATCH_CODES,
    locked_code,
    pin_matches,
    refusal_of_medium,
    same_medium,
    unknown_code,
    without_pin,
)
from services.authorization.outcomes import decided, record_authorized
from shared.bus.client import BusUnavailable
from shared.bus.envelope import Envelope
from shared.bus.messages import AuthorizeStartIngest, AuthorizeStopIngest, CommandReply, DeciderReply, InternalRequest
from shared.bus.rpc import NoResponder, RequestTimeout
from shared.oicp import (
    AuthorizationStartResponse,
    AuthorizationStopResponse,
    AuthorizeStartRequest,
    Identification,
    StatusCodeValue,
    new_session_id,
)
from shared.oicp.ids import normalize_id, provider_id_of_evco
from shared.stores.sessions import Session, SessionState
from shared.stores.tokens import StoredToken

if TYPE_CHECKING:
    from services.authorization.app import AuthorizationDeps

logger = logging.getLogger(__name__)
CODE = StatusCodeValue


def _own_provider_of(deps: AuthorizationDeps, identification: Identification) -> str:
    """The node's ProviderID a medium belongs to: the EvcoID's if it is the node's, else the first."""
    evco_id = identification.evco_id
    if evco_id is not None:
        try:
            prefix = provider_id_of_evco(evco_id)
        except ValueError:
            prefix = ""
        for provider_id in deps.settings.provider_ids:
            if normalize_id(provider_id) == prefix:
                return provider_id
    return deps.settings.provider_ids[0]


def _store_verdict(
    request: AuthorizeStartRequest, token: StoredToken | None
) -> tuple[bool, StatusCodeValue, str | None]:
    """(authorized, code, info) from the token store alone."""
    identification = request.identification
    if token is None:
        return False, unknown_code(identification), "unknown authentication medium"
    if token.token.blocked:
        return False, locked_code(identification), "the medium is blocked"
    if token.expired():
        return False, locked_code(identification), "the medium has expired"
    qr = identification.qr_code_identification
    if qr is not None and not (qr.pin and pin_matches(qr.pin, token.token.identification)):
        return False, CODE.QR_CODE_AUTHENTICATION_FAILED_INVALID_CREDENTIALS, "wrong PIN"
    return True, CODE.SUCCESS, None


async def _ask_decider(
    deps: AuthorizationDeps, envelope: Envelope[AuthorizeStartIngest]
) -> tuple[DeciderReply | None, str]:
    """The decider's answer, or None with the reason why the fallback applies."""
    settings = deps.settings.authorization
    try:
        raw = await deps.rpc.ask(
            deps.topology.requests.name,
            InternalRequest.EMP_DECIDER_AUTHORIZE_START.value,
            envelope.to_bus(),
            settings.decider_timeout_seconds,
            request_id=str(envelope.event_id),
        )
    except NoResponder:
        return None, "no authorization decider is bound"
    except RequestTimeout:
        return None, f"the authorization decider did not answer within {settings.decider_timeout_seconds:g}s"
    except BusUnavailable as exc:
        return None, f"the authorization decider could not be asked: {exc}"
    try:
        return DeciderReply.model_validate(raw), ""
    except ValueError:
        logger.error("the authorization decider's answer is invalid: %r", raw)
        return None, "the authorization decider's answer is invalid"


async def authorize_start(
    deps: AuthorizationDeps, envelope: Envelope[AuthorizeStartIngest], correlation_id: str | None
) -> CommandReply:
    ingest = envelope.data
    request = ingest.request
    identification = request.identification
    partner: dict[str, Any] = {
        "cpo_partner_session_id": request.cpo_partner_session_id,
        "emp_partner_session_id": request.emp_partner_session_id,
    }

    async def answer(
        verdict: tuple[bool, StatusCodeValue, str | None],
        decided_by: str,
        provider_id: str | None = None,
        stop_ids: list[Identification] | None = None,
    ) -> CommandReply:
        authorized, code, info = verdict
        if authorized:
            assert provider_id is not None
            session_id = request.session_id or new_session_id()
            stop_ids = stop_ids or [without_pin(identification)]
            stored = await record_authorized(
                deps,
                Session(
                    session_id=session_id,
                    role="emp",
                    state=SessionState.AUTHORIZED,
                    kind="authorize",
                    evse_id=request.evse_id,
                    operator_id=request.operator_id,
                    provider_id=provider_id,
                    peer_id=ingest.peer_id,
                    identification=without_pin(identification).to_oicp(),
                    cpo_partner_session_id=request.cpo_partner_session_id,
                    emp_partner_session_id=request.emp_partner_session_id,
                    partner_product_id=request.partner_product_id,
                    details={
                        "decided_by": decided_by,
                        "AuthorizationStopIdentifications": [i.to_oicp() for i in stop_ids],
                    },
                ),
                correlation_id,
            )
            if normalize_id(stored.peer_id or "") != normalize_id(ingest.peer_id) or stored.role != "emp":
                # The CPO reused a SessionID of another session: never hand it out twice.
                result = AuthorizationStartResponse.not_authorized(
                    CODE.SESSION_IS_INVALID, f"SessionID {session_id} belongs to another session", **partner
                )
            else:
                result = AuthorizationStartResponse.authorized(
                    session_id, provider_id, authorization_stop_identifications=stop_ids, **partner
                )
        else:
            result = AuthorizationStartResponse.not_authorized(code, info, **partner)
        return await decided(
            deps,
            role="emp",
            operation="AuthorizeStart",
            answer=result,
            decided_by=decided_by,
            correlation_id=correlation_id,
            peer_id=ingest.peer_id,
            operator_id=request.operator_id,
            evse_id=request.evse_id,
            identification=identification,
        )

    if (refusal := refusal_of_medium(identification)) is not None:
        return await answer((False, *refusal), "tokens")
    token = await deps.tokens.lookup(identification)
    verdict = _store_verdict(request, token)
    if token is not None:
        stop_ids = token.token.authorization_stop_identifications
        return await answer(verdict, "tokens", token.token.provider_id, stop_ids)
    settings = deps.settings.authorization
    if not settings.use_decider:
        return await answer(verdict, "tokens")
    reply, why = await _ask_decider(deps, envelope)
    provider_id = _own_provider_of(deps, identification)
    if reply is not None:
        if reply.authorized:
            code = CODE.SUCCESS
        elif reply.code is None or reply.code is CODE.SUCCESS:
            code = unknown_code(identification)  # a refusal with 000 would contradict itself
        else:
            code = reply.code
        return await answer(
            (reply.authorized, code, reply.info), "decider", provider_id, reply.authorization_stop_identifications
        )
    logger.warning("%s: fallback %s", why, settings.fallback)
    if settings.fallback == "authorized":
        return await answer((True, CODE.SUCCESS, None), "fallback", provider_id)
    if settings.fallback == "not_authorized":
        return await answer((False, CODE.NO_POSITIVE_AUTHENTICATION_RESPONSE, why), "fallback")
    return await answer((verdict[0], verdict[1], f"{verdict[2]}; {why}"), "fallback")


async def authorize_stop(
    deps: AuthorizationDeps, envelope: Envelope[AuthorizeStopIngest], correlation_id: str | None
) -> CommandReply:
    ingest = envelope.data
    request = ingest.request
    identification = request.identification
    partner: dict[str, Any] = {
        "cpo_partner_session_id": request.cpo_partner_session_id,
        "emp_partner_session_id": request.emp_partner_session_id,
    }
    session = await deps.ledger.get(request.session_id)
    result: AuthorizationStopResponse
    if (refusal := refusal_of_medium(identification)) is not None:
        result = AuthorizationStopResponse.not_authorized(*refusal, session_id=request.session_id, **partner)
    elif (
        session is None or session.role != "emp" or normalize_id(session.peer_id or "") != normalize_id(ingest.peer_id)
    ):
        # Unknown, or not a session this CPO started with us: indistinguishable for the caller (400).
        result = AuthorizationStopResponse.not_authorized(
            CODE.SESSION_IS_INVALID, f"no session {request.session_id} of {ingest.peer_id} at this EMP", **partner
        )
    elif not _may_stop(session, identification):
        result = AuthorizationStopResponse.not_authorized(
            STOP_MISMATCH_CODES[identification.kind],
            "this medium may not stop the session",
            session_id=request.session_id,
            **partner,
        )
    else:
        result = AuthorizationStopResponse.authorized(request.session_id, session.provider_id, **partner)
    return await decided(
        deps,
        role="emp",
        operation="AuthorizeStop",
        answer=result,
        decided_by="session",
        correlation_id=correlation_id,
        peer_id=ingest.peer_id,
        operator_id=request.operator_id,
        evse_id=request.evse_id,
        identification=identification,
    )


def _may_stop(session: Session, identification: Identification) -> bool:
    """The session's own medium, or one of the AuthorizationStopIdentifications it was given."""
    allowed: list[Identification] = []
    if session.identification:
        allowed.append(Identification.model_validate(session.identification))
    for raw in (session.details or {}).get("AuthorizationStopIdentifications") or []:
        allowed.append(Identification.model_validate(raw))
    return any(same_medium(identification, medium) for medium in allowed)
