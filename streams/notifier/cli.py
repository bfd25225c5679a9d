"""``gpuledger notifier``: run the budget-alert notifier, inspect its delivery ledger, preview a message."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gpuledger.settings import Settings, SettingsError, use_subcommand_config
from schemas import BudgetAlert

app = typer.Typer(help="Budget alerts from Kafka to Slack and JSON webhooks.", no_args_is_help=True)
console = Console()
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        dir_okay=False,
        help="The settings file, as `gpuledger --config` (its `notifier:` section: routes, default, retry policy).",
    ),
]


def _load(path: Path | None) -> Settings:
    try:
        return use_subcommand_config(path)
    except SettingsError as exc:
        console.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(2) from None


@app.command("run")
def run(config: ConfigOption = None) -> None:
    """Consume the alerts topic (topics.budget_alerts) and post each alert once; Ctrl-C or SIGTERM stops cleanly."""
    from streams.notifier.runner import run_notifier

    settings = _load(config)
    ns = settings.notifier
    if not ns.routes and ns.default is None:
        console.print("[bold red]error:[/bold red] no routes and no default target configured")
        raise typer.Exit(1)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_notifier(settings, ns, stop)

    asyncio.run(main())


@app.command("status")
def status(config: ConfigOption = None, last: Annotated[int, typer.Option(help="Rows to show.")] = 20) -> None:
    """Delivery ledger: counts per status and the latest deliveries (route names only, never URLs)."""
    from streams.notifier.state import DeliveryState

    ns = _load(config).notifier
    if not ns.state_file.exists():
        console.print(f"no delivery state yet at {ns.state_file}")
        return
    state = DeliveryState(ns.state_file)
    try:
        counts, rows = state.counts(), state.all()[-last:]
    finally:
        state.close()
    console.print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no deliveries")
    table = Table("alert_id", "status", "route", "attempts", "last http", "updated")
    for d in rows:
        table.add_row(d.alert_id, d.status, d.route, str(d.attempts), str(d.last_http_status or ""), d.updated_at)
    console.print(table)


@app.command("preview")
def preview(scope: str = "acme/ml", spend: str = "800", budget: str = "1000", kind: str = "threshold", threshold_pct: int = 80) -> None:
    """Print the Slack Block Kit payload for a sample alert (paste into Slack's Block Kit Builder)."""
    from streams.notifier.slack import slack_message

    now = datetime.now(UTC).replace(microsecond=0)
    alert = BudgetAlert(
        alert_id=f"preview/{scope}/{kind}/{threshold_pct}",
        budget_id=f"{scope}-monthly",
        scope=scope,
        kind=kind,
        threshold_pct=threshold_pct if kind == "threshold" else 0,
        period_start=now.replace(day=1),
        period_end=now.replace(day=1) + timedelta(days=31),
        spend=Decimal(spend),
        budget_amount=Decimal(budget),
        currency="USD",
        raised_at=now,
        projected_breach=now + timedelta(days=5) if kind == "forecast" else None,
    )
    console.print_json(json.dumps(slack_message(alert)))


@app.command("preview-digest")
def preview_digest(scope: Annotated[str, typer.Option(help="org/team")], timezone: str = "UTC", config: ConfigOption = None) -> None:
    """Print the weekly digest a team would get now (its last full week, real figures) without posting it."""
    from gpuledger.sections.notifier import DigestSchedule
    from streams.notifier.digest import digest_message, due_week, read_figures

    try:
        schedule = DigestSchedule.model_validate({"scope": scope, "timezone": timezone})
    except ValueError as exc:
        console.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(1) from exc
    settings, week = _load(config), due_week(schedule, datetime.now(UTC))
    figures, standings = asyncio.run(read_figures(settings, settings.notifier.digest_outcomes_view, week))
    console.print_json(json.dumps(digest_message(week, figures, standings, settings.currency)))


if __name__ == "__main__":
    app()
