"""Unit-cost queries: ``unit_costs_daily`` and the self-hosted vs API views (live) or their rollups (migration 0015).

``label`` is the SQL of a group's label and ``keys`` the GROUP BY keys (``gpuledger.commands.unit_costs.grouping``);
``since`` and ``until`` are bound as ``Date`` parameters.
"""

from __future__ import annotations

# Where comparisons read: the live views (the CLI, always current) or the rollups of migration 0015 (the dashboard, fast).
COMPARISON_SOURCES = {
    False: (
        "self_hosted_vs_api_daily",
        (
            "model AS llm_model, currency, uniqExact(toStartOfHour(event_time)) FROM {db}.ledger FINAL"
            " WHERE kind = 'gpu' AND basis = 'tokens' AND event_time >= {{since:Date}} AND event_time < {{until:Date}}"
        ),
    ),
    True: (
        "self_hosted_vs_api_rollup",
        "llm_model, currency, uniqExact(hour) FROM {db}.serving_hours WHERE hour >= {{since:Date}} AND hour < {{until:Date}}",
    ),
}


def unit_costs_sql(db: str, label: str, keys: str) -> str:
    """Tokens, usage and allocation cost per group and LLM from ``unit_costs_daily``."""
    return (
        f"SELECT {label}, llm_model, any(hosting), sum(tokens), sum(usage_cost), sum(allocation_cost), currency "
        f"FROM {db}.unit_costs_daily WHERE day >= {{since:Date}} AND day < {{until:Date}} "
        f"GROUP BY {keys} ORDER BY {keys}"
    )


def serving_hours_sql(db: str, label: str, keys: str, rollup: bool = False) -> str:
    """Distinct hours each group's LLM served tokens on GPUs: from the ledger, or the ``serving_hours`` rollup."""
    serving = COMPARISON_SOURCES[rollup][1]
    return f"SELECT {label}, {serving.format(db=db)} GROUP BY {keys}"


def comparisons_sql(db: str, label: str, keys: str, rollup: bool = False) -> str:
    """Self-hosted cost against the API equivalent per group and LLM: the live view, or its rollup."""
    view = COMPARISON_SOURCES[rollup][0]
    return (
        f"SELECT {label}, llm_model, any(hosting), sum(tokens), sum(usage_cost), sum(allocation_cost), sum(api_equivalent_cost), "
        f"sum(requests_without_equivalent), currency FROM {db}.{view} WHERE day >= {{since:Date}} AND day < {{until:Date}} "
        f"GROUP BY {keys} ORDER BY {keys}"
    )
