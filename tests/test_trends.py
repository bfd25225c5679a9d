"""The spend bridge (README "Why spend rises while unit prices fall"): hand-computed, and exact for any data."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from gpuledger.clickhouse import connect
from gpuledger.settings import Settings
from gpuledger.trends import ModelSpend, bridge, trends
from schemas import LedgerLine
from streams.sink import LEDGER_COLUMNS, ledger_row
from tests.support import isolated


def line(line_id: str, when: datetime, model: str, tokens: int, cost: str, kind: str = "api", org: str = "research") -> LedgerLine:
    return LedgerLine(
        line_id=line_id, kind=kind, event_time=when, org=org, team="agents", project="p", cost_centre="", model=model, price_id="x",
        gpu_seconds=Decimal(0), cost=Decimal(cost), currency="USD", prompt_tokens=tokens, basis="" if kind == "api" else "remainder",
    )


@pytest.mark.engines
def test_the_readme_bridge_on_the_real_ledger(stack_settings: Settings) -> None:
    # October: model A 1,000,000 tokens for 10.00 (10 per million), idle 1.00.
    # November: A 1,500,000 tokens for 12.00 (8 per million: its price fell), B 500,000 tokens for 1.00, idle 2.00.
    # volume (2M - 1M) x 10/M = 10.00; price 1.5M x (8 - 10)/M = -3.00; mix 3.00 - 10.00 + 3.00 = -4.00; other +1.00;
    # total 11.00 -> 15.00 = +4.00. Unit cost fell 10.00 -> 6.50 per million while spend rose: Jevons.
    settings = isolated(stack_settings, "trends")
    oct_, nov = datetime(2026, 10, 14, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)
    lines = [
        line("a1", oct_, "model-a", 600_000, "6"), line("a2", oct_, "model-a", 400_000, "4"), line("i1", oct_, "H100", 0, "1", kind="idle"),
        line("a3", nov, "model-a", 1_500_000, "12"), line("b1", nov, "model-b", 500_000, "1"), line("i2", nov, "H100", 0, "2", kind="idle"),
        line("o1", nov, "model-b", 7, "99", org="elsewhere"),
    ]
    connect(settings.clickhouse).insert("ledger", [ledger_row(x, 1) for x in lines], column_names=list(LEDGER_COLUMNS))
    rows = {r.group: r for r in trends(settings, date(2026, 10, 1), date(2026, 12, 1), "org", "month")}
    research = rows["research"]
    assert (research.previous, research.period) == (date(2026, 10, 1), date(2026, 11, 1))
    assert (research.spend_before, research.spend_after, research.change) == (Decimal(11), Decimal(15), Decimal(4))
    assert (research.volume, research.price, research.mix, research.other) == (Decimal(10), Decimal(-3), Decimal(-4), Decimal(1))
    assert (research.usd_per_mtok_before, research.usd_per_mtok_after, research.jevons) == (Decimal(10), Decimal("6.5"), True)
    assert "elsewhere" not in rows  # one period only: nothing to bridge


@pytest.mark.parametrize("seed", range(30))
def test_effects_always_add_up_to_the_change_exactly(seed: int) -> None:
    rng = random.Random(seed)

    def period() -> dict[str, ModelSpend]:
        return {f"m{i}": ModelSpend(rng.choice([0, rng.randrange(1, 10**9)]), Decimal(rng.randrange(0, 10**12)) / 10**9)
                for i in range(rng.randrange(0, 5))}

    before, after = period(), period()
    other_before, other_after = Decimal(rng.randrange(10**6)) / 1000, Decimal(rng.randrange(10**6)) / 1000
    volume, price, mix, other = bridge(before, after, other_before, other_after)
    spend = lambda p: sum((m.spend for m in p.values()), Decimal(0))  # noqa: E731
    assert volume + price + mix + other == spend(after) + other_after - spend(before) - other_before
