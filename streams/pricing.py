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
from collections.abc import Iterable
from datetime import datetime
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

from schemas import InferenceUsage, Price

NANO = Decimal("0.000000001")
MILLION = Decimal(1_000_000)
SECONDS_PER_HOUR = Decimal(3600)
ZERO = Decimal(0)


def money(value: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    """Round to the ledger's 9 decimal places."""
    return value.quantize(NANO, rounding=rounding)


class PriceBook:
    """Effective-dated price versions by SKU, for lookups by event time."""

    def __init__(self, prices: Iterable[Price]) -> None:
        by_sku: dict[tuple[str, str], list[Price]] = {}
        for price in prices:
            by_sku.setdefault((price.kind, price.sku), []).append(price)
        self._versions = {key: sorted(v, key=lambda p: p.effective_from) for key, v in by_sku.items()}
        self._starts = {key: [p.effective_from for p in v] for key, v in self._versions.items()}

    def at(self, kind: str, sku: str, when: datetime) -> Price | None:
        """The version of ``sku`` in force at ``when``, or None before its first version."""
        starts = self._starts.get((kind, sku))
        if not starts:
            return None
        index = bisect.bisect_right(starts, when) - 1
        return self._versions[(kind, sku)][index] if index >= 0 else None


def api_cost(usage: InferenceUsage, price: Price) -> Decimal:
    """Per-token cost: uncached prompt, cached prompt and completion tokens at their per-million prices."""
    input_price = price.input_per_mtok or ZERO
    cached_price = price.cached_input_per_mtok if price.cached_input_per_mtok is not None else input_price
    output_price = price.output_per_mtok or ZERO
    cached = min(usage.cached_prompt_tokens, usage.prompt_tokens)
    total = (usage.prompt_tokens - cached) * input_price + cached * cached_price + usage.completion_tokens * output_price
    return money(total / MILLION)


def utilization_decimal(value: float) -> Decimal:
    """Utilization as an exact Decimal percent with 4 decimals (floats never touch money)."""
    return Decimal(repr(round(value, 4))).quantize(Decimal("0.0001"))
