"""Analyst views benchmark: query time of each finance view and command as the ledger grows.

Fills a synthetic ledger server-side (``INSERT ... SELECT FROM numbers``: 30 days, 50 orgs x 10 teams,
20 models; 40 % API lines, 40 % GPU token shares, 20 % idle) with half as many usage events, then times,
at each size, the plain spend-by-org query (the baseline, measured in the same run) and the queries behind
`gpuledger report`, `unit-costs`, `compare` and `trends`, and the `spend_bridge` view. Medians of --runs runs; ratios against the baseline.
Its own ClickHouse (no Kafka), on ports below the ephemeral range.

Usage: .venv/bin/python tests/bench/views_bench.py [--sizes 1000000,10000000,30000000] [--runs 3]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gpuledger.clickhouse import connect  # noqa: E402
from gpuledger.commands.report import spend_by_org_model  # noqa: E402
from gpuledger.commands.trends import trends  # noqa: E402
from gpuledger.commands.unit_costs import comparisons, unit_costs  # noqa: E402
from gpuledger.settings import StackSettings  # noqa: E402
from gpuledger.stack import local  # noqa: E402
from streams.store.rollups import refresh_rollups  # noqa: E402
from tests.bench.bench_stack import arguments, fresh_database  # noqa: E402

STACK = StackSettings(
    data_dir=ROOT / ".gpuledger" / "bench-views",
    clickhouse_http_port=28123,
    clickhouse_tcp_port=28000,
    clickhouse_max_memory_bytes=8_000_000_000,
)
START, END = date(2026, 10, 1), date(2026, 11, 1)

LEDGER_FILL = """
INSERT INTO ledger (line_id, kind, event_time, window_seconds, org, team, project, cost_centre, model, key_id, gpu_uuid,
                    price_id, prompt_tokens, completion_tokens, window_tokens, share_tokens, gpu_seconds, cost, currency,
                    gpu_model, basis, version)
SELECT concat('bench:', toString(number + {offset})) AS line_id,
       multiIf(number % 5 < 2, 'api', number % 5 < 4, 'gpu', 'idle') AS kind,
       toDateTime64('2026-10-01 00:00:00', 6, 'UTC') + toIntervalSecond((number * 7919) % (30 * 86400)) AS event_time,
       60, concat('org', toString(number % 50)), concat('team', toString(number % 500)), 'p', concat('CC-', toString(number % 50)),
       if(kind = 'idle', 'NVIDIA H100 80GB HBM3', concat('model-', toString(number % 20))), concat('key-', toString(number % 500)),
       if(kind = 'api', '', concat('GPU-', toString(number % 400))), 'bench',
       if(kind = 'idle', 0, 200 + number % 1000), if(kind = 'idle', 0, 50 + number % 300),
       if(kind = 'gpu', 4000, 0), if(kind = 'gpu', 250 + number % 1300, 0), toDecimal128(60, 9),
       toDecimal128((number % 10000) / 1000000, 9), 'USD', if(kind = 'api', '', 'NVIDIA H100 80GB HBM3'),
       multiIf(kind = 'gpu', 'tokens', kind = 'idle', 'remainder', ''), 1
FROM numbers({count})
"""
USAGE_FILL = """
INSERT INTO usage_events (event_id, request_start, event_time, key_id, model, backend, prompt_tokens, completion_tokens,
                          latency_ms, status, org, team, project, priced_as, cost, api_equivalent_cost)
SELECT concat('bench-', toString(number + {offset})),
       toDateTime64('2026-10-01 00:00:00', 6, 'UTC') + toIntervalSecond((number * 7919) % (30 * 86400)) AS t, t,
       concat('key-', toString(number % 500)), concat('model-', toString(number % 20)), 'bench', 200 + number % 1000, 50 + number % 300,
       100, 'ok', concat('org', toString(number % 50)), concat('team', toString(number % 500)), 'p', if(number % 2 = 0, 'api', 'gpu'),
       toDecimal128((number % 10000) / 1000000, 9), toDecimal128((number % 9000) / 1000000, 9)
FROM numbers({count})
"""


def timed(work: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        work()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def main() -> None:
    args = arguments(__doc__)
    console = Console()
    settings = fresh_database(STACK, "bench_views", console)
    client = connect(settings.clickhouse)
    queries: dict[str, Callable[[], object]] = {
        "spend by org (baseline)": lambda: client.query("SELECT org, sum(cost) FROM ledger FINAL GROUP BY org").result_rows,
        "report (spend by org and model)": lambda: spend_by_org_model(settings),
        "unit-costs --by team": lambda: unit_costs(settings, START, END, "team"),
        "compare --by model": lambda: comparisons(settings, START, END, "model"),
        "trends --period week --by org": lambda: trends(settings, START, END, "org", "week"),
        "spend_bridge view (weeks, by org)": lambda: (
            client.query(
                "SELECT * FROM spend_bridge WHERE period_kind = 'week' AND period >= {s:Date} AND period < {e:Date}",
                parameters={"s": START, "e": END},
            ).result_rows
        ),
    }
    table = Table(title=f"analyst views: median of {args.runs} runs, seconds (x baseline)")
    table.add_column("query")
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, list[str]] = {name: [] for name in queries}
    filled = 0
    for size in sizes:
        with console.status(f"filling the ledger to {size:,} lines..."):
            client.command(LEDGER_FILL.format(offset=filled, count=size - filled), settings={"max_execution_time": 0})
            client.command(USAGE_FILL.format(offset=filled // 2, count=(size - filled) // 2), settings={"max_execution_time": 0})
            client.command("OPTIMIZE TABLE ledger FINAL", settings={"max_execution_time": 0})
            refresh_rollups(client)  # trends and the spend_bridge view read the rollups (no worker runs here)
            filled = size
        table.add_column(f"{size:,} lines", justify="right")
        baseline = 0.0
        for name, work in queries.items():
            with console.status(f"{size:,} lines: {name}"):
                seconds = timed(work, args.runs)
            baseline = baseline or seconds
            results[name].append(f"{seconds:.2f} ({seconds / baseline:.1f}x)")
            console.print(f"{size:,} lines, {name}: {seconds:.3f} s")
    for name, cells in results.items():
        table.add_row(name, *cells)
    console.print(table)
    local.down(STACK)


if __name__ == "__main__":
    main()
