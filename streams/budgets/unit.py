"""Unit budgets: a cap on the cost per successful outcome of one kind (e.g. <= 0.40 USD per resolved ticket, weekly).

Measured on the ``outcome_costs`` view (migration 0011): for the outcomes of the budget's kind and
scope that occurred in the period, the cost of their linked requests ÷ their successes, in the
budget's currency. That figure stands in for "spend" in the evaluator, so thresholds, alert ids,
the alerts topic and the notifier work unchanged and each alert is raised exactly once. Forecasts
and spikes do not apply to a ratio: unit figures carry no run rate, so only thresholds fire.
A period with no success yet has no cost per success: its figure is 0 (nothing to alert on).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal

from clickhouse_connect.driver.client import Client

from schemas import Budget
from streams.budgets.rules import Figures
from streams.budgets.spend import Probe
from streams.store import outcomes

NANO = Decimal("0.000000001")


def cost_per_success(cost: Decimal, successes: int) -> Decimal:
    """The unit figure: 9 places half-even, 0 without successes."""
    return (cost / successes).quantize(NANO, ROUND_HALF_EVEN) if successes else Decimal(0)


def measure_units(client: Client, database: str, probes: list[Probe]) -> list[Figures]:
    """Each unit budget probe's cost per success in its period, in one scan of ``outcome_costs``."""
    if not probes:
        return []
    sql, params = outcomes.unit_figures_sql(database, probes)
    row = client.query(sql, parameters=params).result_rows[0]
    return [Figures(p.period_start, p.period_end, cost_per_success(Decimal(row[2 * i]), int(row[2 * i + 1]))) for i, p in enumerate(probes)]


def measure_all(
    probes: list[Probe], spending: Callable[[list[Probe]], list[Figures]], units: Callable[[list[Probe]], list[Figures]]
) -> list[Figures]:
    """Figures for every probe, in order: unit budgets by ``units``, the others by ``spending``."""
    unit = [p.budget.outcome_kind != "" for p in probes]
    spent = iter(spending([p for p, u in zip(probes, unit, strict=True) if not u]))
    per_success = iter(units([p for p, u in zip(probes, unit, strict=True) if u]))
    return [next(per_success) if u else next(spent) for u in unit]


def _plain(amount: Decimal) -> str:
    """Every significant digit (a unit cost is often below a cent), never exponent notation."""
    return format(amount.normalize(), "f")


def unit_message(budget: Budget, figures: Figures) -> str:
    """What a unit budget alert says."""
    return (
        f"{budget.scope}: the cost per successful {budget.outcome_kind} this {budget.period} is {_plain(figures.spend)} {budget.currency}, "
        f"against a cap of {_plain(budget.amount)} {budget.currency}."
    )
