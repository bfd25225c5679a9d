"""``gpuledger report``: spend by org and model from the ledger, with totals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from rich.table import Table

from gpuledger.clickhouse import connect
from gpuledger.limits import MONEY_CONTEXT
from gpuledger.settings import Settings
from streams.store import spend as store


@dataclass(frozen=True)
class SpendRow:
    org: str
    model: str
    api: Decimal
    gpu: Decimal
    idle: Decimal
    adjustment: Decimal
    tokens: int
    lines: int

    @property
    def total(self) -> Decimal:
        return self.api + self.gpu + self.idle + self.adjustment


@dataclass(frozen=True)
class GpuTeamRow:
    """One team's GPU spend by what it paid for: metered inference, its own workloads, idle, late adjustments."""

    org: str
    team: str
    inference: Decimal
    workloads: Decimal
    idle: Decimal
    adjustment: Decimal

    @property
    def total(self) -> Decimal:
        return self.inference + self.workloads + self.idle + self.adjustment


def spend_by_org_model(settings: Settings, since: datetime | None = None, until: datetime | None = None) -> list[SpendRow]:
    """Ledger totals: closed hours from the hourly rollups, the open hour and hours they have not caught up with from
    the deduplicated ledger and usage events (``streams.store.spend``), so always current, with no rollup lag.

    Tokens come from the usage events, not the ledger: a request served by two GPUs
    has a line on each, but its tokens are counted once.
    """
    client = connect(settings.clickhouse)
    db = settings.clickhouse.database
    bounds: dict[str, Any] = {"since": since or datetime(1970, 1, 2, tzinfo=UTC), "until": until or datetime(2999, 1, 1, tzinfo=UTC)}
    now = datetime.now(UTC)
    edges = [bounds["since"], bounds["until"]]
    hours = store.read_hours(client, db, edges, bounds["since"], now)
    usage_hours = store.read_hours(client, db, edges, bounds["since"], now, source="usage_events")
    params = dict(bounds)
    costs = client.query(store.spend_by_org_model_sql(db, hours, now, params), parameters=params, settings=store.SETTINGS).result_rows
    params = dict(bounds)
    counted = client.query(store.tokens_by_org_model_sql(db, usage_hours, now, params), parameters=params, settings=store.SETTINGS)
    tokens = {(org, model): int(count) for org, model, count in counted.result_rows}
    return [
        SpendRow(org, model, Decimal(api), Decimal(gpu), Decimal(idle), Decimal(adj), tokens.get((org, model), 0), int(lines))
        for org, model, api, gpu, idle, adj, lines in costs
    ]


def gpu_spend_by_team(settings: Settings) -> list[GpuTeamRow]:
    """GPU spend per org and team: inference (token shares), workloads (training, notebooks, pods holding GPUs), idle,
    adjustments; closed hours from ``gpu_hourly``, the rest from the ledger, like ``spend_by_org_model``."""
    client = connect(settings.clickhouse)
    db = settings.clickhouse.database
    now, earliest = datetime.now(UTC), datetime(1970, 1, 2, tzinfo=UTC)
    params: dict[str, Any] = {"earliest": earliest}
    sql = store.gpu_spend_by_team_sql(db, store.read_hours(client, db, [], earliest, now), now, params)
    rows = client.query(sql, parameters=params, settings=store.SETTINGS).result_rows
    return [GpuTeamRow(org, team, *(Decimal(v) for v in values)) for org, team, *values in rows]


def org_totals(rows: list[SpendRow]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for row in rows:
        totals[row.org] = totals.get(row.org, Decimal(0)) + row.total
    return totals


def usd(value: Decimal | None) -> str:
    """Four decimals, in the wide money context: a figure near Decimal(38, 9)'s range is shown, not an InvalidOperation;
    "-" for no figure."""
    return "-" if value is None else f"{value.quantize(Decimal('0.0001'), context=MONEY_CONTEXT):,}"


def _money_columns(table: Table, rows: Sequence[object], columns: tuple[tuple[str, str], ...]) -> None:
    """Right-aligned money columns, each footed with its total."""
    for name, attr in columns:
        table.add_column(name, justify="right", footer=usd(sum((getattr(r, attr) for r in rows), Decimal(0))))


def render(rows: list[SpendRow], currency: str) -> Table:
    """A rich table: one line per org and model, a subtotal per org, a grand total."""
    table = Table(title=f"gpuledger chargeback ({currency})", show_footer=True)
    table.add_column("org", footer="TOTAL", no_wrap=True)
    table.add_column("model", no_wrap=True)
    _money_columns(table, rows, (("API", "api"), ("GPU", "gpu"), ("idle", "idle"), ("late adj.", "adjustment"), ("total", "total")))
    table.add_column("tokens", justify="right", footer=f"{sum(r.tokens for r in rows):,}")
    for org, total in org_totals(rows).items():
        for row in (r for r in rows if r.org == org):
            table.add_row(
                row.org, row.model, usd(row.api), usd(row.gpu), usd(row.idle), usd(row.adjustment), usd(row.total), f"{row.tokens:,}"
            )
        table.add_row("", f"[bold]{org} subtotal[/bold]", "", "", "", "", f"[bold]{usd(total)}[/bold]", "", end_section=True)
    return table


def render_gpu_teams(rows: list[GpuTeamRow], currency: str) -> Table:
    """GPU spend by team: what training and notebooks cost next to inference, and who carries the idle."""
    table = Table(title=f"GPU spend by team ({currency})", show_footer=True)
    table.add_column("org", footer="TOTAL", no_wrap=True)
    table.add_column("team", no_wrap=True)
    _money_columns(
        table,
        rows,
        (
            ("inference", "inference"),
            ("training & other workloads", "workloads"),
            ("idle", "idle"),
            ("late adj.", "adjustment"),
            ("total", "total"),
        ),
    )
    for row in rows:
        table.add_row(row.org, row.team or "-", usd(row.inference), usd(row.workloads), usd(row.idle), usd(row.adjustment), usd(row.total))
    return table
