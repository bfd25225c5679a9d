"""The cost model's arithmetic, checked against figures worked out by hand (see README)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from schemas import InferenceUsage, Price
from streams.pricing import PriceBook, allocate_window, api_cost, utilization_decimal

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def usage(prompt: int, completion: int, cached: int = 0, when: datetime = T0) -> InferenceUsage:
    return InferenceUsage(
        event_id="e", request_start=when, request_end=when, key_id="k", model="gpt-4o-mini", backend="openai",
        prompt_tokens=prompt, completion_tokens=completion, cached_prompt_tokens=cached, latency_ms=1, status="ok",
    )


MINI = Price(sku="gpt-4o-mini", kind="token", currency="USD", effective_from=T0,
             input_per_mtok=Decimal("0.15"), cached_input_per_mtok=Decimal("0.075"), output_per_mtok=Decimal("0.60"))


def test_api_cost_matches_the_readme_example() -> None:
    # 1,200 prompt tokens of which 1,000 cached, 350 completion tokens:
    # (200 * 0.15 + 1000 * 0.075 + 350 * 0.60) / 1e6 = (30 + 75 + 210) / 1e6 = 0.000315
    assert api_cost(usage(1200, 350, cached=1000), MINI) == Decimal("0.000315000")


def test_api_cost_rounds_half_even_to_nano_units() -> None:
    # 3 prompt tokens at 0.15/M = 0.00000045; 1 completion at 0.60/M = 0.0000006 -> 0.00000105
    assert api_cost(usage(3, 1), MINI) == Decimal("0.000001050")
    # ties go to the even nano-unit: 1.5e-9 -> 2e-9, and 2.5e-9 -> 2e-9
    for per_mtok, expected in (("0.0015", "0.000000002"), ("0.0025", "0.000000002")):
        cheap = Price(sku="x", kind="token", currency="USD", effective_from=T0, input_per_mtok=Decimal(per_mtok), output_per_mtok=Decimal(0))
        assert api_cost(usage(1, 0), cheap) == Decimal(expected)


def test_cached_tokens_default_to_the_input_price_when_no_cached_price() -> None:
    plain = Price(sku="m", kind="token", currency="USD", effective_from=T0, input_per_mtok=Decimal("1"), output_per_mtok=Decimal("2"))
    assert api_cost(usage(1000, 1000, cached=400), plain) == Decimal("0.003000000")


def test_price_book_picks_the_version_in_force_at_event_time() -> None:
    change = T0 + timedelta(days=30)
    new = Price(sku="gpt-4o-mini", kind="token", currency="USD", effective_from=change,
                input_per_mtok=Decimal("0.10"), output_per_mtok=Decimal("0.40"))
    book = PriceBook([new, MINI])
    assert book.at("token", "gpt-4o-mini", T0 - timedelta(seconds=1)) is None
    assert book.at("token", "gpt-4o-mini", change - timedelta(microseconds=1)) == MINI
    assert book.at("token", "gpt-4o-mini", change) == new
    assert book.at("gpu_hour", "gpt-4o-mini", change) is None


def test_gpu_window_allocation_worked_example() -> None:
    # H100 at 2.49/h for a full 60 s window: 2.49 * 60 / 3600 = 0.0415
    # 75 % busy -> 0.031125 split 3:1 by tokens -> 0.02334375 and 0.00778125; idle = 0.0103750
    split = allocate_window(per_hour=Decimal("2.49"), gpu_seconds=Decimal(60), utilization_pct=Decimal(75),
                            tokens={("search",): 3000, ("support",): 1000})
    assert split.window_cost == Decimal("0.041500000")
    assert split.shares == {("search",): Decimal("0.023343750"), ("support",): Decimal("0.007781250")}
    assert split.idle == Decimal("0.010375000")


def test_idle_gpu_window_books_everything_to_idle() -> None:
    split = allocate_window(per_hour=Decimal("0.89"), gpu_seconds=Decimal(60), utilization_pct=Decimal(40), tokens={})
    assert split.shares == {} and split.idle == split.window_cost == Decimal("0.014833333")


@pytest.mark.parametrize("seed", range(20))
def test_allocated_plus_idle_always_equals_window_cost(seed: int) -> None:
    rng = random.Random(seed)
    tokens = {(f"org{i}",): rng.randrange(0, 10_000) for i in range(rng.randrange(1, 8))}
    util = utilization_decimal(rng.uniform(0, 100))
    split = allocate_window(per_hour=Decimal(str(rng.uniform(0.1, 12))).quantize(Decimal("0.0001")),
                            gpu_seconds=Decimal(rng.randrange(1, 61)), utilization_pct=util, tokens=tokens)
    assert sum(split.shares.values()) + split.idle == split.window_cost
    assert all(share >= 0 for share in split.shares.values()) and split.idle >= 0
    assert sum(split.shares.values()) <= split.busy_cost


def test_utilization_is_capped_between_zero_and_hundred() -> None:
    over = allocate_window(per_hour=Decimal(1), gpu_seconds=Decimal(3600), utilization_pct=Decimal(130), tokens={("a",): 1})
    assert over.shares[("a",)] == Decimal(1) and over.idle == 0


def test_the_largest_accepted_request_is_priced_exactly() -> None:
    """Max tokens × max price (gpuledger.limits) stays exact: Python's default 28-digit context would round or raise here."""
    from gpuledger.limits import MAX_PRICE, MAX_TOKENS

    top = Price(sku="m", kind="token", currency="USD", effective_from=T0, input_per_mtok=MAX_PRICE - Decimal("0.000000001"),
                cached_input_per_mtok=Decimal("0.000000001"), output_per_mtok=MAX_PRICE)
    cost = api_cost(usage(MAX_TOKENS, MAX_TOKENS, cached=1), top)
    # ((10^12 - 1) × (10^9 - 10^-9) + 1 × 10^-9 + 10^12 × 10^9) / 10^6 = 1,999,999,999,998,999.999000000000002
    assert cost == Decimal("1999999999998999.999000000")
    assert cost.adjusted() < 29  # fits Decimal(38, 9)
