"""The ``gpuledger`` command line. Thin: parses options, calls one module, prints the result."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from collectors.cli import app as collector_app
from gpuledger.commands.budgets_cli import app as budgets_app
from gpuledger.commands.dead_letters_cli import app as dead_letters_app
from gpuledger.commands.export_cli import app as export_app
from gpuledger.commands.outcomes_cli import app as outcomes_app
from gpuledger.commands.topics_cli import app as topics_app
from gpuledger.commands.topics_cli import create as create_topics
from gpuledger.data import DEMO
from gpuledger.logs import configure_logging
from gpuledger.settings import Settings, SettingsError, config_file, get_settings, use_config_file
from gpuledger.ui.cli import serve as ui_serve
from inference.gateway.cli import app as gateway_app
from streams.notifier.cli import app as notifier_app

app = typer.Typer(help="gpuledger: real-time chargeback for GPU and token spend.", no_args_is_help=True, pretty_exceptions_enable=False)
stack_app = typer.Typer(help="The local stack: Kafka (KRaft) and ClickHouse on this machine.", no_args_is_help=True)
orgs_app = typer.Typer(help="The org directory (API keys, namespaces, nodes -> org/team/project).", no_args_is_help=True)
prices_app = typer.Typer(help="The effective-dated price list.", no_args_is_help=True)
equivalents_app = typer.Typer(help="The API SKU each self-hosted model would replace (self-host vs API comparisons).", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(orgs_app, name="orgs")
app.add_typer(prices_app, name="prices")
app.add_typer(equivalents_app, name="equivalents")
app.add_typer(collector_app, name="collector")
app.add_typer(gateway_app, name="gateway")
app.add_typer(notifier_app, name="notifier")
app.add_typer(budgets_app, name="budgets")
app.add_typer(dead_letters_app, name="dead-letters")
app.add_typer(topics_app, name="topics")
app.add_typer(export_app, name="export")
app.add_typer(outcomes_app, name="outcomes")
app.command("ui")(ui_serve)
console = Console(width=None if sys.stdout.isatty() else 150)  # pipes and CI logs get the full table


# Exit codes of every gpuledger command (README "Exit codes").
EXIT_REFUSED, EXIT_CONFIG, EXIT_MISSING, EXIT_SPOOLED, EXIT_RESOURCE = 1, 2, 3, 4, 5


def fail(message: str, code: int = EXIT_REFUSED) -> typer.Exit:
    console.print(f"[bold red]error:[/bold red] {message}")
    return typer.Exit(code)


@app.callback()
def main(
    config: Annotated[
        Path | None,
        typer.Option(help="The YAML settings file of every command (default: $GPULEDGER_CONFIG, else ./gpuledger.yaml if present)."),
    ] = None,
) -> None:
    use_config_file(config)
    try:
        settings = get_settings()
    except SettingsError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
    configure_logging(settings.log_level, settings.log_format)


def _settings() -> Settings:
    return get_settings()


@stack_app.command("up")
def stack_up(
    kafka_brokers: Annotated[
        int | None,
        typer.Option(min=1, max=9, help="Kafka nodes (default: stack.kafka_brokers); 3 gives replication factor 3, min.insync.replicas 2."),
    ] = None,
    clickhouse_shards: Annotated[
        int | None, typer.Option(min=1, max=9, help="ClickHouse servers, one shard each (default: stack.clickhouse_shards).")
    ] = None,
) -> None:
    """Start Kafka and ClickHouse (idempotent) and wait until both answer."""
    from gpuledger.stack import local
    from gpuledger.stack.processes import StackError

    settings = _settings()
    sizes = {k: v for k, v in (("kafka_brokers", kafka_brokers), ("clickhouse_shards", clickhouse_shards)) if v is not None}
    stack = settings.stack.model_copy(update=sizes)
    with console.status("starting Kafka and ClickHouse (the first start downloads Kafka's jars)..."):
        try:
            engines = local.up(stack)
        except StackError as exc:
            raise fail(str(exc)) from exc
    _print_status(engines)
    if stack.kafka_brokers > 1 or stack.clickhouse_shards > 1:
        target = settings.model_copy(update={"stack": stack}).with_stack_endpoints()
        console.print("Point every gpuledger command at this cluster with (README, Scale-out):")
        console.print(
            f"  GPULEDGER_STACK__KAFKA_BROKERS={stack.kafka_brokers} GPULEDGER_STACK__CLICKHOUSE_SHARDS={stack.clickhouse_shards}"
        )
        console.print(
            f"  GPULEDGER_KAFKA__BOOTSTRAP_SERVERS={target.kafka.bootstrap_servers} GPULEDGER_TOPICS__REPLICATION_FACTOR={target.topics.replication_factor}"
        )
        if target.clickhouse.cluster:
            console.print(
                f"  GPULEDGER_CLICKHOUSE__CLUSTER={target.clickhouse.cluster} GPULEDGER_CLICKHOUSE__NODE_URLS='{json.dumps(target.clickhouse.node_urls)}'"
            )


@stack_app.command("down")
def stack_down() -> None:
    """Stop the engines this stack started (only those, by pid)."""
    from gpuledger.stack import local

    stopped = local.down(_settings().stack)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack_app.command("kafka-tool", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def stack_kafka_tool(ctx: typer.Context, tool: Annotated[str, typer.Argument(help="topics | consumer-groups | console-consumer")]) -> None:
    """Run one of Kafka's CLI tools from the stack's jars, e.g. `gpuledger stack kafka-tool consumer-groups --describe --all-groups`."""
    from gpuledger.stack.kafka import tool_command
    from gpuledger.stack.processes import StackError

    settings = _settings()
    try:
        command = tool_command(settings.stack, tool, list(ctx.args), settings.kafka.bootstrap_servers)
    except StackError as exc:
        raise fail(str(exc)) from exc
    raise typer.Exit(subprocess.call(command))


@stack_app.command("status")
def stack_status() -> None:
    """Show which engines run, with pid, port and log."""
    from gpuledger.stack import local

    engines = local.status(_settings().stack)
    _print_status(engines)
    if any(e.pid is None for e in engines):
        raise typer.Exit(EXIT_MISSING)


def _print_status(engines: list[Any]) -> None:
    table = Table("engine", "state", "pid", "port", "log")
    for e in engines:
        table.add_row(e.name, "[green]running[/green]" if e.pid else "[red]stopped[/red]", str(e.pid or "-"), str(e.port), e.log)
    console.print(table)


@app.command()
def migrate() -> None:
    """Apply pending ClickHouse migrations (idempotent)."""
    from gpuledger.migrate import MigrationError, apply_migrations

    try:
        done = apply_migrations(_settings())
    except MigrationError as exc:
        raise fail(str(exc)) from exc
    console.print(f"applied {len(done)} migration(s)" + "".join(f"\n  {m.version:04d}_{m.name}" for m in done))


@app.command()
def worker() -> None:
    """Run the stream worker (Faust) until SIGTERM (stops within worker.shutdown_grace_seconds)."""
    from streams import metrics
    from streams.app import run_worker

    w = _settings().worker
    health = metrics.WorkerHealth() if w.metrics_port else None
    if health is not None:
        try:
            metrics.serve_http(w.metrics_host, w.metrics_port, health, required=True)
        except OSError as exc:
            raise fail(
                f"cannot serve the worker's metrics on {w.metrics_host}:{w.metrics_port}: {exc.strerror or exc}; "
                "free the port or set GPULEDGER_WORKER__METRICS_PORT (0 turns metrics off)",
                EXIT_RESOURCE,
            ) from None
    run_worker(_settings(), health)


def _import(kind: str, path: Path) -> None:
    from gpuledger.commands import reference_import as ri
    from gpuledger.kafka import PublishRefused

    try:
        importers: dict[str, Callable[[Settings, Path], Coroutine[Any, Any, Sequence[object]]]] = {
            "orgs": ri.import_orgs,
            "prices": ri.import_prices,
            "equivalents": ri.import_equivalents,
        }
        importer = importers[kind]
        records = asyncio.run(importer(_settings(), path))
    except (ri.ReferenceFileError, PublishRefused) as exc:
        raise fail(str(exc)) from exc
    console.print(f"published {len(records)} {kind} record(s) from {path}")


@orgs_app.command("import")
def orgs_import(file: Path) -> None:
    """Publish an org directory file (YAML or CSV: kind,key,org,team,project,cost_centre)."""
    _import("orgs", file)


@prices_app.command("import")
def prices_import(file: Path) -> None:
    """Publish a price list file (YAML or CSV: sku,kind,currency,effective_from,input_per_mtok,...)."""
    _import("prices", file)


@equivalents_app.command("import")
def equivalents_import(file: Path) -> None:
    """Publish API equivalents (YAML `equivalents:` or CSV: model,api_sku,effective_from); each api_sku needs a token price."""
    _import("equivalents", file)


@app.command()
def simulate(
    seed: Annotated[int, typer.Option(help="Same seed and --start, same events (ids and times).")] = 7,
    minutes: Annotated[int, typer.Option(min=1, max=24 * 60, help="Simulated minutes of fleet traffic.")] = 30,
    scale: Annotated[float, typer.Option(min=0.01, help="Multiplier on request rates.")] = 1.0,
    start: Annotated[datetime | None, typer.Option(help="First minute (UTC); default: ends at the current minute.")] = None,
    orgs: Annotated[Path, typer.Option(help="Org directory used for the ground truth.")] = DEMO / "orgs.yaml",
    prices: Annotated[Path, typer.Option(help="Price list used for the ground truth.")] = DEMO / "prices.yaml",
    truth: Annotated[Path, typer.Option(help="Where to write the expected totals.")] = Path(".gpuledger/simulation-truth.json"),
) -> None:
    """Publish deterministic fleet traffic to Kafka and write the ground truth beside it."""
    from gpuledger.commands.simulate import publish_fleet
    from gpuledger.kafka import PublishRefused

    settings = _settings()
    first = (start.replace(tzinfo=UTC) if start and start.tzinfo is None else start) or _minute_floor(datetime.now(UTC)) - timedelta(
        minutes=minutes
    )
    try:
        result = asyncio.run(
            publish_fleet(
                settings, seed=seed, start=first, minutes=minutes, scale=scale, orgs=orgs, prices=prices, truth_path=truth, console=console
            )
        )
    except PublishRefused as exc:
        raise fail(str(exc)) from exc
    outcomes = sum(k["outcomes"] for k in result["outcomes"].values())
    console.print(
        f"published {result['usage_events']:,} usage events, {result['gpu_samples']:,} GPU samples and {outcomes:,} outcomes; "
        f"expected total {result['total']}, routing savings {result['routing_savings']['savings']} -> {truth}"
    )


def _minute_floor(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


Since = Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="First day (UTC), default: the 1st of this month.")]
Until = Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Day after the last (UTC), default: tomorrow.")]


class GroupBy(StrEnum):
    org = "org"
    team = "team"
    project = "project"
    model = "model"


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


ByOption = Annotated[GroupBy, typer.Option(help="Group by org, team, project (each with the model) or by model only.")]
FormatOption = Annotated[OutputFormat, typer.Option("--format", help="table, or csv / json with exact decimals.")]


@app.command()
def report(
    truth: Annotated[Path | None, typer.Option(help="Compare per-org totals with a simulation's ground truth.")] = None,
    wait: Annotated[float, typer.Option(help="With --truth: wait up to this many seconds for the ledger to match.")] = 0.0,
    savings: Annotated[
        bool, typer.Option("--savings", help="Routing savings instead: per group, alias and rule, actual vs baseline cost.")
    ] = False,
    since: Since = None,
    until: Until = None,
    by: ByOption = GroupBy.team,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Spend by org and model, with totals, from the ledger in ClickHouse (``--savings``: what routing saved; --since/--until/--by/--format apply to it)."""
    from gpuledger.commands.report import gpu_spend_by_team, org_totals, render, render_gpu_teams, spend_by_org_model

    settings = _settings()
    if savings:
        from gpuledger.commands.unit_costs import render as render_rows
        from streams.store.savings import savings as routing_savings
        from streams.store.savings import with_total

        start, end = _range(since, until)
        found = with_total(routing_savings(settings, start, end, GroupBy(by).value))
        _show(
            render_rows(
                found,
                (),
                OutputFormat(fmt).value,
                f"routing savings {start} to {end} (exclusive), {settings.currency}: baseline cost - actual cost",
            )
        )
        return
    expected = json.loads(truth.read_text())["orgs"] if truth else None
    deadline = time.monotonic() + wait
    rows = spend_by_org_model(settings)
    while expected and _mismatch(org_totals(rows), expected) and time.monotonic() < deadline:
        time.sleep(2)
        rows = spend_by_org_model(settings)
    console.print(render(rows, settings.currency))
    console.print(render_gpu_teams(gpu_spend_by_team(settings), settings.currency))
    if expected:
        bad = _mismatch(org_totals(rows), expected)
        if bad:
            raise fail("ledger differs from the ground truth (to the cent): " + "; ".join(bad))
        console.print("[bold green]ledger matches the simulation's ground truth to the cent for every org[/bold green]")


def _mismatch(actual: dict[str, Decimal], expected: dict[str, dict[str, str]]) -> list[str]:
    cent = Decimal("0.01")
    orgs = set(actual) | set(expected)
    return [
        f"{org}: ledger {actual.get(org, Decimal(0)).quantize(cent)} vs expected {Decimal(expected.get(org, {}).get('total', '0')).quantize(cent)}"
        for org in sorted(orgs)
        if actual.get(org, Decimal(0)).quantize(cent) != Decimal(expected.get(org, {}).get("total", "0")).quantize(cent)
    ]


def _range(since: datetime | None, until: datetime | None) -> tuple[date, date]:
    """[since, until) as dates: by default this month so far (UTC); refuses an empty range."""
    today = datetime.now(UTC).date()
    start = since.date() if since else today.replace(day=1)
    end = until.date() if until else today + timedelta(days=1)
    if start >= end:
        raise fail(f"--since {start} is not before --until {end}; give a range of at least one day")
    return start, end


def _per(by: str) -> str:
    return "model" if by == "model" else f"{by} and model"


def _show(output: object) -> None:
    if isinstance(output, str):
        sys.stdout.write(output if output.endswith("\n") else output + "\n")
    else:
        console.print(output)


@app.command("unit-costs")
def unit_costs_command(
    since: Since = None, until: Until = None, by: ByOption = GroupBy.team, fmt: FormatOption = OutputFormat.table
) -> None:
    """What a million tokens costs per model: usage basis (busy share) and allocation basis (with the GPUs' idle)."""
    from gpuledger.commands import unit_costs as uc

    start, end = _range(since, until)
    rows = uc.unit_costs(_settings(), start, end, by.value)
    _show(
        uc.render(
            rows, ("per_mtok_usage", "per_mtok_allocation"), fmt.value, f"unit costs {start} to {end} (exclusive), per {_per(by.value)}"
        )
    )


@app.command("compare")
def compare_command(since: Since = None, until: Until = None, by: ByOption = GroupBy.model, fmt: FormatOption = OutputFormat.table) -> None:
    """Self-hosted vs API per model: allocation and usage cost, API-equivalent cost, ratio, break-even tokens/hour, headroom."""
    from gpuledger.commands import unit_costs as uc

    start, end = _range(since, until)
    rows = uc.comparisons(_settings(), start, end, by.value)
    _show(
        uc.render(
            rows,
            ("ratio", "break_even_tokens_per_hour", "headroom"),
            fmt.value,
            f"self-hosted vs API {start} to {end} (exclusive), per {_per(by.value)}",
        )
    )


class PeriodOption(StrEnum):
    month = "month"
    week = "week"


@app.command("trends")
def trends_command(
    since: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="First day (UTC), default: the 1st of the month five months ago.")
    ] = None,
    until: Until = None,
    by: ByOption = GroupBy.org,
    fmt: FormatOption = OutputFormat.table,
    period: Annotated[PeriodOption, typer.Option(help="Bridge month to month or week to week.")] = PeriodOption.month,
) -> None:
    """Why spend moved: each period's change split into volume, price, mix and non-token spend; flags unit cost down, spend up."""
    from gpuledger.commands import trends as tr
    from gpuledger.commands import unit_costs as uc

    if since is None:
        first = datetime.now(UTC).replace(day=1)
        for _ in range(5):
            first = (first - timedelta(days=1)).replace(day=1)
        since = first
    start, end = _range(since, until)
    rows = tr.trends(_settings(), start, end, by.value, period.value)
    _show(
        uc.render(rows, ("change", "jevons"), fmt.value, f"spend bridge per {period.value}, {start} to {end} (exclusive), per {by.value}")
    )


@app.command()
def demo(minutes: Annotated[int, typer.Option(min=1, help="Simulated minutes.")] = 30) -> None:
    """The main job end to end on a fresh local stack: stack up, migrate, import, worker, simulate, report."""
    from gpuledger.stack import local

    settings = _settings()
    # The demo checks its ledger against the ground truth, so it starts from empty engines.
    local.down(settings.stack)
    for folder in (settings.stack.data_dir / "kafka", settings.stack.data_dir / "clickhouse", settings.worker.data_dir):
        shutil.rmtree(folder, ignore_errors=True)
    stack_up()
    migrate()
    create_topics()
    _import("orgs", DEMO / "orgs.yaml")
    _import("prices", DEMO / "prices.yaml")
    _import("equivalents", DEMO / "equivalents.yaml")
    from gpuledger.commands.budgets_cli import import_budgets, list_budgets

    import_budgets(DEMO / "budgets.yaml")
    log_path = settings.stack.data_dir / "worker.log"
    with log_path.open("ab") as log:
        chosen = config_file()
        config_args = ["--config", str(chosen)] if chosen is not None else []
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpuledger.commands.cli", *config_args, "worker"], stdout=log, stderr=subprocess.STDOUT
        )
    console.print(f"worker started (pid {proc.pid}, log {log_path})")
    try:
        truth = settings.stack.data_dir / "simulation-truth.json"
        simulate(minutes=minutes, truth=truth)
        from gpuledger.commands.report import org_totals, spend_by_org_model

        expected = json.loads(truth.read_text())["orgs"]
        deadline = time.monotonic() + 240
        with console.status("waiting for the worker to price everything..."):
            while _mismatch(org_totals(spend_by_org_model(settings)), expected) and time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise fail(f"the worker exited with code {proc.returncode}; see {log_path}")
                time.sleep(2)
        report(truth=truth)
        _outcomes_and_savings(settings, json.loads(truth.read_text()), minutes, proc, log_path)
        from streams.budgets.evaluator import STATUS_REFRESH

        with console.status("waiting for the worker's next budget evaluations..."):
            time.sleep(STATUS_REFRESH.total_seconds() + 2)  # a standing whose spend moved is republished within this
        _show_alerts(settings)
        list_budgets()
        proc.terminate()  # before the summary brings the rollups up to date: one rollup pass at a time
        proc.wait(30)
        _cfo_summary(settings)
    finally:
        proc.terminate()
        proc.wait(30)


def _outcomes_and_savings(settings: Settings, truth: dict[str, Any], minutes: int, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """Cost per outcome and routing savings of the simulated days, checked against the simulation's truth."""
    from gpuledger.commands.demo_outcomes import show

    def alive() -> None:
        if proc.poll() is not None:
            raise fail(f"the worker exited with code {proc.returncode}; see {log_path}")

    now = datetime.now(UTC)
    show(settings, truth, (now - timedelta(minutes=minutes + 2)).date(), now.date() + timedelta(days=1), console, alive)


def _cfo_summary(settings: Settings) -> None:
    """The demo's last word: spend by org, self-hosted vs API with break-even, this month's bridge, from the views."""
    from zoneinfo import ZoneInfo

    from gpuledger.clickhouse import connect
    from gpuledger.commands.cfo_summary import render, summary
    from streams.store.rollups import refresh_rollups

    client = connect(settings.clickhouse)
    refresh_rollups(client)
    console.rule("CFO summary (this month so far, from the views)")
    console.print(render(summary(settings, client, datetime.now(ZoneInfo(settings.reporting_timezone)).date())))


def _show_alerts(settings: Settings) -> None:
    """The budget alerts the worker raised (the notifier would post them; none is configured in the demo)."""
    from gpuledger.clickhouse import connect
    from streams.store.budgets import ALERTS_RAISED as sql

    client = connect(settings.clickhouse)
    deadline = time.monotonic() + 15
    rows = client.query(sql).result_rows
    while not rows and time.monotonic() < deadline:
        time.sleep(1)
        rows = client.query(sql).result_rows
    table = Table(
        "budget",
        "kind",
        "threshold",
        "spend",
        "budget",
        "message",
        title="budget alerts raised (`gpuledger notifier run` posts them to Slack)",
    )
    for budget_id, kind, pct, spend, amount, currency, message in rows:
        table.add_row(budget_id, kind, f"{pct}%" if pct else "-", f"{spend:.2f} {currency}", f"{amount:.2f} {currency}", message)
    console.print(table)


if __name__ == "__main__":
    app()
