"""Alert-latency benchmark: from the usage event whose ledger line crosses a budget threshold to the
(local, Slack-speaking) webhook server receiving the message, under 5,000 usage events/s of background load.

Per run, on its own local stack (the pipeline benchmark's ports), with one real worker process and one
real `gpuledger notifier run` process:
- 20 teams each get a daily budget of 30.00 USD with thresholds 10, 20, ..., 100 %;
- each crossing event costs exactly 3.00 USD (one threshold) and is timestamped two hours ago, so only
  threshold alerts are due (no forecast, no spike);
- baseline phase: crossings with no other traffic; loaded phase: crossings while a paced producer
  sends --rate background usage events/s (the pipeline benchmark's mix of API and GPU-hosted models).
Two latencies per crossing: from publishing the event (includes ingestion), and from the moment its
row was stored in ClickHouse (``usage_events.ingested_at``: the ledger line is written in the same
batch). Medians of the runs' p50 and p99 are printed, with the loaded/baseline ratio.

Usage: .venv/bin/python tests/bench/alert_bench.py [--runs 3] [--seconds 40] [--rate 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gpuledger.clickhouse import connect  # noqa: E402
from gpuledger.commands.budgets import save  # noqa: E402
from gpuledger.commands.reference_import import import_orgs, import_prices  # noqa: E402
from gpuledger.commands.reference_import import publish as publish_table  # noqa: E402
from gpuledger.kafka import new_producer  # noqa: E402
from gpuledger.settings import Settings  # noqa: E402
from gpuledger.stack import local  # noqa: E402
from schemas import InferenceUsage, OrgDirectory, codec_for  # noqa: E402
from schemas.keys import org_key  # noqa: E402
from streams.budgets.definitions import BudgetSpec  # noqa: E402
from tests.bench.pipeline_bench import STACK, event  # noqa: E402
from tests.budgets.conftest import noon_zone  # noqa: E402
from tests.notifier.fake_slack import FakeSlack  # noqa: E402
from tests.support import ROOT as REPO  # noqa: E402
from tests.support import WorkerProcess, isolated, settings_env  # noqa: E402

DEMO = REPO / "gpuledger" / "data" / "demo"
TEAMS = 20
STEPS = 10  # thresholds 10..100 %, one 3.00 USD event each
HEADLINE = re.compile(r"Budget (\d+)% threshold reached: benchorg/(t\d+) ")


def crossing(team: int, step: int, run: str) -> InferenceUsage:
    at = datetime.now(UTC) - timedelta(hours=2)
    return InferenceUsage(
        event_id=f"cross-{run}-{team}-{step}",
        request_start=at,
        request_end=at,
        key_id=f"bench-key-{team}",
        model="claude-sonnet-4",
        backend="anthropic",
        prompt_tokens=1_000_000,
        completion_tokens=0,
        latency_ms=1.0,
        status="ok",
    )


async def drive(settings: Settings, run: str, crossings: list[tuple[int, int]], seconds: float, rate: int) -> dict[str, float]:
    """Send the crossings evenly over ``seconds`` (with ``rate`` background events/s when rate > 0); returns send times."""
    producer = new_producer(settings.kafka, linger_ms=5)
    encode = codec_for(InferenceUsage).encode
    topic = settings.topics.inference_usage
    sent: dict[str, float] = {}
    await producer.start()
    try:
        started = time.monotonic()
        gap = seconds / len(crossings)
        n = 0
        for i, (team, step) in enumerate(crossings):
            due = started + i * gap
            while rate and n < (due - started) * rate:  # background load up to this crossing's time
                e = event(n, datetime.now(UTC), f"bg{run}")
                await producer.send(topic, encode(e), key=e.event_id.encode())
                n += 1
                if n % 100 == 0 and (ahead := started + n / rate - time.monotonic()) > 0:
                    await asyncio.sleep(ahead)
            if (ahead := due - time.monotonic()) > 0:
                await asyncio.sleep(ahead)
            c = crossing(team, step, run)
            await producer.send_and_wait(topic, encode(c), key=c.event_id.encode())
            sent[f"{team}/{(step + 1) * 10}"] = time.time()
        await producer.flush()
        return sent | {"_background": n / max(time.monotonic() - started, 1e-9)}
    finally:
        await producer.stop()


def received(slack: FakeSlack, hook: str, offset: float) -> dict[str, float]:
    """Wall-clock receive time of each threshold message, keyed team/pct."""
    times = [a.at + offset for a in slack.attempts_for(hook) if a.status == 200]
    out = {}
    for message, at in zip(slack.messages(hook), times, strict=True):
        m = HEADLINE.match(message["blocks"][0]["text"]["text"])
        if m:
            out[f"{int(m[2][1:])}/{m[1]}"] = at
    return out


def stored_at(settings: Settings, run: str) -> dict[str, float]:
    rows = (
        connect(settings.clickhouse)
        .query(
            "SELECT event_id, toUnixTimestamp64Milli(ingested_at) FROM usage_events FINAL WHERE event_id LIKE {p:String}",
            parameters={"p": f"cross-{run}-%"},
        )
        .result_rows
    )
    out = {}
    for event_id, ms in rows:
        _, _, team, step = event_id.split("-")
        out[f"{team}/{(int(step) + 1) * 10}"] = ms / 1000
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def one_run(base: Settings, run: int, seconds: float, rate: int, workdir: Path) -> dict[str, float]:
    tag = f"{run}{uuid.uuid4().hex[:4]}"
    settings = isolated(base, f"alert{tag}")
    asyncio.run(import_orgs(settings, DEMO / "orgs.yaml"))
    asyncio.run(import_prices(settings, DEMO / "prices.yaml"))
    encode = codec_for(OrgDirectory).encode
    orgs = [OrgDirectory(kind="api_key", key=f"bench-key-{t}", org="benchorg", team=f"t{t}") for t in range(TEAMS)]
    asyncio.run(publish_table(settings, "orgs", [(org_key(o.kind, o.key), encode(o)) for o in orgs]))
    zone = noon_zone()
    asyncio.run(
        save(
            settings,
            [
                BudgetSpec(
                    id=f"bench-{t}",
                    org="benchorg",
                    team=f"t{t}",
                    period="day",
                    timezone=zone,
                    amount=30,  # type: ignore[arg-type]
                    thresholds=list(range(10, 101, 10)),
                )
                for t in range(TEAMS)
            ],
        )
    )
    offset = time.time() - time.monotonic()
    results: dict[str, float] = {}
    with FakeSlack() as slack:
        hook = slack.new_hook("bench")
        config = workdir / f"notifier-{tag}.yaml"
        config.write_text(
            f"notifier:\n  group_id: n-{tag}\n  state_dir: {workdir / tag}\n  default: {{name: bench, url: '{hook}'}}\n"
        )  # topics from the env
        env = {**os.environ, **settings_env(settings, workdir / tag), "GPULEDGER_LOG_LEVEL": "warning"}
        env.pop("GPULEDGER_CONFIG", None)
        notifier = subprocess.Popen(
            [sys.executable, "-m", "gpuledger.commands.cli", "--config", str(config), "notifier", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=REPO,
        )
        worker = WorkerProcess(settings, workdir / f"worker-{tag}").start()
        try:
            time.sleep(8)  # worker joined, first evaluation done
            phases = {
                "baseline": ([(t, 0) for t in range(TEAMS)], 10.0, 0),
                "loaded": ([(t, s) for s in range(1, STEPS) for t in range(TEAMS)], seconds, rate),
            }
            for phase, (crossings, span, load) in phases.items():
                sent = asyncio.run(drive(settings, tag, crossings, span, load))
                background = sent.pop("_background")
                deadline = time.monotonic() + 120
                while len(set(sent) - set(received(slack, hook, offset))) and time.monotonic() < deadline:
                    worker.assert_alive()
                    time.sleep(0.5)
                got, stored = received(slack, hook, offset), stored_at(settings, tag)
                missing = set(sent) - set(got)
                if missing:
                    raise RuntimeError(f"{phase}: {len(missing)} alerts never arrived, e.g. {sorted(missing)[:5]}")
                from_send = [got[k] - sent[k] for k in sent]
                from_ledger = [got[k] - stored[k] for k in sent]
                results |= {
                    f"{phase}_send_p50": statistics.median(from_send),
                    f"{phase}_send_p99": percentile(from_send, 0.99),
                    f"{phase}_ledger_p50": statistics.median(from_ledger),
                    f"{phase}_ledger_p99": percentile(from_ledger, 0.99),
                    f"{phase}_crossings": len(sent),
                    f"{phase}_background_rate": background,
                }
            duplicates = len(slack.messages(hook)) - len(received(slack, hook, offset))
            results["extra_messages"] = duplicates + len(slack.messages(hook)) - TEAMS * STEPS
        finally:
            worker.stop()
            notifier.terminate()
            notifier.wait(20)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=40.0, help="length of the loaded phase")
    parser.add_argument("--rate", type=int, default=5000, help="background usage events/s during the loaded phase")
    args = parser.parse_args()
    console = Console()
    with console.status("starting the benchmark stack..."):
        local.up(STACK)
    base = Settings(stack=STACK).with_stack_endpoints()
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for run in range(1, args.runs + 1):
                with console.status(
                    f"run {run}/{args.runs}: {TEAMS * STEPS} crossings, {args.rate}/s background for {args.seconds:.0f} s..."
                ):
                    results.append(one_run(base, run, args.seconds, args.rate, Path(tmp)))
                console.print(f"run {run}: " + ", ".join(f"{k}={v:,.2f}" for k, v in results[-1].items()))
    finally:
        local.down(STACK)
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    table = Table(title=f"alert latency: medians of {args.runs} runs ({int(med['loaded_crossings'])} loaded crossings per run)")
    for column, justify in (
        ("figure", "left"),
        ("baseline (idle)", "right"),
        ("under load", "right"),
        ("ratio", "right"),
        ("target", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for label, key, target in (
        ("event sent -> Slack, p50 s", "send_p50", ""),
        ("event sent -> Slack, p99 s", "send_p99", "<= 5"),
        ("ledger line stored -> Slack, p50 s", "ledger_p50", ""),
        ("ledger line stored -> Slack, p99 s", "ledger_p99", "<= 5"),
    ):
        idle, loaded = med[f"baseline_{key}"], med[f"loaded_{key}"]
        table.add_row(label, f"{idle:.2f}", f"{loaded:.2f}", f"{loaded / idle:.1f}x" if idle else "-", target)
    table.add_row("background load achieved, events/s", "0", f"{med['loaded_background_rate']:,.0f}", "", f"{args.rate:,}")
    table.add_row("messages beyond one per crossing", "", f"{med['extra_messages']:.0f}", "", "0")
    console.print(table)


if __name__ == "__main__":
    main()
