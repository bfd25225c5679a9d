"""Budget periods and alert rules as pure functions (no engines): the arithmetic the worker relies on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from schemas import Budget
from streams.budgets.periods import period_bounds, previous_period
from streams.budgets.rules import Figures, crossed, forecast_alert_id, is_spike, projected_breach, spike_alert_id, threshold_alert_id

NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)


def budget(amount: str = "100", **kw: object) -> Budget:
    return Budget(budget_id="b1", org="acme", period="month", amount=Decimal(amount), currency="USD", updated_at=NOW, **kw)  # type: ignore[arg-type]


def test_month_in_berlin_starts_at_local_midnight() -> None:
    start, end = period_bounds("month", "Europe/Berlin", NOW)
    assert start == datetime(2026, 10, 31, 23, 0, tzinfo=UTC)  # CET, UTC+1
    assert end == datetime(2026, 11, 30, 23, 0, tzinfo=UTC)


def test_dst_day_is_23_hours_and_week_starts_monday() -> None:
    start, end = period_bounds("day", "Europe/Berlin", datetime(2026, 3, 29, 12, tzinfo=UTC))
    assert end - start == timedelta(hours=23)
    start, end = period_bounds("week", "UTC", NOW)  # a Wednesday
    assert (start.weekday(), start.day, end - start) == (0, 16, timedelta(days=7))


def test_previous_period_and_december_rollover() -> None:
    start, _ = period_bounds("month", "UTC", datetime(2027, 1, 3, tzinfo=UTC))
    assert previous_period("month", "UTC", start) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert period_bounds("month", "UTC", datetime(2026, 12, 31, 23, 59, tzinfo=UTC))[1] == datetime(2027, 1, 1, tzinfo=UTC)


def test_unknown_period_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown budget period 'year'"):
        period_bounds("year", "UTC", NOW)


def test_thresholds_are_crossed_at_exact_percentages() -> None:
    b = budget("30")
    assert crossed(b, Decimal("14.999999999")) == []
    assert crossed(b, Decimal("15")) == [50]
    assert crossed(b, Decimal("24")) == [50, 80]
    assert crossed(b, Decimal("31")) == [50, 80, 100]


def test_alert_ids_are_deterministic_and_rearm_when_the_amount_changes() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    assert threshold_alert_id(budget("100"), start, 80) == "b1/2026-11-01T00:00Z/threshold/80/100"
    assert threshold_alert_id(budget("100.0"), start, 80) == threshold_alert_id(budget("100"), start, 80)
    assert threshold_alert_id(budget("150"), start, 80) != threshold_alert_id(budget("100"), start, 80)
    assert forecast_alert_id(budget("100"), start) == "b1/2026-11-01T00:00Z/forecast/100"
    assert spike_alert_id(budget(), start, NOW + timedelta(minutes=59)) == spike_alert_id(budget(), start, NOW)


def figures(spend: str, recent: str = "0", last_hour: str = "0", baseline: str = "0") -> Figures:
    start, end = period_bounds("month", "UTC", NOW)
    return Figures(start, end, Decimal(spend), Decimal(recent), Decimal(last_hour), Decimal(baseline))


def test_forecast_projects_the_run_rate_to_a_breach_date() -> None:
    # 20 spent, 4 of it in the last hour: 4/h, 80 left -> breach in 20 h, well before the month ends.
    breach = projected_breach(budget("100"), figures("20", recent="4"), NOW, timedelta(hours=1), 10)
    assert breach == NOW + timedelta(hours=20)


def test_forecast_is_quiet_when_the_rate_fits_or_data_is_thin_or_already_exhausted() -> None:
    window = timedelta(hours=1)
    assert projected_breach(budget("100"), figures("20", recent="0.1"), NOW, window, 10) is None  # 800 h > 12 days left
    assert projected_breach(budget("100"), figures("5", recent="5"), NOW, window, 10) is None  # under 10 % spent
    assert projected_breach(budget("100"), figures("100", recent="5"), NOW, window, 10) is None  # threshold's job now
    # Early in the period the rate is over the time elapsed, not the whole window.
    start = NOW - timedelta(minutes=30)
    early = Figures(start, start + timedelta(days=1), Decimal(20), Decimal(20), Decimal(0), Decimal(0))
    assert projected_breach(budget("100"), early, NOW, window, 10) == NOW + timedelta(hours=2)


def test_spike_needs_factor_times_baseline_and_a_minimum_size() -> None:
    b = budget("1000")
    assert is_spike(b, figures("0", last_hour="30", baseline="240"), 24, 3.0, 1.0)  # 30 >= 3 x 10/h
    assert not is_spike(b, figures("0", last_hour="29", baseline="240"), 24, 3.0, 1.0)
    assert not is_spike(b, figures("0", last_hour="9", baseline="24"), 24, 3.0, 1.0)  # 9x, but under 1 % of budget
    assert not is_spike(b, figures("0", last_hour="50", baseline="0"), 24, 3.0, 1.0)  # no history: no baseline
