"""``gpuledger export``: the ledger in formats other tools import (thin; the work is in ``gpuledger.commands.focus_export``)."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from clickhouse_connect.driver.exceptions import ClickHouseError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from gpuledger.commands.focus_export import ExportError, Issuer, export_focus
from gpuledger.commands.focus_files import FORMATS, ExportFileError
from gpuledger.settings import get_settings

app = typer.Typer(help="Export the ledger for FinOps tools (FOCUS 1.2).", no_args_is_help=True)
console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)  # CI logs and pipes: one line per message
DAY_OR_TIME = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]


def _fail(progress: Progress, message: str) -> None:
    progress.stop()
    console.print(f"[bold red]error:[/bold red] {message}")
    raise typer.Exit(1)


@app.command("focus")
def focus(
    start: Annotated[datetime, typer.Option("--from", formats=DAY_OR_TIME, help="First day or instant (UTC), inclusive.")],
    end: Annotated[datetime, typer.Option("--to", formats=DAY_OR_TIME, help="Day or instant (UTC) after the last, exclusive.")],
    out: Annotated[Path, typer.Option("--out", help="File to write (replaced only once the export is complete).")],
    fmt: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(FORMATS)}.")] = "csv",
    provider: Annotated[str, typer.Option(help="ProviderName, PublisherName and InvoiceIssuerName.")] = "gpuledger",
    billing_account: Annotated[str, typer.Option(help="BillingAccountId and BillingAccountName.")] = "gpuledger",
) -> None:
    """One FOCUS 1.2 row per ledger line in [--from, --to): API requests, GPU shares and workloads, idle, adjustments."""
    issuer = Issuer(provider=provider, billing_account_id=billing_account, billing_account_name=billing_account)
    columns = (TextColumn("exporting ledger lines"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=not sys.stderr.isatty()) as progress:
        task = progress.add_task("export", total=None)
        try:
            result = export_focus(
                get_settings(),
                start,
                end,
                fmt,
                out,
                issuer=issuer,
                on_start=lambda total: progress.update(task, total=total),
                on_rows=lambda n: progress.advance(task, n),
            )
        except (ExportError, ExportFileError) as exc:
            _fail(progress, str(exc))
        except ClickHouseError as exc:  # nothing was published: the partial file is removed
            _fail(
                progress,
                f"ClickHouse could not serve the export ({type(exc).__name__}): {str(exc).splitlines()[0][:500]}; "
                f"check clickhouse.url / clickhouse.database and `gpuledger migrate`",
            )
    console.print(f"wrote {result.rows:,} FOCUS rows to {result.path} (BilledCost total {result.billed_cost:f})")
    if not result.complete:
        console.print(
            f"[yellow]warning:[/yellow] the ledger changed during the export (it held {result.ledger_lines:,} lines, "
            f"{result.ledger_cost:f}, when it began); export the range again for a consistent file"
        )
