"""The cost model's arithmetic, checked against figures worked out by hand (see README)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from schemas import InferenceUsage
from streams.pricing import PriceBook, api_cost
from tests.support import api_request, token_price

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def usage(prompt: int, completion: int, cached: int = 0, when: datetime = T0) -> InferenceUsage:
    return api_request(when, prompt, completion, cached_prompt_tokens=cached)


MINI = token_price("gpt-4o-mini", T0, ("0.15", "0.60"), cached="0.075")


def test_api_cost_matches_the_readme_example() -> None:
    # 1,200 prompt tokens of which 1,000 cached, 350 completion tokens:
    # (200 * 0.15 + 1000 * 0.075 + 350 * 0.60) / 1e6 = (30 + 75 + 210) / 1e6 = 0.000315
    assert api_cost(usage(1200, 350, cached=1000), MINI) == Decimal("0.000315000")


def test_api_cost_rounds_half_even_to_nano_units() -> None:
    # 3 prompt tokens at 0.15/M = 0.00000045; 1 completion at 0.60/M = 0.0000006 -> 0.00000105
    assert api_cost(usage(3, 1), MINI) == Decimal("0.000001050")
    # ties go to the even nano-unit: 1.5e-9 -> 2e-9, and 2.5e-9 -> 2e-9
    for per_mtok, expected in (("0.0015", "0.000000002"), ("0.0025", "0.000000002")):
        cheap = token_price("x", T0, (per_mtok, "0"))
        assert api_cost(usage(1, 0), cheap) == Decimal(expected)


def test_cached_tokens_default_to_the_input_price_when_no_cached_price() -> None:
    plain = token_price("m", T0, ("1", "2"))
    assert api_cost(usage(1000, 1000, cached=400), plain) == Decimal("0.003000000")


def test_price_book_picks_the_version_in_force_at_event_time() -> None:
    change = T0 + timedelta(days=30)
    new = token_price("gpt-4o-mini", change, ("0.10", "0.40"))
    book = PriceBook([new, MINI])
    assert book.at("token", "gpt-4o-mini", T0 - timedelta(seconds=1)) is None
    assert book.at("token", "gpt-4o-mini", change - timedelta(microseconds=1)) == MINI
    assert book.at("token", "gpt-4o-mini", change) == new
    assert book.at("gpu_hour", "gpt-4o-mini", change) is None


def test_the_largest_accepted_request_is_priced_exactly() -> None:
    """Max tokens × max price (gpuledger.limits) stays exact: Python's default 28-digit context would round or raise here."""
    from gpuledger.limits import MAX_PRICE, MAX_TOKENS

    top = token_price("m", T0, (MAX_PRICE - Decimal("0.000000001"), MAX_PRICE), cached="0.000000001")
    cost = api_cost(usage(MAX_TOKENS, MAX_TOKENS, cached=1), top)
    # ((10^12 - 1) × (10^9 - 10^-9) + 1 × 10^-9 + 10^12 × 10^9) / 10^6 = 1,999,999,999,998,999.999000000000002
    assert cost == Decimal("1999999999998999.999000000")
    assert cost.adjusted() < 29  # fits Decimal(38, 9)
