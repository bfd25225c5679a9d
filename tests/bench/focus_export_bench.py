"""FOCUS export benchmark: peak memory and speed of `gpuledger export focus` on a large hand-made ledger.

On its own local stack (ClickHouse only is used; ports from --port-base, default 26500), per size: the ledger is
filled server-side (tests/focus_fill.py: windows of an API line, two token shares and an idle line), then the real
CLI exports it to CSV and to Parquet in a fresh process each; the figure is that process's peak RSS (the kernel's
accounting) and lines per second, next to the same export of 10 lines (the process's fixed cost).

Usage: .venv/bin/python tests/bench/focus_export_bench.py [--lines 200000 1000000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gpuledger.clickhouse import connect  # noqa: E402
from gpuledger.settings import Settings, StackSettings  # noqa: E402
from gpuledger.stack import local  # noqa: E402
from tests.focus_fill import BIG_RANGE, fill_ledger, peak_rss_mib  # noqa: E402
from tests.support import isolated, settings_env  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, nargs="+", default=[200_000])
    parser.add_argument("--port-base", type=int, default=26500)
    args = parser.parse_args()
    base = args.port_base
    stack = StackSettings(
        data_dir=ROOT / ".gpuledger" / f"focus-bench-{base}",
        kafka_port=base + 92,
        kafka_controller_port=base + 93,
        clickhouse_http_port=base + 123,
        clickhouse_tcp_port=base,
    )
    console = Console()
    with console.status("starting the benchmark stack..."):
        local.up(stack)
    table = Table(title="gpuledger export focus: peak RSS of the exporting process and speed")
    for column in ("ledger lines", "format", "peak RSS (MiB)", "lines/s"):
        table.add_column(column, justify="right")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for lines in [10, *args.lines]:
                settings = isolated(Settings(stack=stack).with_stack_endpoints(), f"focus_bench_{lines}")
                client = connect(settings.clickhouse)
                client.command("TRUNCATE TABLE ledger")
                fill_ledger(client, lines)
                env = {**os.environ, **settings_env(settings, Path(tmp))}
                for fmt in ("csv", "parquet"):
                    started = time.monotonic()
                    rss = peak_rss_mib(env, *BIG_RANGE, "--format", fmt, "--out", str(Path(tmp) / f"focus.{fmt}"))
                    took = time.monotonic() - started
                    table.add_row(f"{lines:,}", fmt, str(rss), f"{lines / took:,.0f}")
                    console.print(f"{lines:,} lines, {fmt}: {rss} MiB peak, {took:.1f} s")
    finally:
        local.down(stack)
    console.print(table)


if __name__ == "__main__":
    main()
