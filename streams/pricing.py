"""The cost model, as pure functions over Decimals: per-token API prices and GPU window allocation.

Rules (the README's worked example follows them step by step):
- Money has 9 decimal places (nano-units) and is rounded half-even, except token
  shares of a GPU window, which are rounded down so that the idle line (the exact
  remainder) absorbs every rounding residue: allocated + idle == window cost, always.
- A price applies to events at or after its ``effective_from``; the version in force
  at the event's time is used, so publishing a new price never rewrites history.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal, localcontext

from gpuledger.limits import MONEY_CONTEXT
from schemas import InferenceUsage, Price

NANO = Decimal("0.000000001")
MILLION = Decimal(1_000_000)
SECONDS_PER_HOUR = Decimal(3600)
ZERO = Decimal(0)


def money(value: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    """Round to the ledger's 9 decimal places (in the wide money context: never a silent 28-digit rounding)."""
    return value.quantize(NANO, rounding=rounding, context=MONEY_CONTEXT)


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
    with localcontext(MONEY_CONTEXT):
        total = (usage.prompt_tokens - cached) * input_price + cached * cached_price + usage.completion_tokens * output_price
        return money(total / MILLION)


@dataclass(frozen=True)
class Allocation:
    """One GPU window's cost split: shares keyed by payer group, plus the owner's idle remainder."""

    window_cost: Decimal
    busy_cost: Decimal
    shares: dict[tuple[str, ...], Decimal]
    idle: Decimal


def allocate_window(
    *, per_hour: Decimal, gpu_seconds: Decimal, utilization_pct: Decimal, tokens: Mapping[tuple[str, ...], int]
) -> Allocation:
    """Split one GPU window: its busy part by token share, the rest (and any residue) to idle.

    ``window_cost = per_hour * gpu_seconds / 3600``; the busy part is
    ``window_cost * utilization`` (capped to 0..100 %); each payer gets
    ``busy * its_tokens / all_tokens`` rounded down; idle is what remains.
    """
    with localcontext(MONEY_CONTEXT):
        window_cost = money(per_hour * gpu_seconds / SECONDS_PER_HOUR)
        total_tokens = sum(tokens.values())
        if total_tokens <= 0:
            return Allocation(window_cost, ZERO, {}, window_cost)
        utilization = min(max(utilization_pct, ZERO), Decimal(100)) / Decimal(100)
        busy = money(window_cost * utilization, ROUND_DOWN)
        shares = {group: money(busy * count / total_tokens, ROUND_DOWN) for group, count in tokens.items() if count > 0}
        return Allocation(window_cost, busy, shares, window_cost - sum(shares.values(), ZERO))


def utilization_decimal(value: float) -> Decimal:
    """Utilization as an exact Decimal percent with 4 decimals (floats never touch money)."""
    return Decimal(repr(round(value, 4))).quantize(Decimal("0.0001"))
