"""Pipeline benchmark: usage events per second through one worker into ClickHouse, and freshness.

Runs on its own local stack (ports 27xxx, below the ephemeral range), several runs, and prints medians:
- baselines, measured in the same run on the same messages: a bare aiokafka consumer reading
  the topic (no decode, no storage), and the bare decode rate, the worker's own decoder
  (``codec_for(InferenceUsage).decode``) over the values it read, in one process, no Kafka;
  the worker's figure is given as a ratio to both;
- CPU per event: the worker process's CPU time (all its threads, from /proc) while it drains the
  backlog, against the bare decoder's CPU time per event; on a machine shared with other work
  this ratio is steadier than the events/s ratio, since both sides count only their own CPU;
- throughput: a backlog of N events published first, then timed from the worker's
  first stored row to the last (start-up excluded);
- freshness: events published at a steady rate with event time = send time; the lag
  is ClickHouse's insert time (``ingested_at``) minus event time, median and p99.

Usage: .venv/bin/python tests/bench/pipeline_bench.py [--runs 3] [--events 60000] [--rate 2000] [--port-base 27000]
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
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gpuledger.clickhouse import connect  # noqa: E402
from gpuledger.commands.reference_import import import_orgs, import_prices  # noqa: E402
from gpuledger.commands.simulate import CALLERS, DEPLOYMENTS  # noqa: E402
from gpuledger.kafka import client_options, new_producer  # noqa: E402
from gpuledger.settings import Settings, StackSettings  # noqa: E402
from gpuledger.stack import local  # noqa: E402
from schemas import InferenceUsage, codec_for  # noqa: E402
from tests.support import WorkerProcess, isolated  # noqa: E402

DEMO = ROOT / "gpuledger" / "data" / "demo"
MODELS = ["gpt-4o-mini", "claude-sonnet-4", "llama-3.1-8b-instruct", "llama-3.1-70b-instruct"]


def event(n: int, when: datetime, run: str) -> InferenceUsage:
    model = MODELS[n % len(MODELS)]
    gpus = DEPLOYMENTS[model][n % len(DEPLOYMENTS[model])] if model in DEPLOYMENTS else ()
    return InferenceUsage(
        event_id=f"bench-{run}-{n}",
        request_start=when - timedelta(milliseconds=400),
        request_end=when,
        key_id=CALLERS[n % len(CALLERS)].key_id,
        model=model,
        backend="vllm" if gpus else "openai",
        gpu_uuids=[g.uuid for g in gpus],
        node=gpus[0].node if gpus else None,
        prompt_tokens=500 + n % 700,
        completion_tokens=100 + n % 300,
        cached_prompt_tokens=n % 200,
        latency_ms=400.0,
        status="ok",
        endpoint="chat.completions",
    )


async def publish(settings: Settings, events: int, run: str, *, when: datetime | None = None, rate: float | None = None) -> None:
    """Send ``events`` usage events; with ``rate``, paced and stamped with the send time (for freshness)."""
    producer = new_producer(settings.kafka)
    encode = codec_for(InferenceUsage).encode
    await producer.start()
    try:
        started = time.monotonic()
        for n in range(events):
            if rate and n % 50 == 0 and (ahead := started + n / rate - time.monotonic()) > 0:
                await asyncio.sleep(ahead)
            e = event(n, when or datetime.now(UTC) - timedelta(seconds=0 if rate else n % 600), run)
            await producer.send(settings.topics.inference_usage, key=e.event_id.encode(), value=encode(e))
        await producer.flush()
    finally:
        await producer.stop()


async def bare_consume(settings: Settings, expected: int) -> tuple[float, list[bytes]]:
    consumer = AIOKafkaConsumer(
        settings.topics.inference_usage,
        group_id=f"baseline-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        **client_options(settings.kafka),
    )
    await consumer.start()
    try:
        values: list[bytes] = []
        started = time.monotonic()
        while len(values) < expected:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            values.extend(record.value for records in batch.values() for record in records)
        return expected / (time.monotonic() - started), values
    finally:
        await consumer.stop()


def general_decode(value: bytes) -> InferenceUsage:
    """The decoder before the hot path (fastavro's logical types, the dataclass's ``__init__``): a fixed yardstick across trees."""
    return InferenceUsage(**codec_for(InferenceUsage).decode_dict(value))


def bare_decode(values: list[bytes], decode: Callable[[bytes], object]) -> tuple[float, float]:
    """Events/s and CPU µs per event of ``decode`` over the same messages (best of 3 passes)."""
    best, best_cpu = float("inf"), float("inf")
    for _ in range(3):
        started, cpu = time.perf_counter(), time.process_time()
        for value in values:
            decode(value)
        best, best_cpu = min(best, time.perf_counter() - started), min(best_cpu, time.process_time() - cpu)
    return len(values) / best, best_cpu / len(values) * 1e6


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(base: Settings, run: int, events: int, rate: int, workdir: Path) -> dict[str, float]:
    settings = isolated(base, f"bench{run}_{uuid.uuid4().hex[:6]}")
    asyncio.run(import_orgs(settings, DEMO / "orgs.yaml"))
    asyncio.run(import_prices(settings, DEMO / "prices.yaml"))
    asyncio.run(publish(settings, events, f"t{run}"))
    baseline, values = asyncio.run(bare_consume(settings, events))
    decode_rate, decode_cpu = bare_decode(values, codec_for(InferenceUsage).decode)
    _, general_cpu = bare_decode(values, general_decode)
    client = connect(settings.clickhouse)
    stored = lambda: client.query("SELECT count() FROM usage_events").result_rows[0][0]  # noqa: E731
    worker = WorkerProcess(settings, workdir / f"run{run}").start()
    try:
        while stored() == 0:
            worker.assert_alive()
            time.sleep(0.05)
        assert worker.proc is not None
        first, cpu_at_first = time.monotonic(), cpu_seconds(worker.proc.pid)
        while (count := stored()) < events:
            worker.assert_alive()
            time.sleep(0.05)
        throughput = count / (time.monotonic() - first)
        worker_cpu = (cpu_seconds(worker.proc.pid) - cpu_at_first) / count * 1e6
        steady = rate * 15
        asyncio.run(publish(settings, steady, f"f{run}", rate=rate))
        while stored() < events + steady:
            time.sleep(0.2)
        lags = [
            r[0]
            for r in client.query(
                "SELECT dateDiff('millisecond', event_time, ingested_at) FROM usage_events WHERE event_id LIKE {p:String}",
                parameters={"p": f"bench-f{run}-%"},
            ).result_rows
        ]
    finally:
        worker.stop()
    lags.sort()
    return {
        "baseline": baseline,
        "decode": decode_rate,
        "throughput": throughput,
        "ratio": throughput / decode_rate,
        "worker_cpu_us": worker_cpu,
        "decode_cpu_us": decode_cpu,
        "cpu_ratio": decode_cpu / worker_cpu,
        "general_cpu_us": general_cpu,
        "general_cpu_ratio": general_cpu / worker_cpu,
        "fresh_p50": statistics.median(lags) / 1000,
        "fresh_p99": lags[int(len(lags) * 0.99) - 1] / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--rate", type=int, default=2000, help="steady publish rate for the freshness phase (events/s)")
    parser.add_argument("--port-base", type=int, default=27000, help="the stack's ports: base+92/+93 Kafka, base+123/+0 ClickHouse")
    args = parser.parse_args()
    stack = StackSettings(
        data_dir=ROOT / ".gpuledger" / f"bench-stack-{args.port_base}",
        kafka_port=args.port_base + 92,
        kafka_controller_port=args.port_base + 93,
        clickhouse_http_port=args.port_base + 123,
        clickhouse_tcp_port=args.port_base,
    )
    console = Console()
    with console.status("starting the benchmark stack..."):
        local.up(stack)
    base = Settings(stack=stack).with_stack_endpoints()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(1, args.runs + 1):
            with console.status(f"run {run}/{args.runs}: {args.events:,} events backlog, then {args.rate}/s for 15 s..."):
                results.append(one_run(base, run, args.events, args.rate, Path(tmp)))
            console.print(f"run {run}: " + ", ".join(f"{k}={v:,.2f}" for k, v in results[-1].items()))
    local.down(stack)
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    table = Table(title=f"pipeline benchmark: medians of {args.runs} runs, {args.events:,} usage events, one worker")
    table.add_column("figure")
    table.add_column("median", justify="right")
    table.add_column("target", justify="right")
    table.add_row("bare Kafka consume (baseline), events/s", f"{med['baseline']:,.0f}", "")
    table.add_row("worker into ClickHouse, events/s", f"{med['throughput']:,.0f}", ">= 5,000")
    table.add_row("worker / baseline", f"{med['throughput'] / med['baseline']:.2f}", "")
    table.add_row("bare decode of the same messages (worker's decoder), events/s", f"{med['decode']:,.0f}", "")
    table.add_row("worker / bare decode (median of the per-run ratios)", f"{med['ratio']:.2f}", ">= 0.5")
    table.add_row("worker CPU per event (all its threads), µs", f"{med['worker_cpu_us']:.1f}", "")
    table.add_row("bare decode CPU per event, µs", f"{med['decode_cpu_us']:.1f}", "")
    table.add_row("decode CPU / worker CPU per event (median of the per-run ratios)", f"{med['cpu_ratio']:.2f}", ">= 0.5")
    table.add_row("general decoder (logical types, dataclass init) CPU per event, µs", f"{med['general_cpu_us']:.1f}", "")
    table.add_row("general decode CPU / worker CPU per event", f"{med['general_cpu_ratio']:.2f}", "")
    table.add_row(f"freshness p50 at {args.rate}/s, s", f"{med['fresh_p50']:.2f}", "")
    table.add_row(f"freshness p99 at {args.rate}/s, s", f"{med['fresh_p99']:.2f}", "<= 2")
    console.print(table)


if __name__ == "__main__":
    main()
