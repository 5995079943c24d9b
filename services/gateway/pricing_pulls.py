"""The two pricing pulls of the CPO face (DIGEST §1.2 items 17-18, §9.4), answered from the node's own
pricing read models.

The calling EMP is ``caller.id``: the pipeline already refused a path or body ProviderID that is not
the caller's. It gets only what is meant for it — records pushed for its ProviderID or for ``*``.
"""

from __future__ import annotations

from starlette.requests import Request

from services.gateway.context import GatewayContext
from shared.oicp import (
    EvsePricingResponse,
    OICPModel,
    OperatorEvsePricing,
    PricingProductDataResponse,
    PullEvsePricingRequest,
    PullPricingProductDataRequest,
    StatusCode,
    StatusCodeValue,
)
from shared.oicp.operations import Operation
from shared.settings import PeerConfig
from shared.stores.pricing import ALL_PROVIDERS


async def pull_pricing_product_data(
    ctx: GatewayContext,
    operation: Operation,
    caller: PeerConfig,
    body: PullPricingProductDataRequest,
    request: Request,
) -> OICPModel:
    """The caller's and the offer-to-all pricing product documents of the listed operators; with
    LastCall only the documents that changed after it, each complete."""
    documents = await ctx.own_pricing_products.pull(list(body.operator_ids), caller.id, body.last_call)
    return PricingProductDataResponse(
        pricing_product_data=documents, status_code=StatusCode.of(StatusCodeValue.SUCCESS)
    )


async def pull_evse_pricing(
    ctx: GatewayContext,
    operation: Operation,
    caller: PeerConfig,
    body: PullEvsePricingRequest,
    request: Request,
) -> OICPModel:
    """The EVSE→product assignments of the listed operators that apply to the caller; with LastCall only
    those that changed after it (deletions are not represented, see EvsePricingStore.pull)."""
    grouped = await ctx.own_evse_pricing.pull(list(body.operator_ids), caller.id, body.last_call)
    return EvsePricingResponse(
        evse_pricing=[_addressed_to(group, caller.id) for group in grouped],
        status_code=StatusCode.of(StatusCodeValue.SUCCESS),
    )


def _addressed_to(group: OperatorEvsePricing, provider_id: str) -> OperatorEvsePricing:
    """The group with ``*`` records addressed to the caller.

    The response schema of PullEVSEPricing admits only a real ProviderID (not ``*``, unlike the push and
    PricingProductData); an offer to all EMPs applies to the caller, so it is answered with the caller's
    ProviderID. The store already let a provider-specific record win over ``*`` for the same EVSE, so
    this never produces two records for one EVSE.
    """
    records = [
        r.model_copy(update={"provider_id": provider_id}) if r.provider_id == ALL_PROVIDERS else r
        for r in group.evse_pricing
    ]
    return group.model_copy(update={"evse_pricing": records})
