"""Join one usage event with the org directory and the price list."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from schemas import InferenceUsage, LedgerLine, OrgDirectory
from schemas.keys import api_line_id
from streams.pricing import ZERO, EquivalentBook, PriceBook, api_cost, baseline_cost

OrgLookup = Callable[[str, str], OrgDirectory | None]


@dataclass(frozen=True, slots=True)
class PricedUsage:
    """A usage event with its payer and, for API models, its cost line."""

    usage: InferenceUsage
    payer: OrgDirectory
    priced_as: str  # api | gpu | unpriced
    price_id: str
    cost: Decimal
    line: LedgerLine | None
    api_equivalent_cost: Decimal | None = None  # what the same tokens cost on the API the model would replace
    api_equivalent_price_id: str = ""
    baseline_cost: Decimal | None = None  # the same tokens at the gateway's baseline model's token price (routing savings)
    baseline_price_id: str = ""


def resolve_payer(usage: InferenceUsage, lookup: OrgLookup, unassigned: str) -> OrgDirectory:
    """The directory entry of the caller's key, or the configured 'unassigned' org."""
    return lookup("api_key", usage.key_id) or OrgDirectory(kind="api_key", key=usage.key_id, org=unassigned)


def price_usage(usage: InferenceUsage, payer: OrgDirectory, prices: PriceBook, equivalents: EquivalentBook | None = None) -> PricedUsage:
    """Per-token price when the model has one; GPU-window allocation when it ran on known GPUs.

    Either way the event also carries its API-equivalent cost: an API model is its own equivalent;
    a self-hosted model is priced at the token price of its reference API SKU in force at request time.
    And the counterfactual of routing savings: the same tokens at the baseline model's token price (``baseline_cost``).
    """
    counterfactual, counterfactual_price_id = baseline_cost(usage, prices)
    price = prices.at("token", usage.model, usage.request_end)
    if price is not None:
        cost, price_id = api_cost(usage, price), price.price_id  # price_id formats a timestamp: once per event
        line = LedgerLine(
            line_id=api_line_id(usage.event_id),
            kind="api",
            event_time=usage.request_end,
            org=payer.org,
            team=payer.team,
            project=payer.project,
            cost_centre=payer.cost_centre,
            model=usage.model,
            key_id=usage.key_id,
            event_id=usage.event_id,
            node=usage.node or "",
            gpu_uuid=",".join(usage.gpu_uuids),
            price_id=price_id,
            prompt_tokens=usage.prompt_tokens,
            cached_prompt_tokens=usage.cached_prompt_tokens,
            completion_tokens=usage.completion_tokens,
            gpu_seconds=ZERO,
            cost=cost,
            currency=price.currency,
        )
        return PricedUsage(
            usage,
            payer,
            "api",
            price_id,
            cost,
            line,
            cost,
            price_id,
            baseline_cost=counterfactual,
            baseline_price_id=counterfactual_price_id,
        )
    equivalent = equivalents.at(usage.model, usage.request_end) if equivalents is not None else None
    reference = prices.at("token", equivalent.api_sku, usage.request_end) if equivalent is not None else None
    compared, compared_id = (api_cost(usage, reference), reference.price_id) if reference is not None else (None, "")
    return PricedUsage(
        usage,
        payer,
        "gpu" if usage.gpu_uuids else "unpriced",
        "",
        ZERO,
        None,
        compared,
        compared_id,
        baseline_cost=counterfactual,
        baseline_price_id=counterfactual_price_id,
    )
