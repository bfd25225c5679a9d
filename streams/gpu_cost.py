"""One GPU window's ledger lines, as a pure function of its facts and price (README, "The cost model").

1. The window's cost: ``per_hour x gpu_seconds / 3600`` (a MIG instance: its profile's price, or its
   compute-slice share of the parent's, see ``mig_rate``).
2. Metered inference on it (usage events name the GPU): the busy part (cost x utilization) is split by
   token share among caller groups; the idle part follows ``idle_policy``.
3. No metered tokens but workloads hold it (training, notebooks, a pod assigned the GPU): the whole
   window is split among them by SM utilization, else GPU memory, else equally.
4. Whatever is left (every rounding residue included) is the node owner's idle remainder line, so the
   lines of a window always add up to its cost exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, Decimal, localcontext
from typing import Any, Literal, TypeVar

from gpuledger.limits import MONEY_CONTEXT
from schemas import LedgerLine, OrgDirectory, Price
from schemas.keys import (
    gpu_share_line_id,
    idle_line_id,
    mig_free_line_id,
    workload_line_id,
)
from streams.pricing import SECONDS_PER_HOUR, ZERO, money
from streams.workloads import Workload

IdlePolicy = Literal["workload", "node", "callers"]
PayerOf = Callable[[Workload], OrgDirectory]
K = TypeVar("K", str, "CallerGroup")


@dataclass(frozen=True, order=True)
class CallerGroup:
    """Everything a token share is grouped by (each one is in the line id)."""

    org: str
    team: str
    project: str
    cost_centre: str
    model: str
    key_id: str

    @property
    def parts(self) -> tuple[str, str, str, str, str, str]:
        return (self.org, self.team, self.project, self.cost_centre, self.model, self.key_id)


@dataclass(frozen=True)
class Tokens:
    """A group's tokens on one GPU in one window.

    ``share`` (prompt + completion on this GPU) is the split's numerator. ``prompt`` / ``cached`` /
    ``completion`` count only requests whose *first* GPU is this one, so summing them over a
    tensor-parallel deployment's lines counts each request once.
    """

    share: int
    prompt: int = 0
    cached: int = 0
    completion: int = 0


@dataclass(frozen=True)
class MigSlice:
    parent_uuid: str
    profile: str
    slices: int
    parent_slices: int


@dataclass(frozen=True)
class WindowFacts:
    gpu: str
    window: datetime
    window_seconds: int
    node: str
    gpu_model: str
    gpu_seconds: Decimal
    utilization: Decimal  # time-weighted mean of samples capped to 0..100, 4 decimals
    groups: Mapping[CallerGroup, Tokens] = field(default_factory=dict)
    workloads: Mapping[str, Workload] = field(default_factory=dict)
    mig: MigSlice | None = None


@dataclass(frozen=True)
class Rate:
    """The hourly rate a window is priced at, and the price version(s) it came from."""

    per_hour: Decimal
    price_id: str
    currency: str
    exact: bool = True  # False: a derived share, rounded down so instances never exceed their parent


def gpu_rate(facts: WindowFacts, price_at: Callable[[str, str, datetime], Price | None]) -> Rate | None:
    """The window's rate: the GPU model's ``gpu_hour`` price, or for MIG see ``mig_rate``; None if unpriced."""
    if facts.mig is not None:
        return mig_rate(facts.gpu_model, facts.mig, facts.window, price_at)
    price = price_at("gpu_hour", facts.gpu_model, facts.window)
    if price is None or price.per_hour is None:
        return None
    return Rate(price.per_hour, price.price_id, price.currency)


def mig_rate(gpu_model: str, mig: MigSlice, when: datetime, price_at: Callable[[str, str, datetime], Price | None]) -> Rate | None:
    """A MIG instance's rate: an explicit ``<gpu model>/<profile>`` price, else slices / parent slices of the parent's."""
    explicit = price_at("gpu_hour", f"{gpu_model}/{mig.profile}", when) if mig.profile else None
    if explicit is not None and explicit.per_hour is not None:
        return Rate(explicit.per_hour, explicit.price_id, explicit.currency)
    parent = price_at("gpu_hour", gpu_model, when)
    if parent is None or parent.per_hour is None or mig.parent_slices <= 0 or mig.slices <= 0:
        return None
    with localcontext(MONEY_CONTEXT):
        per_hour = parent.per_hour * mig.slices / mig.parent_slices
    return Rate(per_hour, f"{parent.price_id}*{mig.slices}/{mig.parent_slices}", parent.currency, exact=False)


def window_cost(rate: Rate, gpu_seconds: Decimal) -> Decimal:
    with localcontext(MONEY_CONTEXT):
        value = rate.per_hour * gpu_seconds / SECONDS_PER_HOUR
        return money(value) if rate.exact else money(value, ROUND_DOWN)


def split_down(total: Decimal, weights: Mapping[K, Decimal | int]) -> dict[K, Decimal]:
    """``total x weight / Σ weights`` for each positive weight, rounded down (the caller books the residue)."""
    with localcontext(MONEY_CONTEXT):  # weights reach 10^19 (memory bytes x microseconds): keep every digit
        whole = sum((Decimal(w) for w in weights.values()), ZERO)
        if whole <= 0:
            return {}
        return {key: money(total * Decimal(w) / whole, ROUND_DOWN) for key, w in weights.items() if w > 0}


def workload_weights(workloads: Mapping[str, Workload]) -> tuple[str, dict[str, Decimal | int]]:
    """How holders split a window: SM utilization where NVML reports it, else GPU memory, else equally."""
    sm = {name: w.sm_weight for name, w in workloads.items() if w.sm_weight > 0}
    if sm:
        return "sm", dict(sm)
    memory = {name: w.memory_weight for name, w in workloads.items() if w.memory_weight > 0}
    if memory:
        return "memory", dict(memory)
    basis = "equal" if any(w.running for w in workloads.values()) else "allocation"
    return basis, {name: 1 for name in workloads}


def derive_lines(facts: WindowFacts, rate: Rate, *, policy: IdlePolicy, node_owner: OrgDirectory, payer_of: PayerOf) -> list[LedgerLine]:
    """The window's lines; their costs always add up to ``window_cost(rate, facts.gpu_seconds)``."""
    cost = window_cost(rate, facts.gpu_seconds)
    stamp = int(facts.window.timestamp())
    window_tokens = sum(t.share for t in facts.groups.values())
    common: dict[str, Any] = dict(
        event_time=facts.window,
        window_seconds=facts.window_seconds,
        node=facts.node,
        gpu_uuid=facts.gpu,
        price_id=rate.price_id,
        window_tokens=window_tokens,
        gpu_seconds=facts.gpu_seconds,
        utilization_pct=float(facts.utilization),
        currency=rate.currency,
        idle_policy=policy,
        gpu_model=facts.gpu_model,
        mig_profile=facts.mig.profile if facts.mig else "",
        parent_gpu_uuid=facts.mig.parent_uuid if facts.mig else "",
    )

    def line(line_id: str, kind: str, payer: OrgDirectory, model: str, amount: Decimal, basis: str, **extra: Any) -> LedgerLine:
        return _charged(payer, line_id=line_id, kind=kind, model=model, cost=amount, basis=basis, **common, **extra)

    def by_workload(total: Decimal, kind: str, line_id_of: Callable[[str, int, str], str]) -> list[LedgerLine]:
        """``total`` split among the workloads holding the GPU (``workload_weights``), one line each."""
        basis, weights = workload_weights(facts.workloads)
        return [
            line(line_id_of(facts.gpu, stamp, name), kind, payer_of(facts.workloads[name]), facts.gpu_model, amount, basis, workload=name)
            for name, amount in sorted(split_down(total, weights).items())
        ]

    lines: list[LedgerLine] = []
    if window_tokens > 0:
        with localcontext(MONEY_CONTEXT):
            busy = money(cost * min(max(facts.utilization, ZERO), Decimal(100)) / Decimal(100), ROUND_DOWN)
        idle = cost - busy
        token_shares = {group: tokens.share for group, tokens in facts.groups.items()}
        for group, amount in sorted(split_down(busy, token_shares).items()):
            tokens = facts.groups[group]
            lines.append(
                line(
                    gpu_share_line_id(facts.gpu, stamp, *group.parts),
                    "gpu",
                    _payer(group),
                    group.model,
                    amount,
                    "tokens",
                    key_id=group.key_id,
                    share_tokens=tokens.share,
                    prompt_tokens=tokens.prompt,
                    cached_prompt_tokens=tokens.cached,
                    completion_tokens=tokens.completion,
                )
            )
        if policy == "callers":
            for group, amount in sorted(split_down(idle, token_shares).items()):
                lines.append(
                    line(
                        idle_line_id(facts.gpu, stamp, *group.parts),
                        "idle",
                        _payer(group),
                        facts.gpu_model,
                        amount,
                        "tokens",
                        key_id=group.key_id,
                    )
                )
        elif policy == "workload" and facts.workloads:
            lines.extend(by_workload(idle, "idle", idle_line_id))
    elif facts.workloads:
        lines.extend(by_workload(cost, "gpu", workload_line_id))
    remainder = cost - sum((entry.cost for entry in lines), ZERO)
    lines.append(line(idle_line_id(facts.gpu, stamp), "idle", node_owner, facts.gpu_model, remainder, "remainder"))
    return lines


def mig_free_line(
    *,
    parent: str,
    window: datetime,
    window_seconds: int,
    node: str,
    gpu_model: str,
    parent_price: Price,
    parent_seconds: Decimal,
    instance_costs: Decimal,
    node_owner: OrgDirectory,
) -> LedgerLine:
    """The parent's window cost that no instance carries (free slices and rounding residue), as the node owner's idle."""
    assert parent_price.per_hour is not None
    with localcontext(MONEY_CONTEXT):
        parent_cost = money(parent_price.per_hour * parent_seconds / SECONDS_PER_HOUR)
    return _charged(
        node_owner,
        line_id=mig_free_line_id(parent, int(window.timestamp())),
        kind="idle",
        event_time=window,
        window_seconds=window_seconds,
        model=gpu_model,
        gpu_model=gpu_model,
        node=node,
        gpu_uuid=parent,
        parent_gpu_uuid=parent,
        price_id=parent_price.price_id,
        gpu_seconds=parent_seconds,
        cost=max(parent_cost - instance_costs, ZERO),
        currency=parent_price.currency,
        basis="mig-free",
    )


def _charged(payer: OrgDirectory, **fields: Any) -> LedgerLine:
    """A ledger line charged to ``payer`` (its org, team, project and cost centre); ``fields`` are the rest."""
    return LedgerLine(org=payer.org, team=payer.team, project=payer.project, cost_centre=payer.cost_centre, **fields)


def _payer(group: CallerGroup) -> OrgDirectory:
    return OrgDirectory(
        kind="api_key", key=group.key_id, org=group.org, team=group.team, project=group.project, cost_centre=group.cost_centre
    )
