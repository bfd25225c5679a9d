"""Reading routing savings from ClickHouse (the views of migration 0013), summed over a range of UTC days.

Sums only: every figure is re-added from the daily view's columns, so a range's savings equal the sum of its
requests' savings (never an average of daily figures). Money stays Decimal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Literal

from clickhouse_connect.driver.client import Client

from gpuledger.clickhouse import connect
from gpuledger.settings import Settings

By = Literal["org", "team", "project", "model"]
# The group a row is labelled with: "org", "org/team", "org/team/project" (``model``: none, alias and rule only).
GROUPS: dict[str, tuple[str, ...]] = {"org": ("org",), "team": ("org", "team"), "project": ("org", "team", "project"), "model": ()}


@dataclass(frozen=True)
class SavingsRow:
    """What one alias's rule cost, what its baseline would have cost, and the difference, for one group."""

    group: str
    alias: str
    route_rule: str
    requests: int
    unpriced_requests: int
    tokens: int
    actual_cost: Decimal
    counterfactual_cost: Decimal
    savings: Decimal


def savings(
    settings: Settings, since: date, until: date, by: By = "team", *, org: str = "", team: str = "", client: Client | None = None
) -> list[SavingsRow]:
    """Savings per ``by`` group, alias and rule over [since, until); ``org``/``team`` narrow it to one scope (the weekly digest)."""
    dims = GROUPS[by]
    label = "concat(" + ", '/', ".join(dims) + ")" if len(dims) > 1 else (dims[0] if dims else "''")
    keys = ", ".join((*dims, "alias", "route_rule"))
    scope = "".join(f" AND {c} = {{{c}:String}}" for c, v in (("org", org), ("team", team)) if v)
    rows = (
        (client or connect(settings.clickhouse))
        .query(
            f"SELECT {label}, alias, route_rule, sum(requests), sum(unpriced_requests), sum(tokens), sum(actual_cost), "
            f"sum(counterfactual_cost), sum(savings) FROM {settings.clickhouse.database}.routing_savings_daily "
            f"WHERE day >= {{since:Date}} AND day < {{until:Date}}{scope} GROUP BY {keys} ORDER BY {keys}",
            parameters={"since": since, "until": until, "org": org, "team": team},
        )
        .result_rows
    )
    return [SavingsRow(g, a, r, int(n), int(u), int(t), Decimal(ac), Decimal(cf), Decimal(s)) for g, a, r, n, u, t, ac, cf, s in rows]


def with_total(rows: list[SavingsRow]) -> list[SavingsRow]:
    """The rows and a TOTAL row adding them up (none when there are no rows)."""
    if not rows:
        return rows
    money = [sum((getattr(r, f) for r in rows), Decimal(0)) for f in ("actual_cost", "counterfactual_cost", "savings")]
    return [
        *rows,
        SavingsRow(
            "TOTAL", "", "", sum(r.requests for r in rows), sum(r.unpriced_requests for r in rows), sum(r.tokens for r in rows), *money
        ),
    ]
