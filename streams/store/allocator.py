"""The GPU allocator's queries: what changed since its last pass, the inputs of those windows, what is booked.

Text moved unchanged from ``streams/allocator.py`` (``self.db`` / ``self.window`` became arguments).
"""

from __future__ import annotations

from streams.store.tables import LEDGER_LINE_COLUMNS

NOW = "SELECT now64(3)"


def dirty_units(db: str, window: int) -> str:
    """(unit, window start) of samples and GPU-served usage stored since ``{since}``; a MIG instance's unit is its parent."""
    return f"""
            SELECT unit, w FROM (
                SELECT if(mig_parent_uuid != '', mig_parent_uuid, gpu_uuid) AS unit,
                       toStartOfInterval(interval_start, INTERVAL {window} SECOND) AS w
                FROM {db}.gpu_samples WHERE ingested_at >= {{since:DateTime64(3)}}
                UNION ALL
                SELECT arrayJoin(gpu_uuids) AS unit, toStartOfInterval(event_time, INTERVAL {window} SECOND) AS w
                FROM {db}.usage_events WHERE priced_as = 'gpu' AND ingested_at >= {{since:DateTime64(3)}}
            ) GROUP BY unit, w"""


def mig_parents(db: str) -> str:
    """The parent GPU of each MIG instance in ``{gpus}``."""
    return (
        f"SELECT gpu_uuid, any(mig_parent_uuid) FROM {db}.gpu_samples "
        "WHERE gpu_uuid IN {gpus:Array(String)} AND mig_parent_uuid != '' GROUP BY gpu_uuid"
    )


def mig_instances(db: str) -> str:
    """MIG instances of the parents in ``{units}`` with samples in [start, end) (a bloom filter on mig_parent_uuid keeps it cheap)."""
    return (
        f"SELECT DISTINCT gpu_uuid FROM {db}.gpu_samples WHERE mig_parent_uuid IN {{units:Array(String)}} "
        "AND interval_start >= {start:DateTime64(6)} AND interval_start < {end:DateTime64(6)}"
    )


def samples(db: str) -> str:
    """Deduplicated samples of the GPUs in ``{gpus}`` in [start, end), in time order."""
    return f"""
            SELECT gpu_uuid, interval_start, dateDiff('microsecond', interval_start, interval_end), utilization_pct, processes,
                   node, gpu_model, mig_parent_uuid, mig_profile, mig_slices, mig_parent_slices
            FROM {db}.gpu_samples FINAL
            WHERE gpu_uuid IN {{gpus:Array(String)}}
              AND interval_start >= {{start:DateTime64(6)}} AND interval_start < {{end:DateTime64(6)}}
            ORDER BY gpu_uuid, interval_start"""


def token_groups(db: str, window: int) -> str:
    """Metered tokens per GPU window and caller group; a request's tokens on its first GPU only."""
    return f"""
            SELECT gpu, toStartOfInterval(event_time, INTERVAL {window} SECOND) AS w, org, team, project, cost_centre, model, key_id,
                   sum(prompt_tokens + completion_tokens), sumIf(prompt_tokens, gpu = gpu_uuids[1]),
                   sumIf(cached_prompt_tokens, gpu = gpu_uuids[1]), sumIf(completion_tokens, gpu = gpu_uuids[1])
            FROM {db}.usage_events FINAL ARRAY JOIN gpu_uuids AS gpu
            WHERE priced_as = 'gpu' AND gpu IN {{gpus:Array(String)}}
              AND event_time >= {{start:DateTime64(6)}} AND event_time < {{end:DateTime64(6)}}
            GROUP BY gpu, w, org, team, project, cost_centre, model, key_id"""


def booked_lines(db: str) -> str:
    """Stored gpu and idle lines of the GPUs in ``{gpus}`` in [start, end), every ledger column but version and tombstone."""
    return f"""
            SELECT {", ".join(LEDGER_LINE_COLUMNS)}
            FROM {db}.ledger FINAL
            WHERE kind IN ('gpu', 'idle') AND gpu_uuid IN {{gpus:Array(String)}}
              AND event_time >= {{start:DateTime64(6)}} AND event_time < {{end:DateTime64(6)}}"""


def prior_adjustments(db: str) -> str:
    """Count and sum of the adjustment lines already booked against each line in ``{ids}``."""
    return (
        f"SELECT adjusts_line_id, count(), sum(cost) FROM {db}.ledger FINAL "
        "WHERE kind = 'adjustment' AND adjusts_line_id IN {ids:Array(String)} GROUP BY adjusts_line_id"
    )
