"""Collector overhead benchmark (not collected by pytest): CPU and RSS of the real agent process.

Runs ``python -m collectors.cli --source simulated --gpus 8 --interval 1`` for N seconds against
its own Kafka (default), measures the process's CPU time (utime+stime from /proc) after a
warm-up and its RSS, and prints a table. Targets: < 1 % of one core, < 60 MB RSS.

    .venv/bin/python -m tests.collectors.bench_collector --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from gpuledger.kafka import ensure_topics
from gpuledger.settings import Settings, StackSettings
from gpuledger.stack import kafka

ROOT = Path(__file__).resolve().parents[2]
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def memory_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def metric(port: int, name: str) -> float:
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--kafka", default="own", help="'own' (start a broker on 27192), 'none' (unreachable: spool path), or host:port")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="collector-bench-"))
    stack = StackSettings(data_dir=work / "stack", kafka_port=27192, kafka_controller_port=27193)
    if args.kafka == "own":
        kafka.start(stack)
        settings = Settings(stack=stack).with_stack_endpoints()
        asyncio.run(ensure_topics(settings))
        bootstrap = settings.kafka.bootstrap_servers
    elif args.kafka == "none":
        bootstrap = f"127.0.0.1:{free_port()}"
    else:
        bootstrap = args.kafka
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULEDGER_")}
    env.update({"GPULEDGER_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "GPULEDGER_LOG_FORMAT": "json", "GPULEDGER_LOG_LEVEL": "warning"})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collectors.cli",
            "--source",
            "simulated",
            "--gpus",
            str(args.gpus),
            "--interval",
            str(args.interval),
            "--spool-dir",
            str(work / "spool"),
            "--metrics-port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(work / "collector.log").open("wb"),
    )
    try:
        time.sleep(args.warmup)
        cpu0, t0, samples0 = cpu_seconds(proc.pid), time.monotonic(), metric(port, "gpuledger_collector_samples_total")
        rss_max = 0
        while time.monotonic() - t0 < args.seconds:
            time.sleep(1.0)
            rss_max = max(rss_max, memory_kb(proc.pid)["VmRSS"])
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        mem = memory_kb(proc.pid)
        samples = metric(port, "gpuledger_collector_samples_total") - samples0
        published = metric(port, "gpuledger_collector_published_total")
        spooled = metric(port, "gpuledger_collector_spooled_total")
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        if args.kafka == "own":
            kafka.managed(stack).stop()

    core_pct = 100 * (cpu1 - cpu0) / (t1 - t0)
    table = Table(title=f"gpuledger collector: {args.gpus} simulated GPUs at {args.interval:g} s for {t1 - t0:.0f} s (Kafka: {args.kafka})")
    for col in ("figure", "value", "target"):
        table.add_column(col)
    table.add_row("CPU time (measured window)", f"{cpu1 - cpu0:.2f} s", "")
    table.add_row("CPU, % of one core", f"{core_pct:.2f} %", "< 1 %")
    table.add_row("RSS at end", f"{mem['VmRSS'] / 1024:.1f} MB", "< 60 MB")
    table.add_row("RSS max (sampled) / peak (VmHWM)", f"{rss_max / 1024:.1f} / {mem['VmHWM'] / 1024:.1f} MB", "")
    table.add_row("samples taken in window", f"{samples:.0f}", f"{args.gpus * (t1 - t0) / args.interval:.0f} expected")
    table.add_row("published / spooled (whole run)", f"{published:.0f} / {spooled:.0f}", "")
    table.add_row("exit code after SIGTERM", str(proc.returncode), "0")
    Console().print(table)


if __name__ == "__main__":
    main()
