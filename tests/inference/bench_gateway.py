"""Benchmark: latency the gateway adds, and the vLLM middleware's per-request cost. Not a pytest module.

    .venv/bin/python -m tests.inference.bench_gateway [--rate 300] [--seconds 5] [--runs 3]

Starts its own Kafka (the gateway publishes every event for real), the fake vLLM and the
gateway (``python -m inference.gateway.cli``) as separate processes, then drives both the backend
directly and the gateway with the same open-loop load from 200 concurrent keep-alive
clients, alternating, so both columns see the same machine. Reports medians over runs of
p50/p99 latency, the difference, and the gateway's CPU time per request. The middleware is
measured in-process (ASGI calls, no sockets): wrapped minus bare app, events to Kafka included.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from gpuledger.kafka import ensure_topics
from gpuledger.sections.meter import MeterSettings
from gpuledger.settings import Settings, StackSettings
from gpuledger.stack import kafka as kafka_stack
from inference.vllm_meter.middleware import UsageMeteringMiddleware
from tests.inference.fake_vllm import FakeVllm

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-bench"
CHAT = {
    "model": "m",
    "max_tokens": 5,
    "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say five words about GPUs " * 8}],
}


def fake_app() -> Any:
    """uvicorn --factory entry point for the backend process."""
    return FakeVllm().app()


def http_request(path: str, body: dict[str, Any]) -> bytes:
    raw = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {SECRET}\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
    return head.encode() + raw


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (content-length or chunked); returns the status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return status
    length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    return status


async def sequential(port: int, request: bytes, n: int) -> list[float]:
    """One client, one request at a time: what the gateway adds when the CPU is not queueing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        writer.write(request)
        assert await read_response(reader) == 200
        latencies.append(time.perf_counter() - started)
    writer.close()
    return latencies


async def load(port: int, request: bytes, *, clients: int, rate: float, seconds: float) -> list[float]:
    """Open-loop load: each client waits an exponential gap (mean clients/rate) between requests."""
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(random.uniform(0, clients / rate))
        while time.perf_counter() < stop:
            started = time.perf_counter()
            writer.write(request)
            status = await read_response(reader)
            latencies.append(time.perf_counter() - started)
            assert status == 200, status
            await asyncio.sleep(random.expovariate(rate / clients))
        writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0


def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{url} exited"
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


async def middleware_cost(settings: Settings, n: int, reps: int) -> dict[str, float]:
    """µs per request the middleware adds (wrapped minus bare), including queuing and producing the event."""
    fake = FakeVllm()
    bare = fake.app()
    metered = UsageMeteringMiddleware(fake.app(), settings=settings, meter=MeterSettings())
    results: dict[str, float] = {}
    for mode, body in (("json", CHAT), ("stream", {**CHAT, "stream": True})):
        raw = json.dumps(body).encode()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"authorization", f"Bearer {SECRET}".encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2),
        }

        async def send(_: Any) -> None:
            return None

        async def run(app: Any, raw: bytes = raw, scope: dict[str, Any] = scope) -> float:  # bound now: B023
            started = time.perf_counter()
            for _ in range(n):
                sent = False

                async def receive() -> dict[str, Any]:
                    nonlocal sent
                    if sent:
                        await asyncio.Event().wait()
                    sent = True
                    return {"type": "http.request", "body": raw, "more_body": False}

                await app(dict(scope), receive, send)
            if app is metered:
                await metered.publisher._queue.join()  # the producing work counts too
            return (time.perf_counter() - started) / n

        await run(metered)  # warm up (and connect the producer)
        diffs = []
        for _ in range(reps):
            diffs.append(await run(metered) - await run(bare))
        results[mode] = statistics.median(diffs) * 1e6
    await metered.publisher.close()
    return results


async def main(args: argparse.Namespace) -> None:
    stack = StackSettings(
        data_dir=ROOT / ".gpuledger" / f"bench-inference-{args.port_base}",
        kafka_port=args.port_base + 92,
        kafka_controller_port=args.port_base + 93,
    )
    shutil.rmtree(stack.data_dir, ignore_errors=True)
    stack.data_dir.mkdir(parents=True)
    kafka_stack.start(stack)
    settings = Settings(stack=stack).with_stack_endpoints()
    await ensure_topics(settings)
    backend_port, gateway_port = args.port_base + 1, args.port_base + 2
    work = Path(tempfile.mkdtemp(prefix="gpuledger-bench-"))
    config = work / "gateway.yaml"
    config.write_text(
        json.dumps(
            {
                "gateway": {  # JSON is YAML
                    "backends": [
                        {"name": "fake", "kind": "vllm", "base_url": f"http://127.0.0.1:{backend_port}/v1", "deployment": "bench"}
                    ],
                    "models": [{"name": "m", "targets": [{"backend": "fake"}]}],
                    # --model auto goes through routing: a rule that does not match, then the default (the same config on older trees)
                    "aliases": [{"name": "auto", "default": "m", "rules": [{"model": "m", "header": {"X-Tier": "large"}}]}],
                    "keys": [{"id": "bench", "sha256": hashlib.sha256(SECRET.encode()).hexdigest(), "org": "bench"}],
                }
            }
        )
    )
    env = {
        **os.environ,
        "GPULEDGER_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "GPULEDGER_LOG_LEVEL": "warning",
    }
    env.pop("GPULEDGER_CONFIG", None)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "tests.inference.bench_gateway:fake_app",
                "--port",
                str(backend_port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=ROOT,
            env=env,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "inference.gateway.cli", "--config", str(config), "--port", str(gateway_port)], cwd=ROOT, env=env
        ),
    ]
    try:
        wait_healthy(f"http://127.0.0.1:{backend_port}", procs[0])
        wait_healthy(f"http://127.0.0.1:{gateway_port}", procs[1])
        rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
        cpu: dict[str, list[float]] = {}
        unloaded: dict[tuple[str, str], tuple[float, float]] = {}
        chat = {**CHAT, "model": args.model}
        for mode, body in (("json", chat), ("stream", {**chat, "stream": True})):
            for target, port in (("direct", backend_port), ("gateway", gateway_port)):
                latencies = await sequential(port, http_request("/v1/chat/completions", body), 1000)
                unloaded[(mode, target)] = (pct(latencies, 0.5), pct(latencies, 0.99))
        for run in range(args.runs):
            for mode, body in (("json", chat), ("stream", {**chat, "stream": True})):
                request = http_request("/v1/chat/completions", body)
                order = [("direct", backend_port), ("gateway", gateway_port)]
                for target, port in order if run % 2 == 0 else order[::-1]:
                    before = cpu_seconds(procs[1].pid)
                    latencies = await load(port, request, clients=args.clients, rate=args.rate, seconds=args.seconds)
                    if target == "gateway":
                        cpu.setdefault(mode, []).append((cpu_seconds(procs[1].pid) - before) / len(latencies) * 1e6)
                    rows.setdefault((mode, target), []).append((pct(latencies, 0.5), pct(latencies, 0.99)))
                    print(
                        f"run {run + 1} {mode:6} {target:7} n={len(latencies):5} p50={pct(latencies, 0.5):7.2f} ms p99={pct(latencies, 0.99):7.2f} ms",
                        flush=True,
                    )
        mw = await middleware_cost(settings, n=2000, reps=5)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        kafka_stack.managed(stack).stop()
        shutil.rmtree(work, ignore_errors=True)
    fast = all(importlib.util.find_spec(m) is not None for m in ("uvloop", "httptools"))
    print(
        f"\n{args.clients} clients, {args.rate:.0f} req/s offered, {args.seconds:.0f} s x {args.runs} runs, medians over runs ({os.cpu_count()} CPUs, "
        f"servers on {'uvloop + httptools' if fast else 'asyncio + h11'})"
    )
    print(f"{'mode':7}| {'direct p50':>10} {'p99':>8} | {'gateway p50':>11} {'p99':>8} | {'added p50':>9} {'p99':>8} | gateway CPU/req")
    for mode in ("json", "stream"):
        d50, d99 = (statistics.median(v) for v in zip(*rows[(mode, "direct")], strict=True))
        g50, g99 = (statistics.median(v) for v in zip(*rows[(mode, "gateway")], strict=True))
        print(
            f"{mode:7}| {d50:8.2f}ms {d99:6.2f}ms | {g50:9.2f}ms {g99:6.2f}ms | {g50 - d50:7.2f}ms {g99 - d99:6.2f}ms | {statistics.median(cpu[mode]):8.0f} µs"
        )
    for mode in ("json", "stream"):
        (d50, d99), (g50, g99) = unloaded[(mode, "direct")], unloaded[(mode, "gateway")]
        print(
            f"{mode:7}| {d50:8.2f}ms {d99:6.2f}ms | {g50:9.2f}ms {g99:6.2f}ms | {g50 - d50:7.2f}ms {g99 - d99:6.2f}ms | (1 client, sequential, 1000 requests)"
        )
    print(f"vLLM middleware cost per request (in-process, event to Kafka included): json {mw['json']:.0f} µs, stream {mw['stream']:.0f} µs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=float, default=300.0, help="offered requests per second, all clients together")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port-base", type=int, default=26000)
    parser.add_argument("--model", default="m", help="m: a model named directly; auto: an alias, through its routing rules")
    asyncio.run(main(parser.parse_args()))
