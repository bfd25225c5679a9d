"""Scale benchmark (issue 15's table): budget spend, evaluator pass, rollup upkeep and `gpuledger report` as the ledger grows.

Fills the same synthetic ledger as ``views_bench.py`` (30 days in October 2026, 50 orgs x 10 teams, 20
models) and, at each size, times with the clock set to 30 Oct 23:40 UTC (inside the data):
- the budget spend query for 100 budgets (50 org monthly, 30 team daily, 20 org+model weekly) and one
  full evaluator pass over them (Kafka publishing replaced by a no-op; no alert is due);
- rollup upkeep: on a tree with refreshable views (before issue 15) one refresh of each; on a tree with
  incremental rollups the first (full) build once, then an incremental pass after each increment of
  ~10 s of traffic (1,000 new lines in the last 40 min, 100 restated and 10 withdrawn lines of the last 6 h);
- on a tree with migration 0015's refreshable dashboard rollups, one refresh of the four (server time; they run every
  10 s there, and are stopped otherwise so they do not compete with the timings; an incremental pass keeps them after 0017);
- ``gpuledger report``: spend by org and model, and its second table, GPU spend by team.
Medians of --runs runs. Runs against whichever tree it sits in (copy it into an older checkout to
measure "before"); its own ClickHouse, on ports below the ephemeral range.

Usage: .venv/bin/python tests/bench/scale_bench.py [--sizes 1000000,10000000,30000000] [--runs 3]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from clickhouse_connect.driver.client import Client
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gpuledger.clickhouse import connect  # noqa: E402
from gpuledger.commands.report import gpu_spend_by_team, spend_by_org_model  # noqa: E402
from gpuledger.settings import BudgetSettings, StackSettings  # noqa: E402
from gpuledger.stack import local  # noqa: E402
from schemas import Budget  # noqa: E402
from streams.budgets.evaluator import BudgetEvaluator, Topics  # noqa: E402
from streams.budgets.spend import measure  # noqa: E402
from tests.bench.bench_stack import arguments, fresh_database  # noqa: E402
from tests.bench.views_bench import LEDGER_FILL, USAGE_FILL, timed  # noqa: E402

try:
    from streams.store import rollups
except ImportError:  # a tree from before issue 15: refreshable views
    rollups = None  # type: ignore[assignment]


def stack(port_base: int) -> StackSettings:
    """The benchmark's own ClickHouse: TCP on ``port_base``, HTTP on ``port_base + 23``."""
    return StackSettings(
        data_dir=ROOT / ".gpuledger" / "bench-scale",
        clickhouse_http_port=port_base + 23,
        clickhouse_tcp_port=port_base,
        clickhouse_max_memory_bytes=8_000_000_000,
    )


NOW = datetime(2026, 10, 30, 23, 40, tzinfo=UTC)
LONG = {"max_execution_time": 0}
INCREMENT = """
INSERT INTO ledger (line_id, kind, event_time, window_seconds, org, team, project, cost_centre, model, key_id, gpu_uuid, price_id,
                    prompt_tokens, completion_tokens, cost, currency, gpu_model, basis, version, is_deleted)
SELECT if(number < 1000, concat('inc:{run}:', toString(number)), concat('restated:', toString(number))) AS line_id, 'api',
       {{now:DateTime64(6, 'UTC')}} - toIntervalSecond(if(number < 1000, number % 2400, (number - 1000) * 197)),
       0, concat('org', toString(number % 50)), concat('team', toString(number % 500)), 'p', concat('CC-', toString(number % 50)),
       concat('model-', toString(number % 20)), concat('key-', toString(number % 500)), '', 'bench', 300, 100,
       toDecimal128(((number + {run}) % 997) / 1000000, 9), 'USD', '', '', 1 + {run}, toUInt8(number >= 1100 AND {run} % 2 = 0)
FROM numbers(1110)
"""  # 1,000 new lines in the last 40 min; 110 lines of the last 6 h rewritten every run (the last 10 withdrawn every other run)


DASHBOARD_REFRESHES = ("gpu_daily_refresh", "gpu_utilization_hourly_refresh", "self_hosted_vs_api_rollup_refresh", "serving_hours_refresh")


def views(client: Client) -> set[str]:
    """The refreshable views of the benchmark's database."""
    return {r[0] for r in client.query("SELECT view FROM system.view_refreshes WHERE database = currentDatabase()").result_rows}


def budgets() -> list[Budget]:
    at = datetime(2026, 9, 1, tzinfo=UTC)
    big = Decimal(10) ** 9  # never crossed: the pass measures and publishes standings, no alert is due
    out = [Budget(budget_id=f"org{i}", org=f"org{i}", period="month", amount=big, currency="USD", updated_at=at) for i in range(50)]
    out += [
        Budget(budget_id=f"team{i}", org=f"org{i % 50}", team=f"team{i}", period="day", amount=big, currency="USD", updated_at=at)
        for i in range(30)
    ]
    out += [
        Budget(budget_id=f"model{i}", org=f"org{i}", model=f"model-{i}", period="week", amount=big, currency="USD", updated_at=at)
        for i in range(20)
    ]
    return out


async def _no_publish(topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    return None


def main() -> None:
    args = arguments(__doc__)
    console = Console()
    stack_settings = stack(args.port_base)
    settings = fresh_database(stack_settings, "bench_scale", console)
    client = connect(settings.clickhouse)
    db = settings.clickhouse.database
    for view in views(client):
        client.command(f"SYSTEM STOP VIEW {view}")  # refreshed on demand below, so they do not compete
    tree = "incremental rollups" if rollups else "refreshable views"
    evaluator = BudgetEvaluator(client, db, budgets, _no_publish, Topics("alerts", "status"), BudgetSettings(), clock=lambda: NOW)
    probes = evaluator._probes([b for b in budgets()], NOW)
    figures: dict[str, list[str]] = {}
    filled, run = 0, 0

    def record(name: str, seconds: float) -> None:
        figures.setdefault(name, []).append(f"{seconds:.3f}")
        console.print(f"{filled:,} lines, {name}: {seconds:.3f} s")

    def increment() -> None:
        nonlocal run
        run += 1
        client.command(INCREMENT.format(run=run), parameters={"now": NOW}, settings=LONG)

    def refresh(view: str) -> float:
        """One refresh of ``view``, as the server timed it (a stopped view is started for it and stopped again)."""
        client.command(f"SYSTEM START VIEW {view}")
        client.command(f"SYSTEM REFRESH VIEW {view}")
        client.command(f"SYSTEM WAIT VIEW {view}", settings=LONG)
        client.command(f"SYSTEM STOP VIEW {view}")
        error, millis = client.query(
            "SELECT exception, last_success_duration_ms FROM system.view_refreshes WHERE database = currentDatabase()"
            " AND view = {v:String}",
            parameters={"v": view},
        ).result_rows[0]
        if error or millis is None:
            raise RuntimeError(f"{view} did not refresh: {error}")
        return int(millis) / 1000

    sizes = [int(s) for s in args.sizes.split(",")]
    for size in sizes:
        with console.status(f"filling the ledger to {size:,} lines..."):
            client.command(LEDGER_FILL.format(offset=filled, count=size - filled), settings=LONG)
            client.command(USAGE_FILL.format(offset=filled // 2, count=(size - filled) // 2), settings=LONG)
            client.command("OPTIMIZE TABLE ledger FINAL", settings=LONG)
            filled = size
        if rollups:
            began = time.perf_counter()
            rollups.maintain(client, db)  # the fill: every hour dirty (once; a live system never rescans)
            record("rollups: pass after the bulk fill (all hours)", time.perf_counter() - began)
            time.sleep(max(0.0, rollups.OVERLAP.total_seconds() + 1 - (time.perf_counter() - began)))  # the fill leaves the overlap
            rollups.maintain(client, db)
            samples = []
            for _ in range(args.runs):
                increment()
                began = time.perf_counter()
                rollups.maintain(client, db)
                samples.append(time.perf_counter() - began)
            record("rollups: incremental pass (1,110 changed lines)", statistics.median(samples))
        else:
            increment()
            for view in ("spend_hourly_refresh", "spend_daily_refresh"):
                record(f"{view} (server time)", statistics.median(refresh(view) for _ in range(args.runs)))
        dashboard = [v for v in DASHBOARD_REFRESHES if v in views(client)]
        if dashboard:  # a tree with migration 0015's refreshable dashboard rollups: each re-reads the ledger every 10 s
            record("0015's dashboard rollups: one refresh of all four (server time)", sum(refresh(view) for view in dashboard))
        asyncio.run(evaluator.run_once())  # mirrors the budgets once
        record(
            "budget spend query, 100 budgets",
            timed(lambda: measure(client, db, probes, NOW, forecast_window=timedelta(hours=1), baseline_hours=24), args.runs),
        )
        record("one evaluator pass", timed(lambda: asyncio.run(evaluator.run_once()), args.runs))
        record("gpuledger report", timed(lambda: spend_by_org_model(settings), args.runs))
        record("gpuledger report: GPU spend by team", timed(lambda: gpu_spend_by_team(settings), args.runs))
    table = Table(title=f"{tree}: median of {args.runs} runs, seconds")
    table.add_column("figure")
    for size in sizes:
        table.add_column(f"{size:,} lines", justify="right")
    for name, cells in figures.items():
        table.add_row(name, *cells)
    console.print(table)
    local.down(stack_settings)


if __name__ == "__main__":
    main()
