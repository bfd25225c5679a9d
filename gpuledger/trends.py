"""``gpuledger trends``: why spend rises while unit prices fall — a spend bridge between consecutive periods.

For each group (an org, team or project, or the whole company) and each pair of consecutive periods:

    token spend S = Σ over models of q × u    (q tokens, counted once; u the model's unit cost, usage basis)
    Δ total spend = volume + price + mix + other, exactly:
        volume = (Q1 − Q0) × U0                 U = S / Q, the group's average unit cost
        price  = Σ over models in both periods of q1 × (u1 − u0)
        mix    = ΔS − volume − price            volume moving between models of different unit cost,
                                                 models added or dropped (the exact residual)
        other  = Δ of spend that has no tokens  GPU workloads (training, notebooks), idle, late adjustments

The Jevons flag marks a period whose unit cost fell while its total spend rose.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

from clickhouse_connect.driver.client import Client

from gpuledger.clickhouse import connect
from gpuledger.settings import Settings
from gpuledger.unit_costs import NANO, By, grouping, per_mtok

Period = Literal["month", "week"]
ZERO = Decimal(0)
PERIOD_START = {"month": "toStartOfMonth(event_time)", "week": "toMonday(event_time)"}
TOKEN_LINES = "(kind = 'api' OR (kind = 'gpu' AND basis = 'tokens'))"


@dataclass(frozen=True)
class ModelSpend:
    tokens: int
    spend: Decimal

    @property
    def unit_cost(self) -> Decimal | None:
        return self.spend / self.tokens if self.tokens else None


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

    @property
    def change(self) -> Decimal:
        return self.spend_after - self.spend_before

    @property
    def jevons(self) -> bool:
        """Unit cost fell while total spend rose."""
        before, after = self.usd_per_mtok_before, self.usd_per_mtok_after
        return before is not None and after is not None and after < before and self.change > 0


def _totals(models: dict[str, ModelSpend]) -> tuple[int, Decimal]:
    """(tokens, token spend) of one period."""
    return sum(m.tokens for m in models.values()), sum((m.spend for m in models.values()), ZERO)


def bridge(before: dict[str, ModelSpend], after: dict[str, ModelSpend], other_before: Decimal, other_after: Decimal) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """(volume, price, mix, other) between two periods; they add up to the change in total spend exactly."""
    (tokens_before, spend_before), (tokens_after, spend_after) = _totals(before), _totals(after)
    if tokens_before:
        volume = ((tokens_after - tokens_before) * spend_before / tokens_before).quantize(NANO, ROUND_HALF_EVEN)
    else:
        volume = spend_after - spend_before  # nothing to compare with: all of it is new volume
    price = ZERO
    for model, now in after.items():
        then = before.get(model)
        if then is not None and then.unit_cost is not None and now.unit_cost is not None:
            price += (now.tokens * (now.unit_cost - then.unit_cost)).quantize(NANO, ROUND_HALF_EVEN)
    mix = spend_after - spend_before - volume - price
    return volume, price, mix, other_after - other_before


def trends(settings: Settings, since: date, until: date, by: By, period: Period, client: Client | None = None) -> list[Bridge]:
    """A bridge for each group and each period after the first in [since, until) (on ``client``, or a new connection)."""
    label, _ = grouping(by)
    dims = label if by != "model" else "''"
    start = PERIOD_START[period]
    client = client if client is not None else connect(settings.clickhouse)
    models: dict[tuple[str, date], dict[str, ModelSpend]] = defaultdict(dict)
    other: dict[tuple[str, date], Decimal] = defaultdict(Decimal)
    for group, when, model, tokens, spend, rest in client.query(
        f"SELECT {dims} AS grp, {start} AS period, if({TOKEN_LINES}, model, '') AS token_model,"
        f" sumIf(prompt_tokens + completion_tokens, {TOKEN_LINES}), sumIf(cost, {TOKEN_LINES}), sumIf(cost, NOT {TOKEN_LINES})"
        f" FROM {settings.clickhouse.database}.ledger FINAL WHERE event_time >= {{since:Date}} AND event_time < {{until:Date}}"
        " GROUP BY grp, period, token_model ORDER BY grp, period, token_model",
        parameters={"since": since, "until": until},
    ).result_rows:
        if model:
            models[(group, when)][model] = ModelSpend(int(tokens), Decimal(spend))
        other[(group, when)] += Decimal(rest)
    periods: dict[str, list[date]] = defaultdict(list)
    for group, when in sorted(set(models) | set(other)):
        periods[group].append(when)
    out = []
    for group, dates in periods.items():
        for previous, current in zip(dates, dates[1:], strict=False):
            before, after = models.get((group, previous), {}), models.get((group, current), {})
            volume, price, mix, rest = bridge(before, after, other[(group, previous)], other[(group, current)])
            (tokens_before, spend_before), (tokens_after, spend_after) = _totals(before), _totals(after)
            out.append(Bridge(
                group, current, previous, spend_before + other[(group, previous)], spend_after + other[(group, current)],
                volume, price, mix, rest, per_mtok(spend_before, tokens_before), per_mtok(spend_after, tokens_after),
            ))
    return out
