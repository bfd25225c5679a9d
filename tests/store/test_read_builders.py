"""Read-side SQL builders moved out of the commands: each names its database, table and bound placeholders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from schemas import Budget
from streams.budgets.spend import Probe
from streams.store import focus, outcomes, spend, spend_daily, unit_costs


def test_tokens_by_org_model_read_the_usage_rollup_and_the_usage_events_for_the_rest() -> None:
    now = datetime(2026, 10, 5, 12, 30, tzinfo=UTC)
    params: dict[str, object] = {"since": datetime(2026, 10, 1, tzinfo=UTC), "until": now}
    sql = spend.tokens_by_org_model_sql("gl", [datetime(2026, 10, 5, 9, tzinfo=UTC)], now, params)
    rollup, events = sql.split(" UNION ALL ")
    assert "FROM gl.usage_hourly WHERE hour >= {earliest:" in rollup and "hour NOT IN {ledger_hours:" in rollup
    assert "FROM gl.usage_events FINAL" in events and events.count(" OR ") == 1  # the open hour on, and the dirty hour
    assert "{since:DateTime64(6)}" in sql and "{until:DateTime64(6)}" in sql
    assert sql.endswith("GROUP BY org, model") and params["earliest"] == params["since"]


def test_gpu_spend_by_team_reads_the_gpu_rollup_and_the_ledger_less_api_lines() -> None:
    params: dict[str, object] = {"earliest": datetime(1970, 1, 2, tzinfo=UTC)}
    sql = spend.gpu_spend_by_team_sql("gl", [], datetime(2026, 10, 5, 12, 30, tzinfo=UTC), params)
    assert "FROM gl.gpu_hourly WHERE hour >= {earliest:" in sql
    assert "FROM gl.ledger FINAL WHERE kind != 'api' AND event_time >= {earliest:" in sql
    assert sql.endswith("GROUP BY org, team HAVING sum(lines) != 0 ORDER BY org, team")


def test_unit_costs_reads_the_daily_view_between_bound_dates() -> None:
    sql = unit_costs.unit_costs_sql("gl", "org", "org, llm_model, currency")
    assert "FROM gl.unit_costs_daily WHERE day >= {since:Date} AND day < {until:Date}" in sql
    assert sql.startswith("SELECT org, llm_model")
    assert sql.endswith("GROUP BY org, llm_model, currency ORDER BY org, llm_model, currency")


def test_comparisons_read_the_live_view_or_its_rollup() -> None:
    live = unit_costs.comparisons_sql("gl", "team", "team, llm_model, currency")
    assert "FROM gl.self_hosted_vs_api_daily WHERE day >= {since:Date} AND day < {until:Date}" in live
    rollup = unit_costs.comparisons_sql("gl", "team", "team, llm_model, currency", rollup=True)
    assert "FROM gl.self_hosted_vs_api_rollup " in rollup


def test_serving_hours_come_from_the_ledger_or_the_rollup() -> None:
    live = unit_costs.serving_hours_sql("gl", "org", "org, llm_model, currency")
    assert "FROM gl.ledger FINAL WHERE kind = 'gpu' AND basis = 'tokens'" in live
    assert "event_time >= {since:Date} AND event_time < {until:Date}" in live
    assert live.endswith("GROUP BY org, llm_model, currency")
    rollup = unit_costs.serving_hours_sql("gl", "org", "org, llm_model, currency", rollup=True)
    assert "FROM gl.serving_hours WHERE hour >= {since:Date} AND hour < {until:Date}" in rollup


def test_trend_inputs_read_spend_daily_by_period_between_bound_dates() -> None:
    sql = spend_daily.bridge_inputs_sql("gl", "org", "week")
    assert sql.startswith("SELECT org AS grp, currency, toMonday(day) AS period")
    assert "FROM gl.spend_daily WHERE day >= {first:Date} AND day < {last:Date}" in sql
    assert "toStartOfMonth(day) AS period" in spend_daily.bridge_inputs_sql("gl", "''", "month")


def test_cfo_summary_reads_spend_by_org_daily_and_the_month_bridge() -> None:
    orgs = spend_daily.spend_by_org_sql("gl")
    assert "FROM gl.spend_by_org_daily WHERE day >= {since:Date} AND day < {until:Date}" in orgs
    bridge = spend_daily.monthly_bridge_by_org_sql("gl")
    assert "FROM gl.spend_bridge WHERE period_kind = 'month' AND period = {since:Date}" in bridge


def test_outcome_coverage_reads_request_outcome_costs_between_bound_dates() -> None:
    by_org = outcomes.coverage_sql("gl", "org", "org")
    assert "FROM gl.request_outcome_costs WHERE event_time >= {since:Date} AND event_time < {until:Date} GROUP BY org" in by_org
    by_kind = outcomes.coverage_by_kind_sql("gl")
    assert "FROM gl.request_outcome_costs" in by_kind and "{since:Date}" in by_kind and "{until:Date}" in by_kind
    assert "GROUP BY k.kind" in by_kind


def test_outcome_figures_read_outcome_costs_between_bound_dates() -> None:
    sql = outcomes.outcome_figures_sql("gl", "team", "team")
    assert "FROM gl.outcome_costs WHERE occurred_at >= {since:Date} AND occurred_at < {until:Date} GROUP BY team ORDER BY g" in sql


def test_focus_lines_read_the_ledger_and_usage_events_between_bound_times() -> None:
    sql = focus.lines_sql("gl")
    assert "FROM gl.ledger FINAL" in sql and "FROM gl.usage_events FINAL" in sql
    assert "{db}" not in sql
    assert sql.count("{start:DateTime64(6)}") == 2 and sql.count("{end:DateTime64(6)}") == 2


def test_focus_count_reads_live_ledger_lines_between_bound_times() -> None:
    sql = focus.count_sql("gl")
    assert sql.startswith("SELECT count(), sum(cost) FROM gl.ledger FINAL")
    assert "{start:DateTime64(6)}" in sql and "{end:DateTime64(6)}" in sql and "is_deleted = 0" in sql


def test_unit_budget_figures_read_outcome_costs_with_every_value_bound() -> None:
    start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    scoped = Budget(
        budget_id="u",
        org="o'; DROP TABLE x --",
        team="t1",
        period="month",
        amount=Decimal(1),
        currency="USD",
        updated_at=end,
        outcome_kind="ticket",
    )
    whole = Budget(budget_id="v", org="acme", period="month", amount=Decimal(1), currency="EUR", updated_at=end, outcome_kind="lead")
    sql, params = outcomes.unit_figures_sql("gl", [Probe(scoped, start, end), Probe(whole, start - timedelta(days=30), end)])
    assert "FROM gl.outcome_costs WHERE occurred_at >= {earliest:DateTime64(6, 'UTC')}" in sql
    assert "DROP" not in sql and params["o0"] == scoped.org and params["team0"] == "t1" and "team1" not in params
    assert "kind = {k1:String}" in sql and "cost_currency IN ({c1:String}, '')" in sql and "{pe1:DateTime64(6, 'UTC')}" in sql
    assert params["earliest"] == start - timedelta(days=30)
    assert sql.count("sumIf(cost, ") == 2 and sql.count("countIf(success AND ") == 2
