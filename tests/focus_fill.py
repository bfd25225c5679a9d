"""A large hand-made ledger for the FOCUS export's memory test and benchmark, and the export's peak memory."""

from __future__ import annotations

import subprocess
import sys

from clickhouse_connect.driver.client import Client

from tests.support import ROOT

BIG_RANGE = ("--from", "2026-10-01", "--to", "2027-01-01")
# Windows of 4 lines (an API request, two token shares, the idle remainder) on 10 GPUs, one minute apart from
# 2026-10-01, written by ClickHouse itself (INSERT ... SELECT), so filling takes no client memory.
FILL = """
INSERT INTO ledger (line_id, kind, event_time, window_seconds, org, team, project, model, key_id, event_id, node, gpu_uuid,
                    price_id, prompt_tokens, completion_tokens, window_tokens, share_tokens, gpu_seconds, utilization_pct,
                    cost, currency, gpu_model, basis, idle_policy, version)
SELECT concat('line-', toString(number)), ['api', 'gpu', 'gpu', 'idle'][number % 4 + 1],
       toDateTime64('2026-10-01 00:00:00', 6, 'UTC') + toIntervalMinute(intDiv(number, 40)), 60,
       ['search', 'support', 'research'][number % 3 + 1], 'team', 'p', 'llama-3.1-8b-instruct', 'key', concat('ev-', toString(number)),
       'node-a', concat('GPU-', toString(intDiv(number, 4) % 10)), 'NVIDIA H100 80GB HBM3@2026-01-01T00:00:00+00:00',
       1000, 500, 4000, 2000, toDecimal128('60', 9), 75.0,
       toDecimal128(['0.000315', '0.0155625', '0.0155625', '0.010375'][number % 4 + 1], 9),
       'USD', 'NVIDIA H100 80GB HBM3', ['', 'tokens', 'tokens', 'remainder'][number % 4 + 1], 'node', 1
FROM numbers({lines:UInt64})
"""
# Runs the command as its only child and prints the child's peak RSS (the kernel's accounting), in MiB.
PEAK_RSS = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(done.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
sys.exit(done.returncode)
"""


def fill_ledger(client: Client, lines: int) -> None:
    client.command(FILL, parameters={"lines": lines})


def peak_rss_mib(env: dict[str, str], *args: str) -> int:
    """Run ``gpuledger export focus *args`` in a fresh process (settings from ``env``) and return its peak RSS."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "gpuledger.commands.cli", "export", "focus", *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.strip())
