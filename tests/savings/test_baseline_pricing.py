"""The worker's counterfactual price of one request (``streams.pricing.baseline_cost``), against figures worked by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from schemas import InferenceUsage
from streams.pricing import PriceBook, baseline_cost
from tests.support import api_request, token_price

JAN, JUN = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
BOOK = PriceBook(
    [
        token_price("gpt-4o", JAN, ("5.00", "20.00"), cached="2.50"),
        token_price("gpt-4o", JUN, ("2.50", "10.00"), cached="1.25"),
    ]
)


def usage(baseline: str, when: datetime) -> InferenceUsage:
    return api_request(when, 1_000, 200, cached_prompt_tokens=400, baseline_model=baseline)


def test_the_baseline_price_in_force_prices_the_same_tokens_cached_ones_included() -> None:
    # June: 600 uncached x 2.50 + 400 cached x 1.25 + 200 x 10.00 = 1,500 + 500 + 2,000 = 4,000 per million
    assert baseline_cost(usage("gpt-4o", datetime(2026, 7, 1, tzinfo=UTC)), BOOK) == (Decimal("0.004"), "gpt-4o@2026-06-01T00:00:00+00:00")
    # March, under January's version: 600 x 5 + 400 x 2.5 + 200 x 20 = 8,000 per million
    assert baseline_cost(usage("gpt-4o", datetime(2026, 3, 1, tzinfo=UTC)), BOOK) == (Decimal("0.008"), "gpt-4o@2026-01-01T00:00:00+00:00")


def test_no_baseline_or_a_self_hosted_one_is_left_to_the_views() -> None:
    assert baseline_cost(usage("", JUN), BOOK) == (None, "")
    assert baseline_cost(usage("llama-3.1-70b-instruct", JUN), BOOK) == (None, "")  # no token price: allocation basis, in the views
    assert baseline_cost(usage("gpt-4o", datetime(2025, 12, 31, tzinfo=UTC)), BOOK) == (None, "")  # before its first version
