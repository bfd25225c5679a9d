"""The worker's counterfactual price of one request (``streams.pricing.baseline_cost``), against figures worked by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from schemas import InferenceUsage, Price
from streams.pricing import PriceBook, baseline_cost

JAN, JUN = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
BOOK = PriceBook(
    [
        Price(
            sku="gpt-4o",
            kind="token",
            currency="USD",
            effective_from=JAN,
            input_per_mtok=Decimal("5.00"),
            cached_input_per_mtok=Decimal("2.50"),
            output_per_mtok=Decimal("20.00"),
        ),
        Price(
            sku="gpt-4o",
            kind="token",
            currency="USD",
            effective_from=JUN,
            input_per_mtok=Decimal("2.50"),
            cached_input_per_mtok=Decimal("1.25"),
            output_per_mtok=Decimal("10.00"),
        ),
    ]
)


def usage(baseline: str, when: datetime) -> InferenceUsage:
    return InferenceUsage(
        event_id="e",
        request_start=when,
        request_end=when,
        key_id="k",
        model="gpt-4o-mini",
        backend="openai",
        prompt_tokens=1_000,
        cached_prompt_tokens=400,
        completion_tokens=200,
        latency_ms=1.0,
        status="ok",
        baseline_model=baseline,
    )


def test_the_baseline_price_in_force_prices_the_same_tokens_cached_ones_included() -> None:
    # June: 600 uncached x 2.50 + 400 cached x 1.25 + 200 x 10.00 = 1,500 + 500 + 2,000 = 4,000 per million
    assert baseline_cost(usage("gpt-4o", datetime(2026, 7, 1, tzinfo=UTC)), BOOK) == (Decimal("0.004"), "gpt-4o@2026-06-01T00:00:00+00:00")
    # March, under January's version: 600 x 5 + 400 x 2.5 + 200 x 20 = 8,000 per million
    assert baseline_cost(usage("gpt-4o", datetime(2026, 3, 1, tzinfo=UTC)), BOOK) == (Decimal("0.008"), "gpt-4o@2026-01-01T00:00:00+00:00")


def test_no_baseline_or_a_self_hosted_one_is_left_to_the_views() -> None:
    assert baseline_cost(usage("", JUN), BOOK) == (None, "")
    assert baseline_cost(usage("llama-3.1-70b-instruct", JUN), BOOK) == (None, "")  # no token price: allocation basis, in the views
    assert baseline_cost(usage("gpt-4o", datetime(2025, 12, 31, tzinfo=UTC)), BOOK) == (None, "")  # before its first version
