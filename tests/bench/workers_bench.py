"""Scale-out benchmark: usage events per second into ClickHouse with 1, 2 and 3 worker processes.

Runs on its own local stack (ports from ``GPULEDGER_TEST_PORT_BASE`` + 600, default 26600; ``--cluster`` for 3 Kafka nodes and 2 ClickHouse shards), several
runs per worker count, and prints medians. Each run has a fresh namespace with eight partitions; the
backlog of N events is published first, then the workers are started; the clock starts once the group is stable
with all of them (what was stored while it formed is left out) and stops at the last stored row, so neither the
publisher nor the rebalances are timed. The bare consume rate of the same
topic (one aiokafka consumer, no decode, no storage) is measured in the same run, as a ceiling.

On a machine with fewer cores than workers plus engines, more workers only share the same CPUs:
the figures then show the cost of coordination, not a gain (see README, Scale-out).

Usage: .venv/bin/python tests/bench/workers_bench.py [--runs 3] [--events 40000] [--workers 1,2,3] [--cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gpuledger.clickhouse import connect  # noqa: E402
from gpuledger.commands.reference_import import import_orgs, import_prices  # noqa: E402
from gpuledger.kafka import client_options  # noqa: E402
from gpuledger.settings import Settings, StackSettings  # noqa: E402
from gpuledger.stack import local  # noqa: E402
from tests.bench.pipeline_bench import DEMO, bare_consume, publish  # noqa: E402
from tests.support import WorkerProcess, isolated, wait_until  # noqa: E402

PARTITIONS = 8
PORTS = int(os.environ.get("GPULEDGER_TEST_PORT_BASE", "26000")) + 600


def stack(cluster: bool) -> StackSettings:
    sizes = {"kafka_brokers": 3, "clickhouse_shards": 2} if cluster else {}
    return StackSettings(
        data_dir=ROOT / ".gpuledger" / f"scale-bench{'-cluster' if cluster else ''}",
        kafka_port=PORTS + 92,
        kafka_controller_port=PORTS + 93,
        clickhouse_http_port=PORTS + 23,
        clickhouse_tcp_port=PORTS,
        **sizes,
    )


async def group_members(settings: Settings) -> int:
    """Members of the worker group once it is Stable (0 while it rebalances)."""
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([settings.worker.app_id])
    except KafkaError:  # no coordinator for the group yet: nobody has joined
        return 0
    else:
        _error, _group, state, _kind, _protocol, members, *_ = response.groups[0]
        return len(members) if state == "Stable" else 0
    finally:
        await admin.close()


def one_run(base: Settings, workers: int, run: int, events: int, workdir: Path) -> dict[str, float]:
    settings = isolated(base, f"scale{workers}_{run}_{uuid.uuid4().hex[:6]}", partitions=PARTITIONS)
    asyncio.run(import_orgs(settings, DEMO / "orgs.yaml"))
    asyncio.run(import_prices(settings, DEMO / "prices.yaml"))
    client = connect(settings.clickhouse)
    stored = lambda: client.query("SELECT count() FROM usage_events").result_rows[0][0]  # noqa: E731
    asyncio.run(publish(settings, events, f"s{workers}-{run}"))  # the backlog first: the workers find it waiting
    procs = [WorkerProcess(settings, workdir / f"w{workers}-{run}-{i}").start() for i in range(workers)]
    try:
        wait_until(lambda: asyncio.run(group_members(settings)) == workers, 180, f"a stable group of {workers} workers")
        began, before = time.monotonic(), stored()  # what was stored while the group formed is left out
        if events - before < events // 2:
            raise SystemExit(f"{before:,} of {events:,} events were stored before the group of {workers} was stable: use more --events")
        while (count := stored()) < events:
            for proc in procs:
                proc.assert_alive()
            time.sleep(0.05)
        throughput = (count - before) / (time.monotonic() - began)
    finally:
        for proc in procs:
            proc.stop()
    baseline, _ = asyncio.run(bare_consume(settings, events))
    return {"baseline": baseline, "throughput": throughput}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--workers", default="1,2,3", help="comma-separated worker counts")
    parser.add_argument("--cluster", action="store_true", help="3 Kafka nodes (RF 3, min ISR 2) and 2 ClickHouse shards")
    args = parser.parse_args()
    console = Console()
    engines = stack(args.cluster)
    with console.status("starting the benchmark stack..."):
        local.up(engines)
    base = Settings(stack=engines).with_stack_endpoints()
    counts = [int(n) for n in args.workers.split(",")]
    results: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for run in range(1, args.runs + 1):  # worker counts interleaved, so a change in machine load hits them all
                for workers in counts:
                    with console.status(f"{workers} worker(s), run {run}/{args.runs}: {args.events:,} events..."):
                        results[workers].append(one_run(base, workers, run, args.events, Path(tmp)))
                    console.print(f"{workers} worker(s), run {run}: " + ", ".join(f"{k}={v:,.0f}" for k, v in results[workers][-1].items()))
    finally:
        local.down(engines)
    medians = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in results.items()}
    shape = "3 Kafka nodes, 2 ClickHouse shards" if args.cluster else "1 Kafka node, 1 ClickHouse"
    table = Table(title=f"scale-out: medians of {args.runs} runs, {args.events:,} usage events, {PARTITIONS} partitions, {shape}")
    for column in ("workers", "events/s", "vs 1 worker", "bare consume, events/s", "worker / bare"):
        table.add_column(column, justify="right")
    one = medians[counts[0]]["throughput"]
    for workers, med in medians.items():
        table.add_row(
            str(workers),
            f"{med['throughput']:,.0f}",
            f"{med['throughput'] / one:.2f}",
            f"{med['baseline']:,.0f}",
            f"{med['throughput'] / med['baseline']:.2f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
