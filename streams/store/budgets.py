"""Queries on the budget tables (``budgets``, ``budget_alerts``): what the evaluator and the demo read back.

Text moved unchanged from ``streams/budgets/evaluator.py`` and ``gpuledger/commands/cli.py``.
"""

from __future__ import annotations

# Every alert, in the order raised (the demo's table; the client's database).
ALERTS_RAISED = "SELECT budget_id, kind, threshold_pct, spend, budget_amount, currency, message FROM budget_alerts FINAL ORDER BY raised_at, threshold_pct"


def raised_since(database: str) -> str:
    """Ids of the alerts already raised for periods starting at ``{earliest}`` or later."""
    return f"SELECT alert_id FROM {database}.budget_alerts WHERE period_start >= {{earliest:DateTime64(6, 'UTC')}}"


def mirrored(database: str) -> str:
    """Each budget as last mirrored into ClickHouse."""
    return f"SELECT budget_id, updated_at FROM {database}.budgets FINAL"
