"""Typed records mirroring the current version of each Avro schema.

Plain frozen dataclasses: cheap to build at tens of thousands per second, and
``Codec`` maps them to and from Avro. Money is ``Decimal``; time is aware UTC ``datetime``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuProcess:
    pid: int
    command: str | None = None
    user: str | None = None
    container_id: str | None = None
    pod: str | None = None
    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    gpu_memory_bytes: int = 0
    sm_utilization_pct: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuSample:
    sample_id: str
    node: str
    gpu_uuid: str
    gpu_index: int
    gpu_model: str
    interval_start: datetime
    interval_end: datetime
    utilization_pct: float
    memory_used_bytes: int
    memory_total_bytes: int
    power_watts: float
    mig_instance: str | None = None
    mig_parent_uuid: str | None = None
    mig_profile: str | None = None
    mig_slices: int = 0
    mig_parent_slices: int = 0
    memory_utilization_pct: float = 0.0
    energy_counter_mj: int | None = None
    energy_joules: float = 0.0
    sm_clock_mhz: int = 0
    temperature_c: int = 0
    xid_errors: int = 0
    ecc_errors_corrected: int = 0
    ecc_errors_uncorrected: int = 0
    processes: list[GpuProcess] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class InferenceUsage:
    event_id: str
    request_start: datetime
    request_end: datetime
    key_id: str
    model: str
    backend: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    status: str
    deployment: str = ""
    node: str | None = None
    gpu_uuids: list[str] = field(default_factory=list)
    cached_prompt_tokens: int = 0
    ttft_ms: float | None = None
    endpoint: str = ""
    usage_estimated: bool = False
    requested_model: str = ""
    route_rule: str = ""
    baseline_model: str = ""
    client_request_id: str = ""
    trace_id: str = ""
    session_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeEvent:
    """A business outcome and the requests behind it (by usage event id, client request id, trace or session)."""

    outcome_id: str
    kind: str
    org: str
    occurred_at: datetime
    success: bool
    team: str = ""
    project: str = ""
    value: Decimal | None = None
    currency: str = ""
    request_ids: list[str] = field(default_factory=list)
    trace_id: str = ""
    session_id: str = ""
    key_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class OrgDirectory:
    kind: str
    key: str
    org: str
    team: str = ""
    project: str = ""
    cost_centre: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Price:
    sku: str
    kind: str
    currency: str
    effective_from: datetime
    input_per_mtok: Decimal | None = None
    cached_input_per_mtok: Decimal | None = None
    output_per_mtok: Decimal | None = None
    per_hour: Decimal | None = None

    @property
    def price_id(self) -> str:
        """Stable name of this price version, quoted on every ledger line it produced."""
        return f"{self.sku}@{self.effective_from.isoformat()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelEquivalent:
    """The API SKU a self-hosted model would replace, from ``effective_from`` on."""

    model: str
    api_sku: str
    effective_from: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerLine:
    line_id: str
    kind: str
    event_time: datetime
    org: str
    team: str
    project: str
    cost_centre: str
    model: str
    price_id: str
    gpu_seconds: Decimal
    cost: Decimal
    currency: str
    window_seconds: int = 0
    key_id: str = ""
    event_id: str = ""
    node: str = ""
    gpu_uuid: str = ""
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    window_tokens: int = 0
    share_tokens: int = 0
    utilization_pct: float = 0.0
    gpu_model: str = ""
    workload: str = ""
    basis: str = ""
    idle_policy: str = ""
    mig_profile: str = ""
    parent_gpu_uuid: str = ""
    adjusts_line_id: str = ""
    adjusts_window: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SpendShare:
    """One model's or key's spend within a budget period (what drives an alert)."""

    name: str
    spend: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetAlert:
    alert_id: str
    budget_id: str
    scope: str
    kind: str
    period_start: datetime
    period_end: datetime
    spend: Decimal
    budget_amount: Decimal
    currency: str
    raised_at: datetime
    threshold_pct: int = 0
    projected_breach: datetime | None = None
    message: str = ""
    top_models: list[SpendShare] = field(default_factory=list)
    top_keys: list[SpendShare] = field(default_factory=list)
    mode: str = "soft"
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    budget_id: str
    org: str
    period: str
    amount: Decimal
    currency: str
    updated_at: datetime
    team: str = ""
    project: str = ""
    model: str | None = None
    timezone: str = "UTC"
    thresholds: list[int] = field(default_factory=lambda: [50, 80, 100])
    mode: str = "soft"
    outcome_kind: str = ""

    @property
    def scope(self) -> str:
        """``org[/team[/project]]``, plus `` model=<m>`` for a per-model budget, `` per successful <kind>`` for a unit budget."""
        path = "/".join(p for p in (self.org, self.team, self.project) if p)
        path = f"{path} model={self.model}" if self.model else path
        return f"{path} per successful {self.outcome_kind}" if self.outcome_kind else path


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetStatus:
    budget_id: str
    org: str
    mode: str
    period_start: datetime
    period_end: datetime
    spend: Decimal
    amount: Decimal
    currency: str
    exhausted: bool
    evaluated_at: datetime
    team: str = ""
    project: str = ""
    model: str | None = None
