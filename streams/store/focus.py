"""FOCUS export queries: the ledger's lines in [start, end) (``DateTime64(6)`` parameters), with their usage events."""

from __future__ import annotations

# Every line of a GPU window is priced at the window's one rate, so its cost share is its share of the window's
# GPU-hours; the window is the (GPU, window start) group of gpu and idle lines. API lines join their usage event.
LINES_SQL = """
SELECT l.line_id, l.kind, l.event_time, l.window_seconds, l.org, l.team, l.project, l.cost_centre, l.model, l.key_id,
       l.node, l.gpu_uuid, l.gpu_model, l.mig_profile, l.price_id, l.prompt_tokens, l.cached_prompt_tokens,
       l.completion_tokens, l.window_tokens, l.share_tokens, l.gpu_seconds, l.utilization_pct, l.cost, l.currency,
       l.workload, l.basis, l.idle_policy, l.adjusts_line_id, l.window_cost,
       u.request_start, u.usage_estimated, u.api_equivalent_cost
FROM (
    SELECT *, if(kind IN ('gpu', 'idle'), sum(cost) OVER (PARTITION BY kind IN ('gpu', 'idle'), gpu_uuid, event_time), cost) AS window_cost,
           if(kind = 'api', event_id, '') AS usage_key
    FROM {db}.ledger FINAL
    WHERE event_time >= {start:DateTime64(6)} AND event_time < {end:DateTime64(6)} AND is_deleted = 0
) AS l
LEFT JOIN (
    SELECT event_id, request_start, usage_estimated, api_equivalent_cost FROM {db}.usage_events FINAL
    WHERE event_time >= {start:DateTime64(6)} AND event_time < {end:DateTime64(6)}
) AS u ON u.event_id = l.usage_key
ORDER BY l.event_time, l.line_id
SETTINGS join_use_nulls = 1, max_block_size = 4096
"""
COUNT_SQL = "SELECT count(), sum(cost) FROM {db}.ledger FINAL WHERE event_time >= {start:DateTime64(6)} AND event_time < {end:DateTime64(6)} AND is_deleted = 0"


def lines_sql(db: str) -> str:
    """The live ledger lines in [start, end), each with its GPU window's cost and (API lines) its usage event, in time order."""
    return LINES_SQL.replace("{db}", db)


def count_sql(db: str) -> str:
    """How many live ledger lines [start, end) holds and what they cost."""
    return COUNT_SQL.replace("{db}", db)
