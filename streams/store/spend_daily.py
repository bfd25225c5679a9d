"""Queries on the ``spend_daily`` rollup (days in the reporting time zone)."""

from __future__ import annotations

from typing import Literal

PERIOD_START = {"month": "toStartOfMonth(day)", "week": "toMonday(day)"}
TOKEN_LINE = "(kind IN ('api', 'gpu') AND llm_model != '')"


def bridge_inputs_sql(db: str, dims: str, period: Literal["month", "week"]) -> str:
    """Per group, currency, period and token model: tokens and spend of token lines, and spend without tokens.

    ``dims`` is the SQL of the group (``''`` for the whole company); binds ``first`` and ``last`` (``Date``, [first, last)).
    """
    return (
        f"SELECT {dims} AS grp, currency, {PERIOD_START[period]} AS period, if({TOKEN_LINE}, llm_model, '') AS token_model,"
        f" sumIf(prompt_tokens + completion_tokens, {TOKEN_LINE}), sumIf(cost, {TOKEN_LINE}), sumIf(cost, NOT {TOKEN_LINE})"
        f" FROM {db}.spend_daily WHERE day >= {{first:Date}} AND day < {{last:Date}}"
        " GROUP BY grp, currency, period, token_model ORDER BY grp, currency, period, token_model"
    )


def spend_by_org_sql(db: str) -> str:
    """API, GPU, idle and total spend per org and currency from ``spend_by_org_daily``; binds ``since``, ``until`` (``Date``)."""
    return (
        f"SELECT org, currency, sum(api_cost), sum(gpu_cost), sum(idle_cost), sum(total_cost) FROM {db}.spend_by_org_daily"
        " WHERE day >= {since:Date} AND day < {until:Date} GROUP BY org, currency ORDER BY sum(total_cost) DESC, org, currency"
    )


def monthly_bridge_by_org_sql(db: str) -> str:
    """The ``spend_bridge`` view's month bridge per org and currency for the month starting at ``since`` (``Date``)."""
    return (
        f"SELECT org, currency, spend_before, spend_after, volume, price, mix, other, jevons FROM {db}.spend_bridge"
        " WHERE period_kind = 'month' AND period = {since:Date} ORDER BY org, currency"
    )
