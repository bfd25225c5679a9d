"""``gpuledger outcomes report``: cost per outcome, per successful outcome, value per cost and coverage.

Reads the views of migration 0011 (``outcome_costs``, ``request_outcome_costs``) and re-derives every
ratio from the sums of the range asked for (a ratio of sums, never an average of daily ratios):

- outcomes are those that *occurred* in [since, until); their cost is that of the requests linked to them;
- coverage looks at the *requests* made in [since, until): linked cost ÷ all request cost of the same
  group (a team or project; for a kind, the projects that reported outcomes of that kind).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

from clickhouse_connect.driver.client import Client
from rich.table import Table

from gpuledger.clickhouse import connect
from gpuledger.settings import Settings
from streams.store import outcomes as store

By = Literal["kind", "team", "project"]
NANO = Decimal("0.000000001")
RATIO = Decimal("0.0001")
LABELS: dict[str, tuple[str, str]] = {  # by -> (label SQL, GROUP BY keys)
    "kind": ("kind", "kind"),
    "team": ("concat(org, '/', team)", "org, team"),
    "project": ("concat(org, '/', team, '/', project)", "org, team, project"),
}


@dataclass(frozen=True)
class OutcomeFigures:
    """One group's outcomes and what their requests cost, in ``currency``."""

    group: str
    currency: str
    outcomes: int
    successes: int
    requests: int
    cost: Decimal
    value: Decimal | None
    linked_cost: Decimal
    request_cost: Decimal

    @property
    def cost_per_outcome(self) -> Decimal | None:
        return _money(self.cost, self.outcomes)

    @property
    def cost_per_success(self) -> Decimal | None:
        """All the group's outcome cost (failed attempts included) ÷ its successes."""
        return _money(self.cost, self.successes)

    @property
    def value_per_cost(self) -> Decimal | None:
        return (self.value / self.cost).quantize(RATIO, ROUND_HALF_EVEN) if self.value is not None and self.cost else None

    @property
    def coverage(self) -> Decimal | None:
        """Linked request cost ÷ all request cost of the group (None without any request cost)."""
        return (self.linked_cost / self.request_cost).quantize(RATIO, ROUND_HALF_EVEN) if self.request_cost else None


def _money(cost: Decimal, count: int) -> Decimal | None:
    """``cost / count`` to 9 places, half-even; None for 0 (never a division by zero)."""
    return (cost / count).quantize(NANO, ROUND_HALF_EVEN) if count else None


def _coverage_sql(by: By, db: str) -> str:
    """(group, linked cost, request cost) of the requests in the range."""
    if by != "kind":
        label, keys = LABELS[by]
        return store.coverage_sql(db, label, keys)
    return store.coverage_by_kind_sql(db)


def outcome_figures(settings: Settings, since: date, until: date, by: By, client: Client | None = None) -> list[OutcomeFigures]:
    """Figures per ``by`` group over [since, until) (UTC days), ordered by group."""
    client = client if client is not None else connect(settings.clickhouse)
    db, params = settings.clickhouse.database, {"since": since, "until": until}
    label, keys = LABELS[by]
    coverage = {
        g: (Decimal(linked), Decimal(total)) for g, linked, total in client.query(_coverage_sql(by, db), parameters=params).result_rows
    }
    rows = client.query(
        store.outcome_figures_sql(db, label, keys),
        parameters=params,
    ).result_rows
    zero = (Decimal(0), Decimal(0))
    return [
        OutcomeFigures(
            g, currency, int(n), int(ok), int(requests), Decimal(cost), Decimal(value) if valued else None, *coverage.get(g, zero)
        )
        for g, currency, n, ok, requests, cost, value, valued in rows
    ]


def _shown(value: Decimal | int | None) -> str:
    """Every significant digit up to the ledger's 9 places (a cost per outcome is often far below a cent), grouped."""
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value.normalize():,f}"


def render_table(rows: list[OutcomeFigures], title: str) -> Table:
    """The figures as a rich table; ``--format csv|json`` give the same with exact decimal strings."""
    table = Table(title=title)
    columns = ("outcomes", "successes", "requests", "cost", "cost_per_outcome", "cost_per_success", "value", "value_per_cost", "coverage")
    table.add_column("group", no_wrap=True)
    table.add_column("currency")
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    for row in rows:
        table.add_row(row.group or "-", row.currency, *(_shown(getattr(row, c)) for c in columns))
    return table
