"""Dashboard benchmark: each page's server time (median, p95) over a ledger of --lines synthetic lines.

Against the ClickHouse of the current settings (``GPULEDGER_CLICKHOUSE__URL``; Kafka from
``GPULEDGER_KAFKA__BOOTSTRAP_SERVERS`` for the budgets page), in a database of its own (``bench_ui``,
dropped and re-created): the migrations, then --lines ledger lines generated inside ClickHouse
(30 days, 5 orgs, 7 teams, 11 projects, 3 models, 50 keys, 16 GPUs; a third each API, GPU token
shares and idle), then the rollups refreshed. Each page is requested --requests times through the
app in-process (Starlette's test client: no network, the time is the server's), as an admin, over
this month so far. Not a timed test.

Usage: python tests/bench/ui_bench.py [--lines 1000000] [--requests 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gpuledger.clickhouse import connect  # noqa: E402
from gpuledger.migrate import apply_migrations  # noqa: E402
from gpuledger.settings import Settings, UISettings  # noqa: E402
from gpuledger.ui.app import create_app  # noqa: E402
from streams.store import rollups  # noqa: E402

PAGES = ["/", "/drill", "/drill?org=research&team=team1&project=p1&model=claude", "/lines?org=research", "/budgets", "/gpus", "/models"]
FILL = """
INSERT INTO {db}.ledger (line_id, kind, event_time, window_seconds, org, team, project, cost_centre, model, key_id, event_id,
    node, gpu_uuid, price_id, prompt_tokens, cached_prompt_tokens, completion_tokens, window_tokens, share_tokens, gpu_seconds,
    utilization_pct, cost, currency, version, basis, idle_policy, gpu_model)
SELECT concat('bench:', toString(number)), ['api', 'gpu', 'idle'][number % 3 + 1],
    toStartOfMinute(now64(6)) - toIntervalSecond(60 * intDiv(number, 300) % (30 * 86400)), 60,
    ['research', 'support', 'search', 'finance', 'platform'][number % 5 + 1], concat('team', toString(number % 7)),
    concat('p', toString(number % 11)), '', ['gpt-4o-mini', 'llama-3.1-8b-instruct', 'claude'][number % 3 + 1],
    concat('key', toString(number % 50)), concat('ev', toString(number)), concat('node-', toString(number % 4)),
    concat('GPU-', toString(number % 16)), 'bench@2026', number % 1000, 0, number % 300, 1300, number % 1300, 60,
    number % 100, toDecimal128(number % 1000, 9) / 100000, 'USD', 1,
    ['', 'tokens', 'remainder'][number % 3 + 1], 'workload', 'NVIDIA H100 80GB HBM3'
FROM numbers({lines})
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    base = Settings()
    settings = base.model_copy(update={"clickhouse": base.clickhouse.model_copy(update={"database": "bench_ui"}),
                                       "ui": UISettings(anonymous="admin")})
    admin = connect(settings.clickhouse, database=None)
    admin.command("DROP DATABASE IF EXISTS bench_ui")
    apply_migrations(settings)
    began = time.monotonic()
    admin.command(FILL.format(db="bench_ui", lines=args.lines))
    rollups.maintain(connect(settings.clickhouse), "bench_ui")
    console = Console()
    console.print(f"{args.lines:,} ledger lines generated and rolled up in {time.monotonic() - began:.1f} s")
    table = Table("page", "median ms", "p95 ms", "max ms", title=f"server time per page, {args.lines:,} ledger lines, {args.requests} requests each")
    with TestClient(create_app(settings)) as client:
        for page in PAGES:
            assert client.get(page).status_code == 200, page  # warm-up (and the page works)
            times = []
            for _ in range(args.requests):
                start = time.perf_counter()
                response = client.get(page)
                times.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200, page
            times.sort()
            p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
            table.add_row(page, f"{statistics.median(times):.0f}", f"{p95:.0f}", f"{times[-1]:.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
