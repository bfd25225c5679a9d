"""``gpuledger trends``: why spend rises while unit prices fall — a spend bridge between consecutive periods.

For each group (an org, team or project, or the whole company), each currency and each period:

    token spend S = Σ over models of q × u    (q tokens, counted once; u the model's unit cost, usage basis)
    Δ total spend = volume + price + mix + other, exactly:
        volume = (Q1 − Q0) × U0                 U = S / Q, the group's average unit cost
        price  = Σ over models in both periods of q1 × (u1 − u0)  (= S1 − q1 × S0 / Q0 per model)
        mix    = ΔS − volume − price            volume moving between models of different unit cost,
                                                 models added or dropped (the exact residual)
        other  = Δ of spend that has no tokens  GPU workloads (training, notebooks), idle, late adjustments

A period is bridged against the calendar period before it (one without spend counts as zero), for
every period with spend in it or in the one before, up to the current period. Figures come from the
``spend_daily`` rollup (days in the reporting time zone); migration 0014's ``spend_bridge`` view
computes the same rows in SQL. Each effect is rounded once, half-even to 9 places, from the exact
quotient. The Jevons flag marks a period whose unit cost fell while its total spend rose.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

from clickhouse_connect.driver.client import Client

from gpuledger.clickhouse import connect
from gpuledger.commands.unit_costs import By, div_half_even, grouping, per_mtok
from gpuledger.settings import Settings
from streams.store.spend_daily import bridge_inputs_sql

Period = Literal["month", "week"]
ZERO = Decimal(0)


@dataclass(frozen=True)
class ModelSpend:
    tokens: int
    spend: Decimal


@dataclass(frozen=True)
class Bridge:
    group: str
    period: date
    previous: date
    spend_before: Decimal
    spend_after: Decimal
    volume: Decimal
    price: Decimal
    mix: Decimal
    other: Decimal
    usd_per_mtok_before: Decimal | None
    usd_per_mtok_after: Decimal | None
    currency: str = ""

    @property
    def change(self) -> Decimal:
        return self.spend_after - self.spend_before

    @property
    def jevons(self) -> bool:
        """Unit cost fell while total spend rose."""
        before, after = self.usd_per_mtok_before, self.usd_per_mtok_after
        return before is not None and after is not None and after < before and self.change > 0


def period_start(day: date, period: Period) -> date:
    """The first day of the calendar month or Monday week holding ``day``."""
    return day.replace(day=1) if period == "month" else day - timedelta(days=day.weekday())


def shift(start: date, period: Period, steps: int) -> date:
    """The period ``steps`` periods after (or before) the one starting on ``start``."""
    if period == "week":
        return start + timedelta(weeks=steps)
    months = start.year * 12 + start.month - 1 + steps
    return date(months // 12, months % 12 + 1, 1)


def _totals(models: dict[str, ModelSpend]) -> tuple[int, Decimal]:
    """(tokens, token spend) of one period."""
    return sum(m.tokens for m in models.values()), sum((m.spend for m in models.values()), ZERO)


def price_effect(then: ModelSpend | None, now: ModelSpend) -> Decimal:
    """One model's part of the price effect: q1 × (u1 − u0) = S1 − q1 × S0 / Q0; zero unless it has tokens in both periods."""
    if then is None or not then.tokens or not now.tokens:
        return ZERO
    return now.spend - div_half_even(then.spend, then.tokens, now.tokens)


def bridge(
    before: dict[str, ModelSpend], after: dict[str, ModelSpend], other_before: Decimal, other_after: Decimal
) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """(volume, price, mix, other) between two periods; they add up to the change in total spend exactly."""
    (tokens_before, spend_before), (tokens_after, spend_after) = _totals(before), _totals(after)
    if tokens_before:
        volume = div_half_even(spend_before, tokens_before, tokens_after - tokens_before)
    else:
        volume = spend_after - spend_before  # nothing to compare with: all of it is new volume
    price = sum((price_effect(before.get(model), now) for model, now in after.items()), ZERO)
    mix = spend_after - spend_before - volume - price
    return volume, price, mix, other_after - other_before


def _periods(since: date, until: date, period: Period, today: date) -> list[date]:
    """Periods that overlap [since, until), up to the current one."""
    found, start = [], period_start(since, period)
    while start < until and start <= period_start(today, period):
        found.append(start)
        start = shift(start, period, 1)
    return found


def trends(settings: Settings, since: date, until: date, by: By, period: Period, client: Client | None = None) -> list[Bridge]:
    """A bridge for each group, currency and period overlapping [since, until) (on ``client``, or a new connection)."""
    label, _ = grouping(by)
    dims = label if by != "model" else "''"
    today = datetime.now(ZoneInfo(settings.reporting_timezone)).date()
    wanted = _periods(since, until, period, today)
    if not wanted:
        return []
    client = client if client is not None else connect(settings.clickhouse)
    models: dict[tuple[str, str, date], dict[str, ModelSpend]] = defaultdict(dict)
    other: dict[tuple[str, str, date], Decimal] = defaultdict(Decimal)
    for group, currency, when, model, tokens, spend, rest in client.query(
        bridge_inputs_sql(settings.clickhouse.database, dims, period),
        parameters={"first": shift(wanted[0], period, -1), "last": shift(wanted[-1], period, 1)},
    ).result_rows:
        if model:
            models[(group, currency, when)][model] = ModelSpend(int(tokens), Decimal(spend))
        other[(group, currency, when)] += Decimal(rest)
    keys = {(g, c) for g, c, _ in set(models) | set(other)}
    out = []
    for group, currency in sorted(keys):
        for current in wanted:
            now, then = (group, currency, current), (group, currency, shift(current, period, -1))
            if now not in other and then not in other:
                continue  # no spend in either period
            before, after = models.get(then, {}), models.get(now, {})
            volume, price, mix, rest = bridge(before, after, other.get(then, ZERO), other.get(now, ZERO))
            (tokens_before, spend_before), (tokens_after, spend_after) = _totals(before), _totals(after)
            out.append(
                Bridge(
                    group,
                    current,
                    then[2],
                    spend_before + other.get(then, ZERO),
                    spend_after + other.get(now, ZERO),
                    volume,
                    price,
                    mix,
                    rest,
                    per_mtok(spend_before, tokens_before),
                    per_mtok(spend_after, tokens_after),
                    currency,
                )
            )
    return out
