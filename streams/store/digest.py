"""The figures of one team's weekly digest, read from ClickHouse over exact instants [start, end).

Spend and top models come from ``ledger FINAL`` (every cost line: API, GPU shares, idle, adjustments);
routing savings from ``routing_savings_requests`` (migration 0013); cost per outcome from the outcomes
view when one exists (it is optional: a tree without it, or with another shape, gives no section).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import structlog
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

log = structlog.get_logger()


@dataclass(frozen=True)
class Amount:
    """A name (a model, an outcome kind) with a sum of money."""

    name: str
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class Savings:
    requests: int
    unpriced_requests: int
    actual_cost: Decimal
    counterfactual_cost: Decimal
    savings: Decimal


@dataclass(frozen=True)
class TeamWeek:
    spend: list[Amount]  # per currency, name = ""
    top_models: list[Amount]
    savings: Savings
    cost_per_success: list[Amount] | None  # per outcome kind; None: no outcomes view


def team_week(client: Client, db: str, org: str, team: str, start: datetime, end: datetime, outcomes_view: str, top: int = 5) -> TeamWeek:
    """One team's spend, top models, routing savings and (where the view exists) cost per successful outcome."""
    params = {"org": org, "team": team, "start": start, "end": end}
    scope = "org = {org:String} AND team = {team:String} AND event_time >= {start:DateTime64(6)} AND event_time < {end:DateTime64(6)}"
    spend = client.query(
        f"SELECT currency, sum(cost) FROM {db}.ledger FINAL WHERE {scope} GROUP BY currency ORDER BY currency", parameters=params
    ).result_rows
    models = client.query(
        f"SELECT model, currency, sum(cost) AS c FROM {db}.ledger FINAL WHERE {scope} AND (kind = 'api' OR basis = 'tokens') "
        f"GROUP BY model, currency ORDER BY c DESC, model LIMIT {int(top)}",
        parameters=params,
    ).result_rows
    n, unpriced, actual, counterfactual, saved = client.query(
        f"SELECT count(), countIf(isNull(savings)), sumIf(assumeNotNull(actual_cost), isNotNull(savings)), "
        f"sumIf(assumeNotNull(counterfactual_cost), isNotNull(savings)), sumIf(assumeNotNull(savings), isNotNull(savings)) "
        f"FROM {db}.routing_savings_requests WHERE {scope}",
        parameters=params,
    ).result_rows[0]
    return TeamWeek(
        spend=[Amount("", Decimal(c), cur) for cur, c in spend],
        top_models=[Amount(m, Decimal(c), cur) for m, cur, c in models],
        savings=Savings(int(n), int(unpriced), Decimal(actual), Decimal(counterfactual), Decimal(saved)),
        cost_per_success=_cost_per_success(client, db, outcomes_view, params),
    )


def _cost_per_success(client: Client, db: str, view: str, params: dict[str, object]) -> list[Amount] | None:
    """Cost per successful outcome per kind: the kind's linked cost / its successes (days in UTC); None without the view."""
    exists = client.query(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {view:String}", parameters={"db": db, "view": view}
    ).result_rows[0][0]
    if not exists:
        return None
    try:
        rows = client.query(
            f"SELECT kind, sum(cost), sum(successes) FROM {db}.`{view}` WHERE org = {{org:String}} AND team = {{team:String}} "
            f"AND day >= toDate({{start:DateTime64(6)}}) AND day < toDate({{end:DateTime64(6)}}) GROUP BY kind ORDER BY kind",
            parameters=params,
        ).result_rows
    except ClickHouseError as exc:  # a view of another shape: the section is left out, the digest still goes
        log.warning("digest: cost per outcome left out, the outcomes view has another shape", view=view, error=str(exc)[:200])
        return None
    return [Amount(kind, Decimal(cost) / successes, "") for kind, cost, successes in rows if successes]
