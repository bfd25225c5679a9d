"""GPU window cost model: every worked example of the README's cost-model section, reproduced exactly.

Pure functions, no engines: the end-to-end tests (tests/test_pipeline.py, tests/test_late_windows.py)
run the same rules through Kafka, the worker and ClickHouse against an independent oracle.
"""

from __future__ import annotations

import json
import random
import string
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gpuledger.settings import WorkerSettings
from schemas import LedgerLine, OrgDirectory, Price
from streams.gpu_cost import (
    CallerGroup,
    MigSlice,
    Tokens,
    WindowFacts,
    derive_lines,
    gpu_rate,
    mig_free_line,
    window_cost,
)
from streams.pricing import PriceBook
from streams.workloads import LabelKeys, Workload, collect_workloads, resolve_payer

W = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
PLATFORM = OrgDirectory(kind="node", key="gpu-node-a", org="platform", team="ml-infra", project="shared-gpus", cost_centre="CC-9000")
DIRECTORY = {
    ("namespace", "research-train"): OrgDirectory(
        kind="namespace", key="research-train", org="research", team="training", project="llama-ft", cost_centre="CC-3002"
    ),
}
PRICES = PriceBook(
    [
        Price(sku="NVIDIA H100 80GB HBM3", kind="gpu_hour", currency="USD", effective_from=T0, per_hour=Decimal("2.49")),
        Price(sku="NVIDIA L40S", kind="gpu_hour", currency="USD", effective_from=T0, per_hour=Decimal("0.89")),
        Price(sku="NVIDIA A100-SXM4-80GB", kind="gpu_hour", currency="USD", effective_from=T0, per_hour=Decimal("2.10")),
        Price(sku="NVIDIA A100-SXM4-80GB/3g.40gb", kind="gpu_hour", currency="USD", effective_from=T0, per_hour=Decimal("1.00")),
    ]
)
SEARCH = CallerGroup("search", "ranking", "reranker", "CC-1001", "llama-3.1-8b-instruct", "key-search")
SUPPORT = CallerGroup("support", "chatbot", "helpdesk", "CC-2001", "llama-3.1-8b-instruct", "key-support")
MICROS = 60_000_000  # one whole 60 s window


def lookup(kind: str, key: str) -> OrgDirectory | None:
    return DIRECTORY.get((kind, key))


def payer_of(workload: Workload) -> OrgDirectory:
    return resolve_payer(workload, PLATFORM, lookup, LabelKeys.of(WorkerSettings()))[0]


def pod(
    namespace: str, name: str, *, sm: float | None = None, memory: int = 0, labels: dict[str, str] | None = None, pid: int = 42
) -> dict:
    return {"pid": pid, "namespace": namespace, "pod": name, "labels": labels or {}, "sm_utilization_pct": sm, "gpu_memory_bytes": memory}


def facts(
    model: str,
    util: str,
    *,
    groups: dict[CallerGroup, Tokens] | None = None,
    processes: list[dict] | None = None,
    mig: MigSlice | None = None,
    gpu: str = "GPU-1",
) -> WindowFacts:
    return WindowFacts(
        gpu=gpu,
        window=W,
        window_seconds=60,
        node="gpu-node-a",
        gpu_model=model,
        gpu_seconds=Decimal(60),
        utilization=Decimal(util),
        groups=groups or {},
        workloads=collect_workloads([(MICROS, json.dumps(processes or []))]),
        mig=mig,
    )


def lines_of(window: WindowFacts, policy: str = "workload") -> list[LedgerLine]:
    rate = gpu_rate(window, PRICES.at)
    assert rate is not None
    return derive_lines(window, rate, policy=policy, node_owner=PLATFORM, payer_of=payer_of)  # type: ignore[arg-type]


def by_payer(lines: list[LedgerLine]) -> dict[tuple[str, str, str], Decimal]:
    out: dict[tuple[str, str, str], Decimal] = {}
    for line in lines:
        key = (line.kind, line.org, line.basis)
        out[key] = out.get(key, Decimal(0)) + line.cost
    return out


INFERENCE = dict(
    groups={SEARCH: Tokens(3000, 2000, 0, 1000), SUPPORT: Tokens(1000, 800, 0, 200)}, processes=[pod("inference", "vllm-0", sm=70.0)]
)


def test_metered_inference_default_policy_idle_to_the_serving_workload() -> None:
    # README "Metered inference": window 0.0415, busy 0.031125 -> search 0.02334375, support 0.00778125;
    # idle 0.010375 to the serving pod inference/vllm-0, whose namespace is not in the directory -> the node owner.
    lines = lines_of(facts("NVIDIA H100 80GB HBM3", "75", **INFERENCE))
    assert by_payer(lines) == {
        ("gpu", "search", "tokens"): Decimal("0.02334375"),
        ("gpu", "support", "tokens"): Decimal("0.00778125"),
        ("idle", "platform", "sm"): Decimal("0.010375"),
        ("idle", "platform", "remainder"): Decimal(0),
    }
    idle = next(line for line in lines if line.basis == "sm")
    assert (idle.workload, idle.idle_policy, idle.line_id) == (
        "inference/vllm-0",
        "workload",
        f"idle:GPU-1:{int(W.timestamp())}:inference%2Fvllm-0",
    )
    assert sum(line.cost for line in lines) == Decimal("0.0415")


def test_idle_policy_callers_spreads_idle_by_token_share_fully_loaded() -> None:
    # README: idle 0.010375 split 3:1 -> search 0.00778125, support 0.00259375 (fully loaded: 0.0311250 and 0.0103750).
    lines = lines_of(facts("NVIDIA H100 80GB HBM3", "75", **INFERENCE), "callers")
    assert by_payer(lines) == {
        ("gpu", "search", "tokens"): Decimal("0.02334375"),
        ("gpu", "support", "tokens"): Decimal("0.00778125"),
        ("idle", "search", "tokens"): Decimal("0.00778125"),
        ("idle", "support", "tokens"): Decimal("0.00259375"),
        ("idle", "platform", "remainder"): Decimal(0),
    }
    assert {line.idle_policy for line in lines} == {"callers"}


def test_idle_policy_node_books_idle_to_the_node_owner() -> None:
    lines = lines_of(facts("NVIDIA H100 80GB HBM3", "75", **INFERENCE), "node")
    assert by_payer(lines)[("idle", "platform", "remainder")] == Decimal("0.010375")


def test_token_share_lines_count_tokens_once_and_keep_the_share_numerator() -> None:
    lines = lines_of(facts("NVIDIA H100 80GB HBM3", "75", **INFERENCE))
    search = next(line for line in lines if line.org == "search")
    assert (search.share_tokens, search.window_tokens, search.prompt_tokens, search.completion_tokens) == (3000, 4000, 2000, 1000)
    assert search.line_id == f"gpu:GPU-1:{int(W.timestamp())}:search/ranking/reranker/CC-1001/llama-3.1-8b-instruct/key-search"


def test_unmetered_training_pod_pays_the_whole_window_through_its_namespace_and_labels() -> None:
    # README "Unmetered workload": 0.0415 to research (namespace research-train), cost centre refined by the pod's label.
    trainer = pod("research-train", "llama-ft-0", sm=93.5, labels={"cost-center": "CC-3009"})
    lines = lines_of(facts("NVIDIA H100 80GB HBM3", "92", processes=[trainer]))
    share = lines[0]
    assert (share.kind, share.org, share.team, share.cost_centre, share.cost, share.basis) == (
        "gpu",
        "research",
        "training",
        "CC-3009",
        Decimal("0.0415"),
        "sm",
    )
    assert share.workload == "research-train/llama-ft-0" and share.line_id.startswith("wl:GPU-1:")
    assert lines[1].cost == 0 and lines[1].basis == "remainder"


def test_shared_gpu_split_by_sm_utilization_residue_to_the_node_owner() -> None:
    # README "Shared GPU": L40S 0.014833333; alice 30 % SM, bob 10 % -> 0.011124999 and 0.003708333; remainder 0.000000001.
    alice = pod("notebooks", "alice-nb", sm=30.0, labels={"org": "research", "team": "agents"})
    bob = pod("notebooks", "bob-nb", sm=10.0)
    lines = lines_of(facts("NVIDIA L40S", "40", processes=[alice, bob]))
    assert [(line.org, line.team, line.cost, line.basis) for line in lines] == [
        ("research", "agents", Decimal("0.011124999"), "sm"),
        ("platform", "ml-infra", Decimal("0.003708333"), "sm"),
        ("platform", "ml-infra", Decimal("0.000000001"), "remainder"),
    ]


def test_shared_gpu_without_sm_readings_splits_by_memory_then_equally() -> None:
    by_memory = lines_of(facts("NVIDIA L40S", "40", processes=[pod("a", "p1", memory=3 * 2**30), pod("b", "p2", memory=2**30)]))
    assert [(line.cost, line.basis) for line in by_memory[:2]] == [(Decimal("0.011124999"), "memory"), (Decimal("0.003708333"), "memory")]
    equal = lines_of(facts("NVIDIA L40S", "40", processes=[pod("a", "p1"), pod("b", "p2")]))
    assert [(line.cost, line.basis) for line in equal[:2]] == [(Decimal("0.007416666"), "equal"), (Decimal("0.007416666"), "equal")]


def test_gpu_assigned_to_an_idle_pod_is_that_pods_cost_on_the_allocation_basis() -> None:
    assigned = pod("research-train", "waiting-job", pid=0)
    lines = lines_of(facts("NVIDIA H100 80GB HBM3", "0", processes=[assigned]))
    assert (lines[0].org, lines[0].cost, lines[0].basis) == ("research", Decimal("0.0415"), "allocation")


def test_gpu_with_no_workload_is_the_node_owners_idle() -> None:
    lines = lines_of(facts("NVIDIA L40S", "3"))
    assert [(line.kind, line.org, line.cost, line.basis) for line in lines] == [("idle", "platform", Decimal("0.014833333"), "remainder")]


def test_mig_instances_and_free_slices_add_up_to_the_parent() -> None:
    # README "MIG": A100 at 2.10/h -> 0.035 a window. 3g.40gb has its own price (1.00/h -> 0.016666667);
    # 2g.20gb pays 2/7 of the parent (0.01), 1g.10gb 1/7 (0.005); the free 7th slice: 0.003333333.
    def instance(profile: str, slices: int) -> WindowFacts:
        return facts("NVIDIA A100-SXM4-80GB", "20", gpu=f"MIG-{profile}", mig=MigSlice("GPU-A100", profile, slices, 7))

    costs = {}
    for profile, slices in (("3g.40gb", 3), ("2g.20gb", 2), ("1g.10gb", 1)):
        window = instance(profile, slices)
        rate = gpu_rate(window, PRICES.at)
        assert rate is not None
        costs[profile] = window_cost(rate, window.gpu_seconds)
        assert sum(line.cost for line in lines_of(window)) == costs[profile]
        assert all(line.parent_gpu_uuid == "GPU-A100" and line.mig_profile == profile for line in lines_of(window))
    assert costs == {"3g.40gb": Decimal("0.016666667"), "2g.20gb": Decimal("0.01"), "1g.10gb": Decimal("0.005")}
    assert gpu_rate(instance("2g.20gb", 2), PRICES.at).price_id == "NVIDIA A100-SXM4-80GB@2026-01-01T00:00:00+00:00*2/7"  # type: ignore[union-attr]
    parent = PRICES.at("gpu_hour", "NVIDIA A100-SXM4-80GB", W)
    assert parent is not None
    free = mig_free_line(
        parent="GPU-A100",
        window=W,
        window_seconds=60,
        node="gpu-node-a",
        gpu_model="NVIDIA A100-SXM4-80GB",
        parent_price=parent,
        parent_seconds=Decimal(60),
        instance_costs=sum(costs.values()),
        node_owner=PLATFORM,
    )
    assert (free.cost, free.org, free.basis, free.kind) == (Decimal("0.003333333"), "platform", "mig-free", "idle")
    assert free.cost + sum(costs.values()) == Decimal("0.035")


def test_mig_slice_shares_never_exceed_the_parent_for_any_split() -> None:
    parent = Decimal("2.10") * 60 / 3600
    for layout in ([1] * 7, [2, 2, 2, 1], [3, 4], [7]):
        total = Decimal(0)
        for i, slices in enumerate(layout):
            window = facts("NVIDIA A100-SXM4-80GB", "0", gpu=f"MIG-{i}", mig=MigSlice("GPU-A100", "", slices, 7))
            rate = gpu_rate(window, PRICES.at)
            assert rate is not None
            total += window_cost(rate, window.gpu_seconds)
        assert parent - Decimal("0.000000007") <= total <= parent, layout


@pytest.mark.parametrize(
    ("labels", "namespace", "expected"),
    [
        ({"gpuledger.dev/org": "finance", "team": "ops"}, "research-train", ("finance", "ops", "", "", "label")),
        ({}, "research-train", ("research", "training", "llama-ft", "CC-3002", "namespace")),
        ({"team": "pretraining", "cost-center": "CC-1"}, "research-train", ("research", "pretraining", "llama-ft", "CC-1", "namespace")),
        ({}, "unknown-ns", ("platform", "ml-infra", "shared-gpus", "CC-9000", "node")),
        ({"cost_centre": "CC-7"}, "", ("platform", "ml-infra", "shared-gpus", "CC-7", "node")),
    ],
)
def test_payer_resolution_order_labels_then_namespace_then_node(labels: dict[str, str], namespace: str, expected: tuple[str, ...]) -> None:
    payer, source = resolve_payer(Workload("w", namespace, labels), PLATFORM, lookup, LabelKeys.of(WorkerSettings()))
    assert (payer.org, payer.team, payer.project, payer.cost_centre, source) == expected


def test_names_with_separators_never_merge_two_groups() -> None:
    # Joined naively, ("a/b", "c") and ("a", "b/c") would both read "a/b/c": one share would overwrite the other.
    left = CallerGroup("a/b", "c", "", "", "m", "k")
    right = CallerGroup("a", "b/c", "", "", "m", "k")
    lines = lines_of(facts("NVIDIA H100 80GB HBM3", "100", groups={left: Tokens(1), right: Tokens(1)}), "callers")
    shares = [line for line in lines if line.kind == "gpu"]
    assert len(shares) == 2 and len({line.line_id for line in lines}) == len(lines)
    assert [line.cost for line in shares] == [Decimal("0.02075")] * 2


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase + "/:%-_ ") for _ in range(rng.randrange(0, 4)))


@pytest.mark.parametrize("seed", range(25))
def test_random_windows_never_share_a_line_id_and_always_add_up(seed: int) -> None:
    """Property: over random directories and traffic, distinct lines have distinct ids, and each window adds up."""
    rng = random.Random(seed)
    seen: dict[str, tuple] = {}
    for gpu in range(3):
        groups = {
            CallerGroup(_name(rng), _name(rng), _name(rng), _name(rng), rng.choice(["m1", "m/2"]), _name(rng)): Tokens(
                rng.randrange(0, 5000)
            )
            for _ in range(rng.randrange(0, 6))
        }
        processes = [
            pod(
                _name(rng),
                _name(rng) or "p",
                sm=rng.choice([None, rng.uniform(0.1, 100)]),
                memory=rng.randrange(0, 2**34),
                labels={rng.choice(["org", "team", "cost-center"]): _name(rng)},
            )
            for _ in range(rng.randrange(0, 4))
        ]
        window = facts(
            rng.choice(["NVIDIA L40S", "NVIDIA H100 80GB HBM3"]),
            str(Decimal(rng.randrange(0, 1_000_001)) / 10_000),
            groups=groups,
            processes=processes,
            gpu=f"GPU/{gpu}:{seed}",
        )
        for policy in ("workload", "node", "callers"):
            lines = lines_of(window, policy)
            rate = gpu_rate(window, PRICES.at)
            assert rate is not None
            assert sum(line.cost for line in lines) == window_cost(rate, window.gpu_seconds), policy
            assert all(line.cost >= 0 for line in lines)
            for line in lines:
                identity = (
                    line.gpu_uuid,
                    line.event_time,
                    line.kind,
                    line.org,
                    line.team,
                    line.project,
                    line.cost_centre,
                    line.model,
                    line.key_id,
                    line.workload,
                    line.basis,
                )
                assert seen.setdefault(line.line_id, identity) == identity, f"two different lines share {line.line_id!r}"
