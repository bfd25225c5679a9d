"""``gpuledger outcomes``: import outcomes from a file, report cost per outcome (thin; the work is in ``gpuledger.commands.outcomes*``)."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gpuledger.commands.outcomes import outcome_figures, render_table
from gpuledger.commands.outcomes_import import import_outcomes
from gpuledger.commands.reference_import import ReferenceFileError
from gpuledger.commands.unit_costs import render
from gpuledger.kafka import PublishRefused
from gpuledger.settings import get_settings

app = typer.Typer(help="Business outcomes (resolved tickets, merged PRs) and what their requests cost.", no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 160)


class ReportBy(StrEnum):
    kind = "kind"
    team = "team"
    project = "project"


class ReportFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


DERIVED = ("cost_per_outcome", "cost_per_success", "value_per_cost", "coverage")


@app.command("import")
def import_command(file: Annotated[Path, typer.Argument(help="CSV (header row) or JSON Lines (.jsonl): one outcome per row.")]) -> None:
    """Publish outcomes from a file: every row validated first, nothing sent unless all are valid."""
    try:
        outcomes = asyncio.run(import_outcomes(get_settings(), file))
    except (ReferenceFileError, LookupError, PublishRefused) as exc:
        console.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(1) from None
    kinds = sorted({o.kind for o in outcomes})
    console.print(f"imported {len(outcomes):,} outcomes ({', '.join(kinds)}), {sum(o.success for o in outcomes):,} successful")


def _days(since: datetime | None, until: datetime | None) -> tuple[date, date]:
    """[since, until) in UTC days; default: this month so far. An empty range is refused."""
    today = datetime.now(UTC).date()
    start, end = (since.date() if since else today.replace(day=1)), (until.date() if until else today + timedelta(days=1))
    if start >= end:
        console.print(f"[bold red]error:[/bold red] --since {start} is not before --until {end}; give a range of at least one day")
        raise typer.Exit(1)
    return start, end


@app.command("report")
def report_command(
    since: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="First day (UTC), default: the 1st of this month.")] = None,
    until: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Day after the last (UTC), default: tomorrow.")] = None,
    by: Annotated[ReportBy, typer.Option(help="Group by outcome kind, team or project.")] = ReportBy.kind,
    fmt: Annotated[ReportFormat, typer.Option("--format", help="table, or csv / json with exact decimals.")] = ReportFormat.table,
) -> None:
    """Cost per outcome and per successful outcome, value per cost and coverage (README, "Cost per outcome")."""
    start, end = _days(since, until)
    rows = outcome_figures(get_settings(), start, end, by.value)
    title = f"cost per outcome {start} to {end} (exclusive), per {by.value}"
    if fmt.value == "table":
        console.print(render_table(rows, title) if rows else f"no outcomes from {start} to {end} (exclusive)")
        return
    output = str(render(rows, DERIVED, fmt.value, title))
    sys.stdout.write(output if output.endswith("\n") else output + "\n")
