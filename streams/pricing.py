"""The cost model's money rules and per-token API prices, as pure functions over Decimals.

Rules (the README's worked examples follow them step by step):
- Money has 9 decimal places (nano-units) and is rounded half-even, except shares
  of a GPU window, which are rounded down so that the idle remainder line absorbs
  every rounding residue (``streams.gpu_cost``): a window's lines == its cost, always.
- A price applies to events at or after its ``effective_from``; the version in force
  at the event's time is used, so publishing a new price never rewrites history.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable, Iterable
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Generic, TypeVar

from gpuledger.limits import MONEY_CONTEXT, NANO
from schemas import InferenceUsage, ModelEquivalent, Price

T = TypeVar("T")

MILLION = Decimal(1_000_000)
SECONDS_PER_HOUR = Decimal(3600)
ZERO = Decimal(0)


def money(value: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    """Round to the ledger's 9 decimal places (in the wide money context: never a silent 28-digit rounding)."""
    return value.quantize(NANO, rounding=rounding, context=MONEY_CONTEXT)


class EffectiveBook(Generic[T]):
    """Effective-dated versions of reference records by key, for lookups by event time."""

    def __init__(self, items: Iterable[T], key: Callable[[T], Hashable]) -> None:
        by_key: dict[Hashable, list[T]] = {}
        for item in items:
            by_key.setdefault(key(item), []).append(item)
        self._versions = {k: sorted(v, key=_effective) for k, v in by_key.items()}
        self._starts = {k: [_effective(i) for i in v] for k, v in self._versions.items()}

    def find(self, key: Hashable, when: datetime) -> T | None:
        """The version of ``key`` in force at ``when``, or None before its first version."""
        starts = self._starts.get(key)
        if not starts:
            return None
        index = bisect.bisect_right(starts, when) - 1
        return self._versions[key][index] if index >= 0 else None


def _effective(item: Any) -> datetime:
    return item.effective_from


class PriceBook(EffectiveBook[Price]):
    """The price list: a SKU's version in force at an event's time."""

    def __init__(self, prices: Iterable[Price]) -> None:
        super().__init__(prices, key=lambda p: (p.kind, p.sku))

    def at(self, kind: str, sku: str, when: datetime) -> Price | None:
        return self.find((kind, sku), when)


class EquivalentBook(EffectiveBook[ModelEquivalent]):
    """Which API SKU a self-hosted model would replace, at an event's time."""

    def __init__(self, equivalents: Iterable[ModelEquivalent]) -> None:
        super().__init__(equivalents, key=lambda e: e.model)

    def at(self, model: str, when: datetime) -> ModelEquivalent | None:
        return self.find(model, when)


def api_cost(usage: InferenceUsage, price: Price) -> Decimal:
    """Per-token cost: uncached prompt, cached prompt and completion tokens at their per-million prices."""
    input_price = price.input_per_mtok or ZERO
    cached_price = price.cached_input_per_mtok if price.cached_input_per_mtok is not None else input_price
    output_price = price.output_per_mtok or ZERO
    cached = min(usage.cached_prompt_tokens, usage.prompt_tokens)
    c = MONEY_CONTEXT  # its own methods: the same arithmetic as a ``localcontext`` block, at a third of its cost per event
    total = c.add(
        c.add(c.multiply(usage.prompt_tokens - cached, input_price), c.multiply(cached, cached_price)),
        c.multiply(usage.completion_tokens, output_price),
    )
    return money(c.divide(total, MILLION))


def baseline_cost(usage: InferenceUsage, prices: PriceBook) -> tuple[Decimal | None, str]:
    """The counterfactual: the same tokens at the baseline model's token price in force at the request's time, and that price's id.

    (None, "") when there is no baseline or it has no token price (a self-hosted baseline is priced by the
    savings views at its allocation-basis cost per token, which is only known once its GPU windows are allocated).
    """
    price = prices.at("token", usage.baseline_model, usage.request_end) if usage.baseline_model else None
    return (api_cost(usage, price), price.price_id) if price is not None else (None, "")
