"""Budget spend, exact to the cent: closed hours from the ``spend_hourly`` rollup, the rest from ``ledger FINAL``.

Reading the deduplicated ledger (and rollups recomputed from it) rather than counting lines
as they stream past is what makes the figures immune to replays, retries and GPU
restatements. Hours written since the rollup's last pass are read from the ledger, so the
figures never wait for the rollup; the SQL is built in ``streams.store.spend``. One query per
evaluation computes, for every (budget, period), the period spend and the recent windows that
forecasts and spikes need: each line joined to the budgets of its org, summed per budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from schemas import Budget, SpendShare
from streams.budgets.rules import Figures
from streams.store.spend import (
    SETTINGS,
    earliest,
    measure_sql,
    read_hours,
    top_spenders_sql,
    window_boundaries,
)


@dataclass(frozen=True, slots=True)
class Probe:
    """One budget in one of its periods, to be measured at ``now``."""

    budget: Budget
    period_start: datetime
    period_end: datetime


def measure(
    client: Client, database: str, probes: list[Probe], now: datetime, *, forecast_window: timedelta, baseline_hours: int
) -> list[Figures]:
    """The ``Figures`` of every probe, in order."""
    if not probes:
        return []
    baseline = timedelta(hours=baseline_hours)
    hours = read_hours(
        client, database, window_boundaries(probes, now, forecast_window, baseline), earliest(probes, now, forecast_window, baseline), now
    )
    sql, params = measure_sql(database, probes, now, hours, forecast_window=forecast_window, baseline=baseline)
    measured = {i: [Decimal(v) for v in sums] for i, *sums in client.query(sql, parameters=params, settings=SETTINGS).result_rows}
    zero = [Decimal(0)] * 4  # a probe without any line in scope has no row
    return [Figures(p.period_start, p.period_end, *measured.get(i, zero)) for i, p in enumerate(probes)]


def top_spenders(client: Client, database: str, probes: list[Probe], column: str, limit: int, now: datetime) -> list[list[SpendShare]]:
    """Each probe's largest spenders in its period by ``model`` or ``key_id``, biggest first ('' shows as '(none)')."""
    if not probes:
        return []
    hours = read_hours(
        client, database, [t for p in probes for t in (p.period_start, p.period_end)], min(p.period_start for p in probes), now
    )
    sql, params = top_spenders_sql(database, probes, column, limit, now, hours)
    shares: list[list[SpendShare]] = [[] for _ in probes]
    for probe, name, spent in client.query(sql, parameters=params, settings=SETTINGS).result_rows:
        shares[probe].append(SpendShare(name=name or "(none)", spend=Decimal(spent)))
    return shares
