"""``gpuledger simulate``: realistic fleet traffic into Kafka, plus the ground truth it must produce.

A deterministic (seeded) fleet: two serving nodes with self-hosted models (one tensor
parallel), two paid APIs, and orgs with different usage shapes (steady, ramping, bursty,
small, one caller missing from the directory, one team paying from two cost centres).
A third node runs what tokens never show: a training job on two GPUs, two notebook pods
sharing one GPU, and an A100 split into MIG instances (a notebook, a pod assigned a slice
it does not use, an instance nobody holds, and a free slice). GPU utilization follows the
load. Part of the API traffic goes through a routing alias (``auto``, baseline ``gpt-4o``) and
support tickets / processed invoices are reported as business outcomes naming their requests;
neither changes any cost. The expected ledger, routing savings and cost per successful outcome
are computed here independently of the stream worker, by the written rules (README), so
end-to-end tests and the demo can check the pipeline against them to the cent.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

from schemas import (
    GpuProcess,
    GpuSample,
    InferenceUsage,
    OrgDirectory,
    OutcomeEvent,
    Price,
)

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
    Caller("key-support-bot-eu", ("llama-3.1-70b-instruct",), 40, "steady"),
]
# Node c: GPUs no token ever names. (gpu, processes per sample) are built in ``_workload_samples``.
TRAINING = [Gpu("gpu-node-c", i, "NVIDIA H100 80GB HBM3") for i in range(2)]
SHARED = Gpu("gpu-node-c", 2, "NVIDIA L40S")
MIG_PARENT = Gpu("gpu-node-c", 3, "NVIDIA A100-SXM4-80GB")
MIG_SLICES = 7
# (profile, compute slices, the pod holding it: (namespace, pod, running?) or None)
MIG_INSTANCES: list[tuple[str, int, tuple[str, str, bool] | None]] = [
    ("3g.40gb", 3, ("search-prod", "ranker-eval-nb", True)),
    ("2g.20gb", 2, ("finance-jobs", "ocr-batch-0", False)),  # assigned by the kubelet, nothing running (pid 0)
    ("1g.10gb", 1, None),  # an instance nobody holds; the 7th slice has no instance at all
]
# Routing: (caller, served API model) -> (share of its requests through the alias, the rule that chose the model).
# The alias ``auto`` would send everything to its baseline without tiering; fallback:1 is a dearer model than it.
ALIAS, BASELINE = "auto", "gpt-4o"
ROUTES: dict[tuple[str, str], tuple[float, str]] = {
    ("key-support-bot", "gpt-4o-mini"): (1.0, "default"),
    ("key-finance-ops", "gpt-4o-mini"): (1.0, "short-ops"),
    ("key-research-agents", "claude-sonnet-4"): (0.3, "fallback:1"),
}
# Outcomes: caller -> (kind, org, team, project, requests per outcome, success rate, value when valued).
OUTCOMES: dict[str, tuple[str, str, str, str, tuple[int, int], float, Decimal]] = {
    "key-support-bot": ("ticket_resolved", "support", "chatbot", "helpdesk", (2, 4), 0.8, Decimal("12.50")),
    "key-finance-ops": ("invoice_processed", "finance", "ops", "invoice-ocr", (1, 2), 0.9, Decimal("3.20")),
}


@dataclass
class Fleet:
    usage: list[InferenceUsage] = field(default_factory=list)
    samples: list[GpuSample] = field(default_factory=list)
    outcomes: list[OutcomeEvent] = field(default_factory=list)


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
    context = random.Random(f"{seed}/context")  # routing and outcomes: their own stream, so the traffic is the same with or without them
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
                alias, rule, baseline = _route(caller.key_id, model, context)
                fleet.usage.append(
                    InferenceUsage(
                        event_id=f"sim-{seed}-{counter:08d}",
                        request_start=end - timedelta(milliseconds=latency),
                        request_end=end,
                        key_id=caller.key_id,
                        model=model,
                        backend="vllm" if gpus else ("openai" if model.startswith("gpt") else "anthropic"),
                        deployment=model if gpus else "",
                        node=gpus[0].node if gpus else None,
                        gpu_uuids=[g.uuid for g in gpus],
                        prompt_tokens=prompt,
                        completion_tokens=completion,
                        cached_prompt_tokens=cached,
                        ttft_ms=round(latency * rng.uniform(0.05, 0.2), 3),
                        latency_ms=round(latency, 3),
                        status="ok",
                        endpoint="chat.completions",
                        client_request_id=f"req-{seed}-{counter:08d}",
                        requested_model=alias,
                        route_rule=rule,
                        baseline_model=baseline,
                    )
                )
    for gpu in FLEET:
        for minute in range(minutes):
            busy = min(97.0, 6.0 + load[(gpu.uuid, minute)] / 900.0)
            for tick in range(60 // SAMPLE_SECONDS):
                begin = start + timedelta(minutes=minute, seconds=tick * SAMPLE_SECONDS)
                util = round(min(100.0, max(0.0, rng.gauss(busy, 3.0))), 1)
                serving = GpuProcess(
                    pid=4242, command="vllm", namespace="inference", pod=f"vllm-{gpu.node}-{gpu.index // 2}", gpu_memory_bytes=38 * 2**30
                )
                fleet.samples.append(_sample(gpu, gpu.uuid, begin, util, [serving], memory_used_gib=40))
    fleet.samples.extend(_workload_samples(start, minutes, rng))
    _add_outcomes(fleet, seed, context)
    return fleet


def _route(key_id: str, model: str, context: random.Random) -> tuple[str, str, str]:
    """(requested_model, route_rule, baseline_model) of a request the alias served; empty for the rest."""
    share, rule = ROUTES.get((key_id, model), (0.0, ""))
    if not share or context.random() >= share:
        return "", "", ""
    return ALIAS, rule, BASELINE


def _add_outcomes(fleet: Fleet, seed: int, context: random.Random) -> None:
    """Group each outcome caller's API requests, in order, into outcomes naming them by client request id (one session each)."""
    for key_id, (kind, org, team, project, (low, high), success_rate, value) in OUTCOMES.items():
        positions = [i for i, u in enumerate(fleet.usage) if u.key_id == key_id and not u.gpu_uuids]
        while positions:
            size = context.randint(low, high)
            taken, positions = positions[:size], positions[size:]
            outcome_id = f"{kind}-{seed}-{len(fleet.outcomes) + 1:06d}"
            for i in taken:
                fleet.usage[i] = replace(fleet.usage[i], session_id=outcome_id)
            success = context.random() < success_rate
            fleet.outcomes.append(
                OutcomeEvent(
                    outcome_id=outcome_id,
                    kind=kind,
                    org=org,
                    team=team,
                    project=project,
                    success=success,
                    occurred_at=max(fleet.usage[i].request_end for i in taken) + timedelta(seconds=1),
                    value=value if success and context.random() < 0.5 else None,
                    currency="USD",
                    request_ids=[fleet.usage[i].client_request_id for i in taken],
                    key_id=key_id,
                )
            )


def _mig_uuid(profile: str) -> str:
    digest = hashlib.sha1(f"{MIG_PARENT.uuid}/{profile}".encode()).hexdigest()
    return f"MIG-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def _sample(
    gpu: Gpu, uuid: str, begin: datetime, util: float, processes: list[GpuProcess], memory_used_gib: int = 30, **mig: Any
) -> GpuSample:
    return GpuSample(
        sample_id=f"{gpu.node}/{uuid}/{int(begin.timestamp() * 1_000_000)}",
        node=gpu.node,
        gpu_uuid=uuid,
        gpu_index=gpu.index,
        gpu_model=gpu.model,
        interval_start=begin,
        interval_end=begin + timedelta(seconds=SAMPLE_SECONDS),
        utilization_pct=util,
        memory_utilization_pct=round(util * 0.6, 1),
        memory_used_bytes=memory_used_gib * 2**30,
        memory_total_bytes=80 * 2**30,
        power_watts=round(90 + 6 * util, 1),
        energy_joules=round((90 + 6 * util) * SAMPLE_SECONDS, 1),
        sm_clock_mhz=1980,
        temperature_c=int(35 + util / 3),
        processes=processes,
        **mig,
    )


def _workload_samples(start: datetime, minutes: int, rng: random.Random) -> list[GpuSample]:
    """Node c's samples: training, a time-sliced GPU, MIG instances (their processes carry the attribution evidence)."""
    out = []
    for minute in range(minutes):
        for tick in range(60 // SAMPLE_SECONDS):
            begin = start + timedelta(minutes=minute, seconds=tick * SAMPLE_SECONDS)
            for gpu in TRAINING:
                trainer = GpuProcess(
                    pid=7001 + gpu.index,
                    command="python",
                    namespace="research-train",
                    pod="llama-ft-0",
                    labels={"cost-center": "CC-3009"},
                    gpu_memory_bytes=70 * 2**30,
                    sm_utilization_pct=round(rng.uniform(85, 99), 1),
                )
                out.append(_sample(gpu, gpu.uuid, begin, round(rng.uniform(88, 99), 1), [trainer]))
            alice, bob = round(rng.uniform(5, 40), 1), round(rng.uniform(1, 20), 1)
            out.append(
                _sample(
                    SHARED,
                    SHARED.uuid,
                    begin,
                    round(min(100.0, alice + bob), 1),
                    [
                        GpuProcess(
                            pid=8101,
                            command="jupyter",
                            namespace="notebooks",
                            pod="alice-nb",
                            labels={"org": "research", "team": "agents"},
                            gpu_memory_bytes=12 * 2**30,
                            sm_utilization_pct=alice,
                        ),
                        GpuProcess(
                            pid=8102,
                            command="jupyter",
                            namespace="notebooks",
                            pod="bob-nb",
                            gpu_memory_bytes=6 * 2**30,
                            sm_utilization_pct=bob,
                        ),
                    ],
                )
            )
            for profile, slices, holder in MIG_INSTANCES:
                processes = []
                if holder is not None:
                    namespace, pod, running = holder
                    processes.append(
                        GpuProcess(
                            pid=9100 + slices if running else 0,
                            namespace=namespace,
                            pod=pod,
                            command="jupyter" if running else None,
                            gpu_memory_bytes=8 * 2**30 if running else 0,
                        )
                    )
                out.append(
                    _sample(
                        MIG_PARENT,
                        _mig_uuid(profile),
                        begin,
                        round(rng.uniform(0, 60), 1),
                        processes,
                        mig_instance=f"{MIG_PARENT.uuid}/{profile}",
                        mig_parent_uuid=MIG_PARENT.uuid,
                        mig_profile=profile,
                        mig_slices=slices,
                        mig_parent_slices=MIG_SLICES,
                    )
                )
    return out


# ----- ground truth: the cost model's rules (README), written out independently of streams/ -----
# Straight loops over the events, on purpose not sharing a line of code with the worker: this is the
# oracle the worker's ledger must match to the nano-unit.

LABELS = {
    "org": ("gpuledger.dev/org", "org"),
    "team": ("gpuledger.dev/team", "team"),
    "project": ("gpuledger.dev/project", "project"),
    "cost_centre": ("gpuledger.dev/cost-centre", "cost-center", "cost-centre", "cost_centre", "costcenter"),
}


def _price_at(prices: list[Price], kind: str, sku: str, when: datetime) -> Price | None:
    valid = [p for p in prices if p.kind == kind and p.sku == sku and p.effective_from <= when]
    return max(valid, key=lambda p: p.effective_from) if valid else None


def _down(value: Decimal) -> Decimal:
    return value.quantize(NANO, ROUND_DOWN)


def _even(value: Decimal) -> Decimal:
    return value.quantize(NANO, ROUND_HALF_EVEN)


def _token_cost(u: InferenceUsage, price: Price) -> Decimal:
    """A request's tokens at a token price: uncached and cached prompt and completion per million, half-even to 9 places."""
    assert price.input_per_mtok is not None and price.output_per_mtok is not None, f"{price.price_id} is not a token price"
    cin = price.cached_input_per_mtok if price.cached_input_per_mtok is not None else price.input_per_mtok
    raw = (
        (u.prompt_tokens - u.cached_prompt_tokens) * price.input_per_mtok
        + u.cached_prompt_tokens * cin
        + u.completion_tokens * price.output_per_mtok
    )
    return _even(raw / Decimal(1_000_000))


def _payer(entry: OrgDirectory | None, unassigned: str) -> dict[str, str]:
    """The directory entry's org/team/project/cost centre, or ``unassigned`` with blanks when the key has no entry."""
    if entry is None:
        return {"org": unassigned, "team": "", "project": "", "cost_centre": ""}
    return {"org": entry.org, "team": entry.team, "project": entry.project, "cost_centre": entry.cost_centre}


def _who_pays(process: GpuProcess, node_entry: dict[str, str], by_key: dict[tuple[str, str], OrgDirectory]) -> dict[str, str]:
    """Labels naming an org, else the namespace's directory entry, else the node owner; labels refine the rest."""
    labels = process.labels or {}

    def label(field_name: str) -> str | None:
        for key in LABELS[field_name]:
            if labels.get(key):
                return labels[key]
        return None

    if label("org"):
        payer = {"org": label("org") or "", "team": "", "project": "", "cost_centre": ""}
    elif ("namespace", process.namespace or "") in by_key:
        payer = _payer(by_key[("namespace", process.namespace or "")], "")
    else:
        payer = dict(node_entry)
    for field_name in ("team", "project", "cost_centre"):
        if label(field_name):
            payer[field_name] = label(field_name) or ""
    return payer


def ground_truth(
    fleet: Fleet, orgs: list[OrgDirectory], prices: list[Price], window_seconds: int = 60, unassigned: str = "unassigned"
) -> dict[str, Any]:
    """Expected spend per org (api, gpu, idle, total) and per org/team, as decimal strings (default idle policy: workload)."""
    by_key = {(o.kind, o.key): o for o in orgs}
    totals: dict[str, dict[str, Decimal]] = defaultdict(lambda: {"api": Decimal(0), "gpu": Decimal(0), "idle": Decimal(0)})
    teams: dict[str, Decimal] = defaultdict(Decimal)
    tokens: dict[tuple[str, datetime], dict[tuple[str, ...], int]] = defaultdict(lambda: defaultdict(int))

    def book(payer: dict[str, str], kind: str, amount: Decimal) -> None:
        totals[payer["org"]][kind] += amount
        teams[f"{payer['org']}/{payer['team']}"] += amount

    def window_of(t: datetime) -> datetime:
        return datetime.fromtimestamp(int(t.timestamp()) // window_seconds * window_seconds, UTC)

    for u in fleet.usage:
        entry = by_key.get(("api_key", u.key_id))
        payer = _payer(entry, unassigned)
        price = _price_at(prices, "token", u.model, u.request_end)
        if price is not None:
            book(payer, "api", _token_cost(u, price))
        else:
            group: tuple[str, ...] = (payer["org"], payer["team"], payer["project"], payer["cost_centre"], u.model, u.key_id)
            for gpu in u.gpu_uuids:
                tokens[(gpu, window_of(u.request_end))][group] += u.prompt_tokens + u.completion_tokens

    windows: dict[tuple[str, datetime], list[GpuSample]] = defaultdict(list)
    for s in fleet.samples:
        windows[(s.gpu_uuid, window_of(s.interval_start))].append(s)
    mig_costs: dict[tuple[str, datetime], Decimal] = defaultdict(Decimal)  # (parent, window) -> instance window costs
    mig_seconds: dict[tuple[str, datetime], Decimal] = defaultdict(Decimal)
    mig_first: dict[tuple[str, datetime], GpuSample] = {}
    for (gpu, window), samples in sorted(windows.items()):
        first = samples[0]
        node = by_key.get(("node", first.node))
        node_entry = _payer(node, unassigned)
        seconds = min(
            Decimal(sum(int((s.interval_end - s.interval_start).total_seconds() * 1_000_000) for s in samples)) / Decimal(1_000_000),
            Decimal(window_seconds),
        )
        util = (
            sum((min(max(Decimal(repr(s.utilization_pct)), Decimal(0)), Decimal(100)) for s in samples), Decimal(0)) / len(samples)
        ).quantize(Decimal("0.0001"), ROUND_HALF_EVEN)
        # 1. the window's cost
        if first.mig_profile:
            own = _price_at(prices, "gpu_hour", f"{first.gpu_model}/{first.mig_profile}", window)
            parent_price = _price_at(prices, "gpu_hour", first.gpu_model, window)
            if own is not None:
                cost = _even(own.per_hour * seconds / Decimal(3600))  # type: ignore[operator]
            else:
                cost = _down(parent_price.per_hour * first.mig_slices * seconds / (first.mig_parent_slices * Decimal(3600)))  # type: ignore[union-attr,operator]
            key = (first.mig_parent_uuid or "", window)
            mig_costs[key] += cost
            mig_seconds[key] = max(mig_seconds[key], seconds)
            mig_first.setdefault(key, first)
        else:
            price = _price_at(prices, "gpu_hour", first.gpu_model, window)
            cost = _even(price.per_hour * seconds / Decimal(3600))  # type: ignore[union-attr,operator]
        # the holders and their weights (SM utilization, else memory, else equal)
        holders: dict[str, tuple[dict[str, str], Decimal, int]] = {}
        for s in samples:
            micros = int((s.interval_end - s.interval_start).total_seconds() * 1_000_000)
            for p in s.processes:
                name = f"{p.namespace or ''}/{p.pod}" if p.pod else (f"host:{p.command}" if p.command else None)
                if name is None:
                    continue
                payer, sm, memory = holders.get(name, (_who_pays(p, node_entry, by_key), Decimal(0), 0))
                if p.sm_utilization_pct:
                    sm += Decimal(repr(p.sm_utilization_pct)) * micros
                memory += p.gpu_memory_bytes * micros
                holders[name] = (payer, sm, memory)
        if any(sm for _, sm, _ in holders.values()):
            weights = {n: sm for n, (_, sm, _) in holders.items() if sm}
        elif any(mem for _, _, mem in holders.values()):
            weights = {n: Decimal(mem) for n, (_, _, mem) in holders.items() if mem}
        else:
            weights = {n: Decimal(1) for n in holders}
        # 2. metered tokens: busy by token share, idle to the holders (policy "workload"); 3. else all to the holders
        shares = tokens.get((gpu, window), {})
        total_tokens = sum(shares.values())
        booked = Decimal(0)
        if total_tokens:
            busy = _down(cost * util / Decimal(100))
            for group, count in shares.items():
                amount = _down(busy * count / total_tokens)
                book({"org": group[0], "team": group[1]}, "gpu", amount)
                booked += amount
            for name, weight in weights.items():
                amount = _down((cost - busy) * weight / sum(weights.values()))
                book(holders[name][0], "idle", amount)
                booked += amount
        else:
            for name, weight in weights.items():
                amount = _down(cost * weight / sum(weights.values()))
                book(holders[name][0], "gpu", amount)
                booked += amount
        # 4. the remainder: the node owner's idle
        book(node_entry, "idle", cost - booked)
    for (parent, window), instance_costs in mig_costs.items():
        first = mig_first[(parent, window)]
        node = by_key.get(("node", first.node))
        price = _price_at(prices, "gpu_hour", first.gpu_model, window)
        parent_cost = _even(price.per_hour * mig_seconds[(parent, window)] / Decimal(3600))  # type: ignore[union-attr,operator]
        book(
            _payer(node, unassigned),
            "idle",
            max(parent_cost - instance_costs, Decimal(0)),
        )
    per_org = {org: {k: str(v) for k, v in {**t, "total": t["api"] + t["gpu"] + t["idle"]}.items()} for org, t in sorted(totals.items())}
    grand = sum((Decimal(v["total"]) for v in per_org.values()), Decimal(0))
    return {
        "orgs": per_org,
        "teams": {team: str(v) for team, v in sorted(teams.items())},
        "total": str(grand),
        "usage_events": len(fleet.usage),
        "gpu_samples": len(fleet.samples),
    }


def _api_cost(u: InferenceUsage, sku: str, prices: list[Price]) -> Decimal:
    """``sku``'s token price on the request's tokens; the simulator routes and links API requests only."""
    price = _price_at(prices, "token", sku, u.request_end)
    if price is None:
        raise ValueError(f"{u.event_id}: {sku} has no token price (the simulator routes and links API requests only)")
    return _token_cost(u, price)


def savings_truth(fleet: Fleet, prices: list[Price]) -> dict[str, Any]:
    """Expected routing savings (README "Routing savings"): per request, its tokens at the baseline's price minus its cost."""
    by_rule: dict[str, Decimal] = defaultdict(Decimal)
    requests: dict[str, int] = defaultdict(int)
    for u in fleet.usage:
        if u.baseline_model:
            by_rule[u.route_rule] += _api_cost(u, u.baseline_model, prices) - _api_cost(u, u.model, prices)
            requests[u.route_rule] += 1
    return {
        "savings": str(sum(by_rule.values(), Decimal(0))),
        "requests": sum(requests.values()),
        "by_rule": {rule: {"requests": requests[rule], "savings": str(v)} for rule, v in sorted(by_rule.items())},
    }


def outcome_truth(fleet: Fleet, prices: list[Price]) -> dict[str, Any]:
    """Expected cost per outcome kind (README "Cost per outcome"): its requests' cost ÷ its successes, half-even to 9 places."""
    by_id = {u.client_request_id: u for u in fleet.usage}
    kinds: dict[str, dict[str, Any]] = defaultdict(lambda: {"outcomes": 0, "successes": 0, "requests": 0, "cost": Decimal(0)})
    for o in fleet.outcomes:
        kind = kinds[o.kind]
        kind["outcomes"] += 1
        kind["successes"] += o.success
        kind["requests"] += len(o.request_ids)
        kind["cost"] += sum((_api_cost(by_id[r], by_id[r].model, prices) for r in o.request_ids), Decimal(0))
    return {
        k: {**v, "cost": str(v["cost"]), "cost_per_success": str(_even(v["cost"] / v["successes"])) if v["successes"] else None}
        for k, v in sorted(kinds.items())
    }


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def write_truth(path: Path, truth: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(truth, indent=2) + "\n")


async def publish_fleet(
    settings: Any, *, seed: int, start: datetime, minutes: int, scale: float, orgs: Path, prices: Path, truth_path: Path, console: Any
) -> dict[str, Any]:
    """Generate, write the ground truth, then publish every event and wait for each acknowledgement (``PublishRefused`` otherwise)."""
    from rich.progress import Progress

    from gpuledger.commands.reference_import import OrgRow, PriceRow, parse_rows
    from gpuledger.kafka import AckedSender, Message, ensure_topics
    from schemas import codec_for

    fleet = generate(seed, start, minutes, scale)
    price_list = parse_rows(prices, "prices", PriceRow)
    truth = ground_truth(
        fleet, parse_rows(orgs, "orgs", OrgRow), price_list, settings.worker.gpu_window_seconds, settings.worker.unassigned_org
    )
    truth |= {"routing_savings": savings_truth(fleet, price_list), "outcomes": outcome_truth(fleet, price_list)}
    write_truth(truth_path, truth)
    await ensure_topics(settings)
    usage_codec, sample_codec = codec_for(InferenceUsage), codec_for(GpuSample)
    samples: list[Message] = [(settings.topics.gpu_samples, s.gpu_uuid.encode(), sample_codec.encode(s), []) for s in fleet.samples]
    usage: list[Message] = [(settings.topics.inference_usage, u.event_id.encode(), usage_codec.encode(u), []) for u in fleet.usage]
    outcome_codec = codec_for(OutcomeEvent)
    outcomes: list[Message] = [(settings.topics.outcomes, o.outcome_id.encode(), outcome_codec.encode(o), []) for o in fleet.outcomes]
    async with AckedSender(settings.kafka, linger_ms=20) as sender:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("publishing", total=len(samples) + len(usage) + len(outcomes))
            for chunk in batches(samples + usage + outcomes, 2000):  # each chunk acknowledged before the next: progress is what Kafka holds
                await sender.send_with_headers(chunk)
                progress.advance(task, len(chunk))
    return truth
