"""What the worker accepts from Kafka: ranges the ledger can hold and times it can keep.

A well-formed Avro record can still be absurd (negative or 2^62 tokens, NaN
utilization, an event dated 2100 or 1970, an empty id). Each check returns the precise
reason a record is refused, or None; the worker sends refused records to the
dead-letter topic with that reason, so nothing vanishes silently. Limits come from
``gpuledger.limits`` (token counts, prices) and from the worker's settings (clock skew,
raw-table retention).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from gpuledger.limits import MAX_TEXT, MAX_TOKENS, money_problem, price_problem
from schemas import Budget, GpuSample, InferenceUsage, ModelEquivalent, OrgDirectory, Price

UINT16_MAX = 2**16 - 1
UINT32_MAX = 2**32 - 1
INT64_MAX = 2**63 - 1
MAX_SAMPLE_INTERVAL = timedelta(hours=1)


@dataclass(frozen=True)
class TimeWindow:
    """Event times the ledger keeps: not after ``now + future_skew``, not before ``now - max_age`` (the raw tables' TTL)."""

    future_skew: timedelta
    max_age: timedelta

    def problem(self, name: str, when: datetime, now: datetime) -> str | None:
        if when > now + self.future_skew:
            return f"{name} {when.isoformat()} is more than {self.future_skew} in the future (clock skew limit)"
        if when < now - self.max_age:
            return (
                f"{name} {when.isoformat()} is older than the raw tables' retention ({self.max_age.days} days); it would be deleted at once"
            )
        return None


def _first(problems: Iterator[str | None]) -> str | None:
    return next((p for p in problems if p), None)


def _text(name: str, value: str | None, *, required: bool = False) -> str | None:
    if required and not (value or "").strip():
        return f"{name} is empty"
    if value is not None and len(value) > MAX_TEXT:
        return f"{name} is {len(value):,} characters long (at most {MAX_TEXT:,})"
    return None


def _count(name: str, value: int, top: int) -> str | None:
    if not 0 <= value <= top:
        return f"{name} = {value} is outside 0..{top:,}"
    return None


def _finite(name: str, value: float | None, low: float | None = None, high: float | None = None) -> str | None:
    if value is None:
        return None
    if not math.isfinite(value):
        return f"{name} = {value} is not a finite number"
    if (low is not None and value < low) or (high is not None and value > high):
        return f"{name} = {value} is outside {low:g}..{high:g}" if high is not None else f"{name} = {value} is below {low:g}"
    return None


def _usage_fine(u: InferenceUsage, now: datetime, times: TimeWindow) -> bool:
    """The common case in one cheap expression (tens of thousands of events a second); the reasons are only worked out on failure."""
    return (
        bool(u.event_id.strip())
        and len(u.event_id) <= MAX_TEXT
        and len(u.key_id) <= MAX_TEXT
        and len(u.model) <= MAX_TEXT
        and (u.node is None or len(u.node) <= MAX_TEXT)
        and all(g.strip() and len(g) <= MAX_TEXT for g in u.gpu_uuids)
        and 0 <= u.prompt_tokens <= MAX_TOKENS
        and 0 <= u.cached_prompt_tokens <= MAX_TOKENS
        and 0 <= u.completion_tokens <= MAX_TOKENS
        and 0 <= u.latency_ms < math.inf
        and (u.ttft_ms is None or 0 <= u.ttft_ms < math.inf)
        and u.request_start <= u.request_end
        and now - times.max_age <= u.request_end <= now + times.future_skew
    )


def usage_problem(u: InferenceUsage, now: datetime, times: TimeWindow) -> str | None:
    """Why an InferenceUsage cannot be booked, or None."""
    if _usage_fine(u, now, times):
        return None
    return _first(
        iter(
            (
                _text("event_id", u.event_id, required=True),
                _text("key_id", u.key_id),
                _text("model", u.model),
                _text("node", u.node),
                *(_text("gpu_uuids[]", g, required=True) for g in u.gpu_uuids),
                _count("prompt_tokens", u.prompt_tokens, MAX_TOKENS),
                _count("cached_prompt_tokens", u.cached_prompt_tokens, MAX_TOKENS),
                _count("completion_tokens", u.completion_tokens, MAX_TOKENS),
                _finite("latency_ms", u.latency_ms, 0),
                _finite("ttft_ms", u.ttft_ms, 0),
                f"request_end {u.request_end.isoformat()} is before request_start {u.request_start.isoformat()}"
                if u.request_end < u.request_start
                else None,
                times.problem("request_end", u.request_end, now),
            )
        )
    )


def sample_problem(s: GpuSample, now: datetime, times: TimeWindow) -> str | None:
    """Why a GpuSample cannot be stored or priced, or None."""
    length = s.interval_end - s.interval_start
    return _first(
        iter(
            (
                _text("sample_id", s.sample_id, required=True),
                _text("gpu_uuid", s.gpu_uuid, required=True),
                _text("node", s.node, required=True),
                _text("gpu_model", s.gpu_model),
                _count("gpu_index", s.gpu_index, UINT16_MAX),
                _count("memory_used_bytes", s.memory_used_bytes, INT64_MAX),
                _count("memory_total_bytes", s.memory_total_bytes, INT64_MAX),
                _count("sm_clock_mhz", s.sm_clock_mhz, UINT32_MAX),
                _count("xid_errors", s.xid_errors, INT64_MAX),
                _count("ecc_errors_corrected", s.ecc_errors_corrected, INT64_MAX),
                _count("ecc_errors_uncorrected", s.ecc_errors_uncorrected, INT64_MAX),
                _finite("utilization_pct", s.utilization_pct, 0, 100),
                _finite("memory_utilization_pct", s.memory_utilization_pct, 0, 100),
                _finite("power_watts", s.power_watts, 0),
                _finite("energy_joules", s.energy_joules, 0),
                *(_finite("processes[].sm_utilization_pct", p.sm_utilization_pct, 0, 100) for p in s.processes),
                *(_count("processes[].gpu_memory_bytes", p.gpu_memory_bytes, INT64_MAX) for p in s.processes),
                f"interval_end {s.interval_end.isoformat()} is not after interval_start {s.interval_start.isoformat()}"
                if length <= timedelta(0)
                else None,
                f"interval of {length} is longer than {MAX_SAMPLE_INTERVAL}" if length > MAX_SAMPLE_INTERVAL else None,
                times.problem("interval_start", s.interval_start, now),
            )
        )
    )


def equivalent_record_problem(e: ModelEquivalent) -> str | None:
    """Why an API-equivalent record cannot be used: both names are needed."""
    if not e.model or not e.api_sku:
        return "model and api_sku must both be set"
    return None


def price_record_problem(p: Price) -> str | None:
    """Why a price from the prices topic cannot be used (the importer refuses these; another producer might not)."""
    if p.kind not in ("token", "gpu_hour"):
        return f"kind {p.kind!r} is not token or gpu_hour"
    if not p.sku:
        return "sku is empty"
    for name in ("input_per_mtok", "cached_input_per_mtok", "output_per_mtok", "per_hour"):
        problem = price_problem(getattr(p, name))
        if problem:
            return f"{name}: {problem}"
    return None


def org_record_problem(o: OrgDirectory) -> str | None:
    """Why a directory entry cannot be used."""
    if o.kind not in ("api_key", "namespace", "node"):
        return f"kind {o.kind!r} is not api_key, namespace or node"
    return _text("key", o.key, required=True) or _text("org", o.org, required=True)


def budget_record_problem(b: Budget) -> str | None:
    """Why a budget cannot be evaluated."""
    if not b.amount.is_finite() or b.amount <= 0:
        return f"amount {b.amount} is not a positive number"
    problem = money_problem(b.amount)
    return f"amount: {problem}" if problem else None
