"""When a budget alert fires: thresholds, run-rate forecasts and spend spikes. Pure functions of figures.

Alert ids are deterministic (budget, period, kind, threshold or hour, amount) so raising
the same alert twice is harmless: ClickHouse keeps one row and the notifier posts once.
The amount is in the id so that changing a budget's amount re-arms its thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from schemas import Budget

HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Figures:
    """Spend of one budget scope, as measured at ``now`` (all in the budget's currency)."""

    period_start: datetime
    period_end: datetime
    spend: Decimal  # within the period
    recent: Decimal = Decimal(0)  # within the forecast window
    last_hour: Decimal = Decimal(0)
    baseline: Decimal = Decimal(0)  # within the spike baseline window (before the last hour)


def _stamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%MZ")


def _amount(budget: Budget) -> str:
    return format(budget.amount.normalize(), "f")


def threshold_alert_id(budget: Budget, period_start: datetime, pct: int) -> str:
    return f"{budget.budget_id}/{_stamp(period_start)}/threshold/{pct}/{_amount(budget)}"


def forecast_alert_id(budget: Budget, period_start: datetime) -> str:
    return f"{budget.budget_id}/{_stamp(period_start)}/forecast/{_amount(budget)}"


def spike_alert_id(budget: Budget, period_start: datetime, now: datetime) -> str:
    hour = now.replace(minute=0, second=0, microsecond=0)
    return f"{budget.budget_id}/{_stamp(period_start)}/spike/{_stamp(hour)}"


def crossed(budget: Budget, spend: Decimal) -> list[int]:
    """Every threshold percentage that ``spend`` has reached."""
    return [pct for pct in budget.thresholds if spend * 100 >= budget.amount * pct]


def projected_breach(budget: Budget, f: Figures, now: datetime, window: timedelta, min_pct: float) -> datetime | None:
    """When the run rate of the last ``window`` exhausts the budget, if that is before the period ends.

    Quiet while spend is under ``min_pct`` of the budget (too little to project from) and
    once the budget is already exhausted (the 100 % threshold speaks then).
    """
    if budget.amount <= 0 or f.spend >= budget.amount or f.spend * 100 < budget.amount * Decimal(str(min_pct)):
        return None
    span = min(window, now - f.period_start).total_seconds()
    if span <= 0 or f.recent <= 0:
        return None
    rate = f.recent / Decimal(str(span))  # per second
    breach = now + timedelta(seconds=float((budget.amount - f.spend) / rate))
    return breach if breach < f.period_end else None


def is_spike(budget: Budget, f: Figures, baseline_hours: int, factor: float, min_pct: float) -> bool:
    """Spend in the last hour at least ``factor`` times the trailing hourly average.

    Needs a non-zero baseline (a brand-new scope has none; thresholds cover it) and a
    last hour of at least ``min_pct`` of the budget, so pennies never page anyone.
    """
    hourly = f.baseline / baseline_hours
    if hourly <= 0 or f.last_hour * 100 < budget.amount * Decimal(str(min_pct)):
        return False
    return f.last_hour >= hourly * Decimal(str(factor))
