"""Columns of every ClickHouse table the worker writes, declared once, in insert order.

Row builders (``streams.sink.ledger_row`` and friends) produce values in this order; readers
that need a column by name look it up here instead of counting tuple positions.
"""

from __future__ import annotations

USAGE_COLUMNS = (
    "event_id", "request_start", "event_time", "key_id", "model", "backend", "deployment", "endpoint", "node",
    "gpu_uuids", "prompt_tokens", "cached_prompt_tokens", "completion_tokens", "usage_estimated", "ttft_ms", "latency_ms", "status",
    "org", "team", "project", "cost_centre", "priced_as", "price_id", "cost", "api_equivalent_cost", "api_equivalent_price_id",
    "requested_model", "route_rule", "baseline_model", "client_request_id", "trace_id", "session_id",
    "source_partition", "source_offset", "baseline_cost", "baseline_price_id",
)
SAMPLE_COLUMNS = (
    "sample_id", "node", "gpu_uuid", "gpu_index", "gpu_model", "mig_instance", "mig_parent_uuid", "mig_profile", "mig_slices",
    "mig_parent_slices", "interval_start", "interval_end",
    "utilization_pct", "memory_utilization_pct", "memory_used_bytes", "memory_total_bytes", "power_watts",
    "energy_joules", "sm_clock_mhz", "temperature_c", "xid_errors", "ecc_errors_corrected", "ecc_errors_uncorrected",
    "processes", "owner_org", "source_partition", "source_offset",
)
LEDGER_COLUMNS = (
    "line_id", "kind", "event_time", "window_seconds", "org", "team", "project", "cost_centre", "model", "key_id",
    "event_id", "node", "gpu_uuid", "price_id", "prompt_tokens", "cached_prompt_tokens", "completion_tokens",
    "window_tokens", "share_tokens", "gpu_seconds", "utilization_pct", "cost", "currency", "gpu_model", "workload", "basis", "idle_policy",
    "mig_profile", "parent_gpu_uuid", "adjusts_line_id", "adjusts_window", "version", "is_deleted",
)
BUDGET_COLUMNS = ("budget_id", "org", "team", "project", "model", "period", "timezone", "amount", "currency", "thresholds", "mode", "updated_at", "version", "is_deleted")
ALERT_COLUMNS = (
    "alert_id", "budget_id", "scope", "kind", "threshold_pct", "mode", "period_start", "period_end", "spend", "budget_amount",
    "currency", "raised_at", "projected_breach", "top_models", "top_keys", "message",
)
