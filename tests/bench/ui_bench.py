"""Dashboard benchmark: each page's server time (median, p95) at each ledger size, for this tree and a tree before.

Starts its own Kafka and ClickHouse (ports from --port-base, below the ephemeral range; data under
.gpuledger/bench-ui), applies this tree's migrations to a database of its own (``bench_ui``), then for each
size in --sizes fills the ledger cumulatively inside ClickHouse (30 days back from now, 5 orgs, 7 teams,
11 projects, 3 models, 50 keys, 16 GPUs on 4 nodes; a third each API lines, GPU token shares and idle; API
lines spread over every org, team and project, each GPU's lines over 3 payers, as a GPU serves a few teams)
with a tenth as many usage events, brings the rollups up to date with one incremental pass (none runs while the
requests are timed), and times every page --requests times through the app in-process (Starlette's test client:
no network, the time is the server's), as an admin, over this month so far.

--before COMMIT also times the same pages with the code at COMMIT (checked out in a temporary git worktree,
removed afterwards) against the same data: the migrations since are additions, so one database serves both.
Each tree is timed in a subprocess whose import path starts with that tree. Not a timed test.

Usage: python tests/bench/ui_bench.py [--sizes 1000000,10000000] [--requests 20] [--before cf2310e]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["/", "/drill", "/drill?org=research&team=team1&project=p1&model=claude", "/lines?org=research", "/budgets", "/gpus", "/models"]
DB = "bench_ui"
LEDGER_FILL = """
INSERT INTO {db}.ledger (line_id, kind, event_time, window_seconds, org, team, project, cost_centre, model, key_id, event_id,
    node, gpu_uuid, price_id, prompt_tokens, cached_prompt_tokens, completion_tokens, window_tokens, share_tokens, gpu_seconds,
    utilization_pct, cost, currency, version, basis, idle_policy, gpu_model)
SELECT concat('bench:', toString(number)), ['api', 'gpu', 'idle'][number % 3 + 1],
    toStartOfMinute(now64(6)) - toIntervalSecond(60 * (intDiv(number, 300) % (30 * 1440))), 60,
    ['research', 'support', 'search', 'finance', 'platform'][if(number % 3 = 0, number, payer) % 5 + 1],
    concat('team', toString(if(number % 3 = 0, number, payer) % 7)), concat('p', toString(if(number % 3 = 0, number, payer) % 11)), '',
    ['gpt-4o-mini', 'llama-3.1-8b-instruct', 'claude'][number % 3 + 1],
    concat('key', toString(number % 50)), concat('ev', toString(number)), concat('node-', toString(number % 4)),
    concat('GPU-', toString(number % 16)), 'bench@2026', number % 1000, 0, number % 300, 1300, number % 1300, 60,
    number % 100, toDecimal128(number % 1000, 9) / 100000, 'USD', 1,
    ['', 'tokens', 'remainder'][number % 3 + 1], 'workload', 'NVIDIA H100 80GB HBM3'
FROM (SELECT number, (number % 16) * 3 + intDiv(number, 48) % 3 AS payer FROM numbers({offset}, {count}))
"""
USAGE_FILL = """
INSERT INTO {db}.usage_events (event_id, request_start, event_time, key_id, model, backend, prompt_tokens, completion_tokens,
    latency_ms, status, org, team, project, priced_as, cost, api_equivalent_cost)
SELECT concat('ev', toString(number * 10)), toStartOfMinute(now64(6)) - toIntervalSecond(60 * (intDiv(number * 10, 300) % (30 * 1440))) AS t, t,
    concat('key', toString(number % 50)), ['gpt-4o-mini', 'llama-3.1-8b-instruct', 'claude'][number % 3 + 1], 'bench', number % 1000,
    number % 300, 100, 'ok', ['research', 'support', 'search', 'finance', 'platform'][number % 5 + 1], concat('team', toString(number % 7)),
    concat('p', toString(number % 11)), if(number % 3 = 1, 'gpu', 'api'), toDecimal128(number % 1000, 9) / 100000,
    toDecimal128(number % 900, 9) / 100000
FROM numbers({offset}, {count})
"""


def measure(tree: Path, requests: int) -> dict[str, list[float]]:
    """Every page's server times in ms, with the code of ``tree`` (run in a subprocess importing from it)."""
    run = subprocess.run([sys.executable, __file__, "--measure", str(requests)], cwd=tree, check=True, capture_output=True, text=True)
    return json.loads(run.stdout.splitlines()[-1])


def _measure_here(requests: int) -> None:
    """(Subprocess) time the pages with the code of the current directory's tree; prints JSON."""
    sys.path.insert(0, str(Path.cwd()))
    from starlette.testclient import TestClient

    from gpuledger.settings import Settings, UISettings
    from gpuledger.ui.app import create_app

    base = Settings()
    settings = base.model_copy(
        update={"clickhouse": base.clickhouse.model_copy(update={"database": DB}), "ui": UISettings(anonymous="admin")}
    )
    out: dict[str, list[float]] = {}
    with TestClient(create_app(settings)) as client:
        for page in PAGES:
            assert client.get(page).status_code == 200, page  # warm-up (and the page works)
            times = []
            for _ in range(requests):
                start = time.perf_counter()
                response = client.get(page)
                times.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200, page
            out[page] = times
    print(json.dumps(out))


def p95(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000", help="ledger lines at each step (cumulative fill)")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--before", default="", help="also time the pages with the code at this commit")
    parser.add_argument("--port-base", type=int, default=28400)
    parser.add_argument("--measure", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        _measure_here(args.measure)
        return
    sys.path.insert(0, str(ROOT))
    import os

    from rich.console import Console
    from rich.table import Table

    from gpuledger.clickhouse import connect
    from gpuledger.kafka import ensure_topics
    from gpuledger.migrate import apply_migrations
    from gpuledger.settings import Settings, StackSettings
    from gpuledger.stack import local
    from streams.store.rollups import refresh_rollups

    console = Console(width=160)
    stack = StackSettings(
        data_dir=ROOT / ".gpuledger" / "bench-ui",
        kafka_port=args.port_base + 92,
        kafka_controller_port=args.port_base + 93,
        clickhouse_http_port=args.port_base + 23,
        clickhouse_tcp_port=args.port_base,
        clickhouse_max_memory_bytes=8_000_000_000,
    )
    with console.status("starting the benchmark Kafka and ClickHouse..."):
        local.down(stack)
        local.up(stack)
    settings = Settings(stack=stack).with_stack_endpoints()
    settings = settings.model_copy(update={"clickhouse": settings.clickhouse.model_copy(update={"database": DB})})
    os.environ.update(
        {"GPULEDGER_CLICKHOUSE__URL": settings.clickhouse.url, "GPULEDGER_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers}
    )
    import asyncio

    asyncio.run(ensure_topics(settings))
    connect(settings.clickhouse, database=None).command(f"DROP DATABASE IF EXISTS {DB}")
    apply_migrations(settings)
    client = connect(settings.clickhouse)
    trees = {"after (this tree)": ROOT}
    scratch = tempfile.TemporaryDirectory(prefix="gpuledger-before-")
    if args.before:
        before = Path(scratch.name) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before], check=True, capture_output=True)
        trees = {f"before ({args.before})": before, **trees}
    results: dict[tuple[str, str], list[str]] = {}
    sizes = [int(s) for s in args.sizes.split(",")]
    filled = 0
    try:
        for size in sizes:
            began = time.monotonic()
            with console.status(f"filling the ledger to {size:,} lines..."):
                client.command(LEDGER_FILL.format(db=DB, offset=filled, count=size - filled), settings={"max_execution_time": 0})
                client.command(
                    USAGE_FILL.format(db=DB, offset=filled // 10, count=(size - filled) // 10), settings={"max_execution_time": 0}
                )
                client.command(f"OPTIMIZE TABLE {DB}.ledger FINAL", settings={"max_execution_time": 0})
                refresh_rollups(client)  # one incremental pass after each fill, none while the pages are timed
                filled = size
            console.print(f"{size:,} ledger lines: filled, optimized and rolled up in {time.monotonic() - began:.0f} s")
            for label, tree in trees.items():
                with console.status(f"{size:,} lines: timing the pages, {label}..."):
                    for page, times in measure(tree, args.requests).items():
                        results.setdefault((label, page), []).append(f"{statistics.median(times):.0f} / {p95(times):.0f}")
                        console.print(f"{size:,} lines, {label}, {page}: median {statistics.median(times):.0f} ms, p95 {p95(times):.0f} ms")
    finally:
        if args.before:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False, capture_output=True)
        scratch.cleanup()
        local.down(stack)
    table = Table(title=f"server time per page, median / p95 ms of {args.requests} requests (admin, this month so far)")
    table.add_column("code")
    table.add_column("page")
    for size in sizes:
        table.add_column(f"{size:,} lines", justify="right")
    for (label, page), cells in results.items():
        table.add_row(label, page, *cells)
    console.print(table)


if __name__ == "__main__":
    main()
