"""``gpuledger budgets``: set, import, list and delete budgets (thin; the work is in ``gpuledger.commands.budgets``)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gpuledger.commands.budgets import current, delete, read_file, save
from gpuledger.kafka import PublishRefused
from gpuledger.limits import MONEY_CONTEXT
from gpuledger.settings import get_settings
from streams.budgets.definitions import BudgetError, BudgetSpec, parse_specs

app = typer.Typer(
    help="Budgets per org, team or project: alerts at thresholds, forecasts and spikes; hard budgets stop the gateway.",
    no_args_is_help=True,
)
console = Console(width=None if sys.stdout.isatty() else 160)
CENT = Decimal("0.01")


@contextlib.contextmanager
def _refusal_exits() -> Iterator[None]:
    """A refused request (by validation or by Kafka) prints what to fix and exits 1 (no traceback)."""
    try:
        yield
    except (BudgetError, LookupError, PublishRefused) as exc:
        console.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(1) from None


def _save(specs: list[BudgetSpec]) -> None:
    with _refusal_exits():
        budgets = asyncio.run(save(get_settings(), specs))
    for b in budgets:
        console.print(
            f"saved budget {b.budget_id}: {b.scope}, {b.amount.normalize():f} {b.currency} per {b.period} ({b.timezone}), "
            f"alerts at {', '.join(f'{t}%' for t in b.thresholds)}, {b.mode}"
        )


@app.command("set")
def set_budget(
    budget_id: Annotated[str, typer.Argument(help="Name of the budget, e.g. research-monthly.")],
    org: Annotated[str, typer.Option(help="Org in the org directory.")],
    amount: Annotated[str, typer.Option(help="Budget per period, e.g. 5000 or 1234.50.")],
    team: Annotated[str, typer.Option(help="Only this team of the org.")] = "",
    project: Annotated[str, typer.Option(help="Only this project of the team.")] = "",
    model: Annotated[str | None, typer.Option(help="Only this model's spend.")] = None,
    period: Annotated[str, typer.Option(help="day, week (from Monday) or month.")] = "month",
    timezone: Annotated[str, typer.Option(help="IANA time zone of the period boundaries.")] = "UTC",
    currency: Annotated[str, typer.Option(help="ISO 4217 code; must be a currency of the price list.")] = "USD",
    thresholds: Annotated[str, typer.Option(help="Comma-separated alert percentages.")] = "50,80,100",
    mode: Annotated[str, typer.Option(help="soft (alerts only) or hard (the gateway refuses requests once exhausted).")] = "soft",
    outcome_kind: Annotated[str, typer.Option(help="A unit budget: --amount caps the cost per successful outcome of this kind.")] = "",
) -> None:
    """Create or replace one budget (changing the amount re-arms its thresholds)."""
    entry: dict[str, Any] = {
        "id": budget_id,
        "org": org,
        "team": team,
        "project": project,
        "model": model,
        "period": period,
        "timezone": timezone,
        "amount": amount,
        "currency": currency,
        "mode": mode,
        "outcome_kind": outcome_kind,
        "thresholds": [t.strip() for t in thresholds.split(",") if t.strip()],
    }
    with _refusal_exits():
        specs = parse_specs([entry], "the command line")
    _save(specs)


@app.command("import")
def import_budgets(file: Annotated[Path, typer.Argument(help="YAML with a 'budgets:' list; keys as in `budgets set`, plus id.")]) -> None:
    """Create or replace every budget in a YAML file (all or nothing)."""
    with _refusal_exits():
        specs = parse_specs(read_file(file), str(file))
    _save(specs)


@app.command("list")
def list_budgets() -> None:
    """Every budget with its spend this period, as last published by the worker (at most ~10 s old while spend moves)."""
    with _refusal_exits():
        budgets, statuses = asyncio.run(current(get_settings()))
    table = Table("id", "scope", "period", "amount", "thresholds", "mode", "spent this period", "%", "state", "as of (UTC)")
    for b in budgets:
        s = statuses.get(b.budget_id)
        spent = pct = state = as_of = "-"
        if s is not None and s.amount == b.amount:
            as_of = f"{s.evaluated_at:%H:%M:%S}"
            spent = _shown(s.spend, CENT)
            pct = _shown(s.spend * 100 / b.amount if b.amount else Decimal("NaN"), Decimal("0.1"), grouped=False)
            state = "[red]exhausted[/red]" if s.exhausted else "ok"
        table.add_row(
            b.budget_id,
            b.scope,
            f"{b.period} ({b.timezone})",
            f"{_shown(b.amount, CENT)} {b.currency}",
            ",".join(map(str, b.thresholds)),
            b.mode,
            spent,
            pct,
            state,
            as_of,
        )
    console.print(table if budgets else "no budgets; create one with `gpuledger budgets set`")


def _shown(value: Decimal, step: Decimal, *, grouped: bool = True) -> str:
    """``value`` rounded for display; never raises (a huge or non-finite figure is shown as it is)."""
    with localcontext(MONEY_CONTEXT):
        try:
            rounded = value.quantize(step, ROUND_HALF_UP)
        except ArithmeticError:
            return str(value)
    return f"{rounded:,}" if grouped else f"{rounded}"


@app.command("delete")
def delete_budgets(budget_ids: Annotated[list[str], typer.Argument(help="Budget ids to delete.")]) -> None:
    """Delete budgets (a hard budget's block is lifted within seconds)."""
    with _refusal_exits():
        asyncio.run(delete(get_settings(), budget_ids))
    console.print(f"deleted: {', '.join(budget_ids)}")
