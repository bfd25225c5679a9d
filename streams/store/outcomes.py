"""Outcome queries: ``request_outcome_costs`` (coverage) and ``outcome_costs`` (figures per outcome group).

``label`` is the SQL of a group's label and ``keys`` the GROUP BY keys (``gpuledger.commands.outcomes.LABELS``);
``since`` and ``until`` are bound as ``Date`` parameters (UTC days, [since, until)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.budgets.spend import Probe


def coverage_sql(db: str, label: str, keys: str) -> str:
    """(group, linked cost, request cost) of the requests in the range, grouped by an org, team or project label."""
    return (
        f"SELECT {label}, sumIf(cost, outcome_id != ''), sum(cost) FROM {db}.request_outcome_costs "
        f"WHERE event_time >= {{since:Date}} AND event_time < {{until:Date}} GROUP BY {keys}"
    )


def coverage_by_kind_sql(db: str) -> str:
    """(outcome kind, linked cost, request cost of the org/team/project scopes the kind occurs in) of the requests in the range."""
    return f"""
        WITH r AS (SELECT org, team, project, outcome_kind, cost FROM {db}.request_outcome_costs
                   WHERE event_time >= {{since:Date}} AND event_time < {{until:Date}}),
             totals AS (SELECT org, team, project, sum(cost) AS total FROM r GROUP BY org, team, project),
             kinds AS (SELECT outcome_kind AS kind, org, team, project, sum(cost) AS linked FROM r WHERE outcome_kind != ''
                       GROUP BY kind, org, team, project)
        SELECT k.kind, sum(k.linked), sum(t.total) FROM kinds AS k INNER JOIN totals AS t USING (org, team, project) GROUP BY k.kind"""


def outcome_figures_sql(db: str, label: str, keys: str) -> str:
    """Per group: currency, outcomes, successes, requests, cost, value and valued outcomes, ordered by group."""
    return (
        f"SELECT {label} AS g, anyIf(cost_currency, cost_currency != ''), count(), countIf(success), sum(requests), sum(cost), "
        f"sum(value), countIf(value IS NOT NULL) FROM {db}.outcome_costs "
        f"WHERE occurred_at >= {{since:Date}} AND occurred_at < {{until:Date}} GROUP BY {keys} ORDER BY g"
    )


def _condition(probe: Probe, i: int, params: dict[str, Any]) -> str:
    b = probe.budget
    params.update({f"k{i}": b.outcome_kind, f"o{i}": b.org, f"c{i}": b.currency, f"ps{i}": probe.period_start, f"pe{i}": probe.period_end})
    parts = [
        f"kind = {{k{i}:String}}",
        f"org = {{o{i}:String}}",
        f"cost_currency IN ({{c{i}:String}}, '')",
        f"occurred_at >= {{ps{i}:DateTime64(6, 'UTC')}}",
        f"occurred_at < {{pe{i}:DateTime64(6, 'UTC')}}",
    ]
    for column, value in (("team", b.team), ("project", b.project)):
        if value:
            params[f"{column}{i}"] = value
            parts.append(f"{column} = {{{column}{i}:String}}")
    return " AND ".join(parts)


def unit_figures_sql(db: str, probes: Sequence[Probe]) -> tuple[str, dict[str, Any]]:
    """One scan of ``outcome_costs``: each unit budget probe's cost and successes in its period (two columns a probe, in order),
    and the parameters it binds (the values travel bound, never spliced in)."""
    params: dict[str, Any] = {"earliest": min(p.period_start for p in probes)}
    columns = []
    for i, probe in enumerate(probes):
        condition = _condition(probe, i, params)
        columns += [f"sumIf(cost, {condition})", f"countIf(success AND {condition})"]
    sql = f"SELECT {', '.join(columns)} FROM {db}.outcome_costs WHERE occurred_at >= {{earliest:DateTime64(6, 'UTC')}}"
    return sql, params
