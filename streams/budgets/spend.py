"""Budget spend measured on the deduplicated ledger (``ledger FINAL``), all budgets in one scan.

Reading the ledger rather than counting lines as they stream past is what makes the
figures immune to replays, retries and GPU restatements: a replayed line replaces
itself, so every evaluation sees exactly the booked total. One query per evaluation
computes, for every (budget, period), the period spend and the recent windows that
forecasts and spikes need, with ``sumIf`` columns over a single pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client

from schemas import Budget, SpendShare
from streams.budgets.rules import HOUR, Figures


@dataclass(frozen=True, slots=True)
class Probe:
    """One budget in one of its periods, to be measured at ``now``."""

    budget: Budget
    period_start: datetime
    period_end: datetime


def _scope_condition(budget: Budget, i: int, params: dict[str, Any]) -> str:
    """SQL selecting the budget's ledger lines; values travel as bound parameters, never spliced in."""
    params[f"org{i}"], params[f"cur{i}"] = budget.org, budget.currency
    parts = [f"org = {{org{i}:String}}", f"currency = {{cur{i}:String}}"]
    for column, value in (("team", budget.team), ("project", budget.project), ("model", budget.model)):
        if value:
            params[f"{column}{i}"] = value
            parts.append(f"{column} = {{{column}{i}:String}}")
    return " AND ".join(parts)


def measure(client: Client, database: str, probes: list[Probe], now: datetime, *, forecast_window: timedelta, baseline_hours: int) -> list[Figures]:
    """The ``Figures`` of every probe, in order."""
    if not probes:
        return []
    params: dict[str, Any] = {"now": now}
    columns: list[str] = []
    baseline = timedelta(hours=baseline_hours)
    for i, probe in enumerate(probes):
        scope = _scope_condition(probe.budget, i, params)
        params[f"ps{i}"], params[f"pe{i}"] = probe.period_start, probe.period_end
        period = f"event_time >= {{ps{i}:DateTime64(6, 'UTC')}} AND event_time < {{pe{i}:DateTime64(6, 'UTC')}}"
        columns += [
            f"sumIf(cost, {scope} AND {period})",
            f"sumIf(cost, {scope} AND event_time >= {{now:DateTime64(6, 'UTC')}} - INTERVAL {int(forecast_window.total_seconds())} SECOND)",
            f"sumIf(cost, {scope} AND event_time >= {{now:DateTime64(6, 'UTC')}} - INTERVAL 3600 SECOND)",
            f"sumIf(cost, {scope} AND event_time >= {{now:DateTime64(6, 'UTC')}} - INTERVAL {int((baseline + HOUR).total_seconds())} SECOND"
            f" AND event_time < {{now:DateTime64(6, 'UTC')}} - INTERVAL 3600 SECOND)",
        ]
    earliest = min([p.period_start for p in probes] + [now - baseline - HOUR, now - forecast_window])
    params["earliest"] = earliest
    sql = f"SELECT {', '.join(columns)} FROM {database}.ledger FINAL WHERE event_time >= {{earliest:DateTime64(6, 'UTC')}}"
    row = client.query(sql, parameters=params).result_rows[0]
    figures = []
    for i, probe in enumerate(probes):
        spend, recent, last_hour, base = (Decimal(v) for v in row[4 * i : 4 * i + 4])
        figures.append(Figures(probe.period_start, probe.period_end, spend, recent, last_hour, base))
    return figures


def top_spenders(client: Client, database: str, probes: list[Probe], column: str, limit: int) -> list[list[SpendShare]]:
    """Each probe's largest spenders in its period by ``model`` or ``key_id``, biggest first ('' shows as '(none)').

    One scan for all probes: each ledger line is fanned out to the probes it belongs to
    (``arrayJoin``), then ``LIMIT n BY`` keeps each probe's top ``limit``.
    """
    assert column in ("model", "key_id")
    if not probes:
        return []
    params: dict[str, Any] = {"n": limit, "earliest": min(p.period_start for p in probes)}
    members = []
    for i, probe in enumerate(probes):
        params[f"ps{i}"], params[f"pe{i}"] = probe.period_start, probe.period_end
        period = f"event_time >= {{ps{i}:DateTime64(6, 'UTC')}} AND event_time < {{pe{i}:DateTime64(6, 'UTC')}}"
        members.append(f"if({_scope_condition(probe.budget, i, params)} AND {period}, {i}, -1)")
    sql = (
        f"SELECT probe, {column}, sum(cost) AS spent FROM ("
        f" SELECT arrayJoin(arrayFilter(x -> x >= 0, [{', '.join(members)}])) AS probe, {column}, cost"
        f" FROM {database}.ledger FINAL WHERE event_time >= {{earliest:DateTime64(6, 'UTC')}})"
        f" GROUP BY probe, {column} ORDER BY probe, spent DESC, {column} LIMIT {{n:UInt32}} BY probe"
    )
    shares: list[list[SpendShare]] = [[] for _ in probes]
    for probe, name, spent in client.query(sql, parameters=params).result_rows:
        shares[probe].append(SpendShare(name=name or "(none)", spend=Decimal(spent)))
    return shares
