"""A/B latency benchmark: this tree's gateway and another tree's, side by side, under the same load at the same time.

    .venv/bin/python -m tests.bench.gateway_ab_bench --other /path/to/other/checkout [--rounds 6] [--n 500] [--port-base 26400]

One Kafka, one fake vLLM backend, and two gateways (``python -m inference.gateway.cli`` run from each tree, so each runs
its own code) with the same config; rounds alternate direct / this / other, one client sending JSON and streamed
chat requests through the alias ``auto`` one at a time. Printed: medians over rounds of p50 / p99 and the latency
each gateway adds over the direct call, and each gateway's CPU per request. Interleaving both trees in every round
makes the comparison fair on a busy machine, where separate invocations are not (see README Benchmarks).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from gpuledger.kafka import ensure_topics
from gpuledger.settings import Settings, StackSettings
from gpuledger.stack import kafka as kafka_stack
from tests.inference.bench_gateway import (
    CHAT,
    ROOT,
    SECRET,
    cpu_seconds,
    http_request,
    pct,
    sequential,
    wait_healthy,
)


async def main(args: argparse.Namespace) -> None:
    stack = StackSettings(
        data_dir=ROOT / ".gpuledger" / f"bench-ab-{args.port_base}",
        kafka_port=args.port_base + 92,
        kafka_controller_port=args.port_base + 93,
    )
    shutil.rmtree(stack.data_dir, ignore_errors=True)
    stack.data_dir.mkdir(parents=True)
    kafka_stack.start(stack)
    settings = Settings(stack=stack).with_stack_endpoints()
    await ensure_topics(settings)
    ports = {"direct": args.port_base + 1, "this": args.port_base + 2, "other": args.port_base + 3}
    work = Path(tempfile.mkdtemp(prefix="gpuledger-ab-"))
    config = work / "gateway.yaml"
    config.write_text(
        json.dumps(
            {
                "backends": [{"name": "fake", "kind": "vllm", "base_url": f"http://127.0.0.1:{ports['direct']}/v1", "deployment": "bench"}],
                "models": [{"name": "m", "targets": [{"backend": "fake"}]}],
                "aliases": [{"name": "auto", "default": "m", "rules": [{"model": "m", "header": {"X-Tier": "large"}}]}],
                "keys": [{"id": "bench", "sha256": hashlib.sha256(SECRET.encode()).hexdigest(), "org": "bench"}],
            }
        )
    )
    base_env = {**os.environ, "GPULEDGER_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers, "GPULEDGER_LOG_LEVEL": "warning"}
    base_env.pop("GPULEDGER_CONFIG", None)

    def env(tree: Path) -> dict[str, str]:
        return {**base_env, "PYTHONPATH": str(tree)}

    trees = {"this": ROOT, "other": Path(args.other).resolve()}
    procs = {
        "direct": subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "tests.inference.bench_gateway:fake_app",
                "--port",
                str(ports["direct"]),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=ROOT,
            env=env(ROOT),
        )
    }
    for name, tree in trees.items():
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "inference.gateway.cli", "--config", str(config), "--port", str(ports[name])], cwd=tree, env=env(tree)
        )
    try:
        for name, proc in procs.items():
            wait_healthy(f"http://127.0.0.1:{ports[name]}", proc)
        chat = {**CHAT, "model": "auto"}
        figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            for mode, body in (("json", chat), ("stream", {**chat, "stream": True})):
                request = http_request("/v1/chat/completions", body)
                order = ["direct", "this", "other"] if round_ % 2 == 0 else ["other", "this", "direct"]
                for name in order:
                    before = cpu_seconds(procs[name].pid)
                    latencies = await sequential(ports[name], request, args.n)
                    cpu.setdefault((mode, name), []).append((cpu_seconds(procs[name].pid) - before) / len(latencies) * 1e6)
                    figures.setdefault((mode, name), []).append((pct(latencies, 0.5), pct(latencies, 0.99)))
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(10)
        kafka_stack.managed(stack).stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n1 client, sequential, {args.n} requests x {args.rounds} rounds, medians over rounds; this = {ROOT}, other = {trees['other']}")
    print(
        f"{'mode':7}| {'direct p50':>10} {'p99':>7} | {'this: added p50':>15} {'p99':>7} {'CPU/req':>8} | {'other: added p50':>16} {'p99':>7} {'CPU/req':>8}"
    )
    for mode in ("json", "stream"):
        d50, d99 = (statistics.median(v) for v in zip(*figures[(mode, "direct")], strict=True))
        cells = []
        for name in ("this", "other"):
            g50, g99 = (statistics.median(v) for v in zip(*figures[(mode, name)], strict=True))
            cells.append(f"{g50 - d50:13.2f}ms {g99 - d99:5.2f}ms {statistics.median(cpu[(mode, name)]):6.0f}µs")
        print(f"{mode:7}| {d50:8.2f}ms {d99:5.2f}ms | {cells[0]} | {cells[1]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other", required=True, help="another checkout of gpuledger (e.g. a git worktree at an older commit)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--port-base", type=int, default=26400)
    asyncio.run(main(parser.parse_args()))
