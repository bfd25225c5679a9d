"""``gpuledger simulate``: realistic fleet traffic into Kafka, plus the ground truth it must produce.

A deterministic (seeded) fleet: two GPU nodes, self-hosted models on them, two paid
APIs, and orgs with different usage shapes (steady, ramping, bursty, small, and one
caller missing from the directory). GPU utilization follows the token load. The
expected ledger is computed here independently of the stream worker, by the cost
model's written rules (README), so end-to-end tests and the demo can check the
pipeline against it to the cent.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

from schemas import GpuProcess, GpuSample, InferenceUsage, OrgDirectory, Price

NANO = Decimal("0.000000001")
SAMPLE_SECONDS = 5


@dataclass(frozen=True)
class Gpu:
    node: str
    index: int
    model: str

    @property
    def uuid(self) -> str:
        digest = hashlib.sha1(f"{self.node}/{self.index}".encode()).hexdigest()
        return f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


@dataclass(frozen=True)
class Caller:
    key_id: str
    models: tuple[str, ...]
    per_minute: float
    shape: str  # steady | ramp | bursty


FLEET = [Gpu("gpu-node-a", i, "NVIDIA H100 80GB HBM3") for i in range(4)] + [Gpu("gpu-node-b", i, "NVIDIA L40S") for i in range(4)]
# Self-hosted deployments: model -> replicas, each a group of GPUs serving one request together (tensor parallel).
DEPLOYMENTS: dict[str, list[tuple[Gpu, ...]]] = {
    "llama-3.1-70b-instruct": [(FLEET[0], FLEET[1]), (FLEET[2], FLEET[3])],
    "llama-3.1-8b-instruct": [(g,) for g in FLEET[4:]],
}
CALLERS = [
    Caller("key-search-ranker", ("llama-3.1-8b-instruct",), 260, "steady"),
    Caller("key-support-bot", ("gpt-4o-mini", "gpt-4o-mini", "llama-3.1-70b-instruct"), 220, "ramp"),
    Caller("key-research-agents", ("claude-sonnet-4", "llama-3.1-70b-instruct"), 90, "bursty"),
    Caller("key-finance-ops", ("llama-3.1-8b-instruct", "gpt-4o-mini"), 25, "steady"),
    Caller("key-unregistered", ("gpt-4o-mini",), 8, "steady"),
]


@dataclass
class Fleet:
    usage: list[InferenceUsage] = field(default_factory=list)
    samples: list[GpuSample] = field(default_factory=list)


def _rate(caller: Caller, minute: int, minutes: int, rng: random.Random) -> int:
    base = caller.per_minute
    if caller.shape == "ramp":
        base *= 0.4 + 1.2 * minute / max(minutes - 1, 1)
    elif caller.shape == "bursty":
        base *= 4.0 if rng.random() < 0.15 else 0.3
    return max(0, int(rng.gauss(base, math.sqrt(base) + 1)))


def generate(seed: int, start: datetime, minutes: int, scale: float = 1.0) -> Fleet:
    """The same seed, start and length always produce the same events."""
    rng = random.Random(seed)
    fleet = Fleet()
    load: dict[tuple[str, int], int] = defaultdict(int)  # (gpu uuid, minute) -> tokens
    counter = 0
    for minute in range(minutes):
        minute_start = start + timedelta(minutes=minute)
        for caller in CALLERS:
            for _ in range(int(_rate(caller, minute, minutes, rng) * scale)):
                model = rng.choice(caller.models)
                prompt = int(rng.lognormvariate(6.2, 0.8)) + 1
                completion = int(rng.lognormvariate(5.0, 0.9)) + 1
                cached = int(prompt * rng.choice((0, 0, 0.5, 0.9)))
                end = minute_start + timedelta(microseconds=rng.randrange(60_000_000))
                latency = 50 + completion * rng.uniform(8, 25)
                gpus: tuple[Gpu, ...] = rng.choice(DEPLOYMENTS[model]) if model in DEPLOYMENTS else ()
                for gpu in gpus:
                    load[(gpu.uuid, minute)] += prompt + completion
                counter += 1
                fleet.usage.append(InferenceUsage(
                    event_id=f"sim-{seed}-{counter:08d}", request_start=end - timedelta(milliseconds=latency), request_end=end,
                    key_id=caller.key_id, model=model, backend="vllm" if gpus else ("openai" if model.startswith("gpt") else "anthropic"),
                    deployment=model if gpus else "", node=gpus[0].node if gpus else None, gpu_uuids=[g.uuid for g in gpus],
                    prompt_tokens=prompt, completion_tokens=completion, cached_prompt_tokens=cached,
                    ttft_ms=round(latency * rng.uniform(0.05, 0.2), 3), latency_ms=round(latency, 3), status="ok",
                    endpoint="chat.completions",
                ))
    for gpu in FLEET:
        for minute in range(minutes):
            busy = min(97.0, 6.0 + load[(gpu.uuid, minute)] / 900.0)
            for tick in range(60 // SAMPLE_SECONDS):
                begin = start + timedelta(minutes=minute, seconds=tick * SAMPLE_SECONDS)
                util = round(min(100.0, max(0.0, rng.gauss(busy, 3.0))), 1)
                fleet.samples.append(GpuSample(
                    sample_id=f"{gpu.node}/{gpu.uuid}/{int(begin.timestamp() * 1_000_000)}", node=gpu.node, gpu_uuid=gpu.uuid,
                    gpu_index=gpu.index, gpu_model=gpu.model, interval_start=begin, interval_end=begin + timedelta(seconds=SAMPLE_SECONDS),
                    utilization_pct=util, memory_utilization_pct=round(util * 0.6, 1), memory_used_bytes=40 * 2**30,
                    memory_total_bytes=80 * 2**30, power_watts=round(90 + 6 * util, 1), energy_joules=round((90 + 6 * util) * SAMPLE_SECONDS, 1),
                    sm_clock_mhz=1980, temperature_c=int(35 + util / 3),
                    processes=[GpuProcess(pid=4242, command="vllm", namespace="inference", pod=f"vllm-{gpu.node}-{gpu.index // 2}", gpu_memory_bytes=38 * 2**30)],
                ))
    return fleet


# ----- ground truth: the cost model's rules, written out independently of streams/ -----

def _price_at(prices: list[Price], kind: str, sku: str, when: datetime) -> Price | None:
    valid = [p for p in prices if p.kind == kind and p.sku == sku and p.effective_from <= when]
    return max(valid, key=lambda p: p.effective_from) if valid else None


def ground_truth(fleet: Fleet, orgs: list[OrgDirectory], prices: list[Price], window_seconds: int = 60, unassigned: str = "unassigned") -> dict[str, Any]:
    """Expected spend per org (api, gpu, idle, total) as decimal strings."""
    by_key = {(o.kind, o.key): o for o in orgs}
    totals: dict[str, dict[str, Decimal]] = defaultdict(lambda: {"api": Decimal(0), "gpu": Decimal(0), "idle": Decimal(0)})
    tokens: dict[tuple[str, datetime], dict[tuple[str, ...], int]] = defaultdict(lambda: defaultdict(int))

    def window_of(t: datetime) -> datetime:
        return datetime.fromtimestamp(int(t.timestamp()) // window_seconds * window_seconds, UTC)

    for u in fleet.usage:
        payer = by_key.get(("api_key", u.key_id))
        org = payer.org if payer else unassigned
        price = _price_at(prices, "token", u.model, u.request_end)
        if price is not None:
            cin = price.cached_input_per_mtok if price.cached_input_per_mtok is not None else price.input_per_mtok
            raw = (u.prompt_tokens - u.cached_prompt_tokens) * price.input_per_mtok + u.cached_prompt_tokens * cin + u.completion_tokens * price.output_per_mtok  # type: ignore[operator]
            totals[org]["api"] += (raw / Decimal(1_000_000)).quantize(NANO, ROUND_HALF_EVEN)
        else:
            group = (org, payer.team if payer else "", payer.project if payer else "", u.model)
            for gpu in u.gpu_uuids:
                tokens[(gpu, window_of(u.request_end))][group] += u.prompt_tokens + u.completion_tokens
    windows: dict[tuple[str, datetime], list[GpuSample]] = defaultdict(list)
    for s in fleet.samples:
        windows[(s.gpu_uuid, window_of(s.interval_start))].append(s)
    for (gpu, window), samples in windows.items():
        price = _price_at(prices, "gpu_hour", samples[0].gpu_model, window)
        owner = by_key.get(("node", samples[0].node))
        seconds = Decimal(sum(int((s.interval_end - s.interval_start).total_seconds() * 1_000_000) for s in samples)) / Decimal(1_000_000)
        seconds = min(seconds, Decimal(window_seconds))
        util = (sum(Decimal(repr(s.utilization_pct)) for s in samples) / len(samples)).quantize(Decimal("0.0001"), ROUND_HALF_EVEN)
        cost = (price.per_hour * seconds / Decimal(3600)).quantize(NANO, ROUND_HALF_EVEN)  # type: ignore[union-attr,operator]
        shares = tokens.get((gpu, window), {})
        total_tokens = sum(shares.values())
        allocated = Decimal(0)
        if total_tokens:
            busy = (cost * min(util, Decimal(100)) / Decimal(100)).quantize(NANO, ROUND_DOWN)
            for group, count in shares.items():
                share = (busy * count / total_tokens).quantize(NANO, ROUND_DOWN)
                totals[group[0]]["gpu"] += share
                allocated += share
        totals[owner.org if owner else unassigned]["idle"] += cost - allocated
    per_org = {org: {k: str(v) for k, v in {**t, "total": t["api"] + t["gpu"] + t["idle"]}.items()} for org, t in sorted(totals.items())}
    grand = sum((Decimal(v["total"]) for v in per_org.values()), Decimal(0))
    return {"orgs": per_org, "total": str(grand), "usage_events": len(fleet.usage), "gpu_samples": len(fleet.samples)}


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def write_truth(path: Path, truth: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(truth, indent=2) + "\n")


async def publish_fleet(
    settings: Any, *, seed: int, start: datetime, minutes: int, scale: float, orgs: Path, prices: Path, truth_path: Path, console: Any
) -> dict[str, Any]:
    """Generate, write the ground truth, then publish every event (idempotent producer, acks=all)."""
    from rich.progress import Progress

    from gpuledger.kafka import ensure_topics, new_producer
    from gpuledger.reference_import import OrgRow, PriceRow, parse_rows
    from schemas import codec_for

    fleet = generate(seed, start, minutes, scale)
    truth = ground_truth(fleet, parse_rows(orgs, "orgs", OrgRow), parse_rows(prices, "prices", PriceRow), settings.worker.gpu_window_seconds, settings.worker.unassigned_org)
    write_truth(truth_path, truth)
    await ensure_topics(settings)
    producer = new_producer(settings.kafka)
    await producer.start()
    usage_codec, sample_codec = codec_for(InferenceUsage), codec_for(GpuSample)
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("publishing", total=len(fleet.usage) + len(fleet.samples))
            for chunk in batches(fleet.samples, 2000):
                for s in chunk:
                    await producer.send(settings.topics.gpu_samples, key=s.gpu_uuid.encode(), value=sample_codec.encode(s))
                progress.advance(task, len(chunk))
            for chunk in batches(fleet.usage, 2000):
                for u in chunk:
                    await producer.send(settings.topics.inference_usage, key=u.event_id.encode(), value=usage_codec.encode(u))
                progress.advance(task, len(chunk))
            await producer.flush()
    finally:
        await producer.stop()
    return truth
