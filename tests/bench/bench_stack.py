"""What the ledger benchmarks share: their command line (sizes, runs) and a fresh database on their own ClickHouse."""

from __future__ import annotations

import argparse

from rich.console import Console

from gpuledger.clickhouse import connect
from gpuledger.migrate import apply_migrations
from gpuledger.settings import Settings, StackSettings
from gpuledger.stack import clickhouse, local


def arguments(description: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000,30000000", help="ledger lines at each step (cumulative fill)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--port-base", type=int, default=27500, help="ClickHouse TCP port; HTTP on --port-base + 23 (keep clear of others')"
    )
    return parser.parse_args()


def fresh_database(stack: StackSettings, database: str, console: Console) -> Settings:
    """Start the benchmark's ClickHouse (stopping a leftover one) and migrate an empty ``database`` on it."""
    with console.status("starting the benchmark ClickHouse..."):
        local.down(stack)
        clickhouse.start(stack)
    settings = Settings(stack=stack).with_stack_endpoints()
    settings = settings.model_copy(update={"clickhouse": settings.clickhouse.model_copy(update={"database": database})})
    connect(settings.clickhouse, database=None).command(f"DROP DATABASE IF EXISTS {database}")
    apply_migrations(settings)
    return settings
