"""Finance formatting of the dashboard's tables: totals are the exact sum rounded once; CSV keeps every digit."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from urllib.parse import parse_qsl

import pytest

from gpuledger.ui.filters import BadFilter, Filters, period_bounds
from gpuledger.ui.tables import Column, Table, money


def test_a_total_is_the_exact_sum_rounded_once_not_the_sum_of_rounded_rows() -> None:
    # three lines of 0.005 each: shown 0.00 / 0.00 / 0.00 (half-even), but they total 0.015 -> 0.02
    table = Table(
        "t",
        "t",
        [Column("org", "org"), Column("cost", "cost", "money", True), Column("currency", "currency")],
        [{"org": o, "cost": Decimal("0.005"), "currency": "USD"} for o in ("a", "b", "c")],
    )
    assert [table.cell(r, table.columns[1]) for r in table.rows] == ["0.00", "0.00", "0.00"]
    assert table.totals() == [{"currency": "USD", "cost": Decimal("0.015")}]
    assert money(table.totals()[0]["cost"]) == "0.02"
    assert table.csv().splitlines() == ["org,cost,currency", "a,0.005,USD", "b,0.005,USD", "c,0.005,USD"]


def test_each_currency_gets_its_own_total() -> None:
    table = Table(
        "t",
        "t",
        [Column("cost", "cost", "money", True), Column("currency", "currency")],
        [
            {"cost": Decimal("1.10"), "currency": "USD"},
            {"cost": Decimal("2.20"), "currency": "EUR"},
            {"cost": Decimal("0.01"), "currency": "USD"},
        ],
    )
    assert {t["currency"]: t["cost"] for t in table.totals()} == {"USD": Decimal("1.11"), "EUR": Decimal("2.20")}
    assert money(Decimal("1234567.125")) == "1,234,567.12" and money(Decimal("0.135")) == "0.14"


def test_filters_round_trip_through_the_url_and_refuse_bad_input() -> None:
    f = Filters.parse({"since": "2026-10-01", "until": "2026-11-01", "org": "research", "team": ""}, date(2026, 11, 29))
    assert (f.org, f.team, f.project) == ("research", "", None)  # an empty team is a value (lines without a team)
    assert Filters.parse(dict(parse_qsl(f.url("/drill").split("?")[1], keep_blank_values=True)), date(2026, 11, 29)) == f
    assert Filters.parse({"org": ""}, date(2026, 11, 29)).org is None  # the org picker's "all"
    with pytest.raises(BadFilter, match="period='year': use month or week"):
        Filters.parse({"period": "year"}, date(2026, 11, 29))
    assert period_bounds("month", date(2026, 3, 31)) == (date(2026, 2, 1), date(2026, 3, 1), date(2026, 4, 1))
    assert period_bounds("week", date(2026, 11, 29)) == (date(2026, 11, 16), date(2026, 11, 23), date(2026, 11, 30))
