"""The dashboard's SQL builders, without a database: which table each reads, that the caller's WHERE clause and
pieces land where they should, and that ClickHouse placeholders are left for the parameters."""

from __future__ import annotations

from streams.store import dashboard as sql

WHERE = "day >= {since:Date} AND day < {until:Date}"


def test_visible_orgs() -> None:
    assert sql.visible_orgs("gl") == "SELECT DISTINCT org FROM gl.spend_daily ORDER BY org"


def test_period_table_labels_teams_and_keeps_placeholders() -> None:
    org = sql.period_table("gl", WHERE, ("org",))
    team = sql.period_table("gl", WHERE, ("org", "team"))
    assert org.startswith("SELECT org AS grp, currency, sumIf(total_cost, day < {start:Date}), sumIf(total_cost, day >= {start:Date})")
    assert f" FROM gl.spend_by_org_daily WHERE {WHERE} GROUP BY org, currency ORDER BY 4 DESC, grp" in org
    assert team.startswith("SELECT concat(org, '/', team) AS grp")
    assert "GROUP BY org, team, currency" in team


def test_drill_reads_keys_from_the_spend_daily_rollup() -> None:
    keys = sql.drill_keys("gl", WHERE)
    assert "FROM (SELECT *, if(llm_model != '', llm_model, gpu_model) AS model FROM gl.spend_daily)" in keys
    assert keys.endswith(f"WHERE {WHERE} GROUP BY key_id, currency ORDER BY 7 DESC, key_id")
    level = sql.drill_level("gl", WHERE, "project")
    assert level.startswith("SELECT project, currency, sum(api_cost)")
    assert level.endswith("FROM gl.spend_by_org_daily WHERE " + WHERE + " GROUP BY project, currency ORDER BY 7 DESC, project")


def test_lines_listing_picks_by_primary_key_with_an_integer_limit() -> None:
    text = sql.lines_listing("gl", "line_id, cost", "org = {f_org:String}", 500)
    assert text.startswith("SELECT line_id, cost FROM gl.ledger FINAL WHERE org = {f_org:String} AND (toDate(event_time), line_id) IN (")
    assert "ORDER BY event_time DESC, line_id LIMIT 500)" in text
    assert text.endswith(" ORDER BY event_time DESC, line_id")


def test_newest_hours_reads_spend_hourly() -> None:
    text = sql.newest_hours("gl", "hour >= {since:Date}")
    assert "FROM gl.spend_hourly)" in text
    assert text.endswith("WHERE hour >= {since:Date} GROUP BY hour ORDER BY hour DESC")


def test_alerts_derive_org_from_scope() -> None:
    text = sql.alert_history("gl", "org = {f_org:String}", ["raised_at", "budget_id"])
    assert text == (
        "SELECT raised_at, budget_id FROM (SELECT *, splitByChar('/', splitByChar(' ', scope)[1])[1] AS org"
        " FROM gl.budget_alert_history) WHERE org = {f_org:String} ORDER BY raised_at DESC LIMIT 1000"
    )
    assert "AND kind = 'forecast' AND period_end > now64() GROUP BY budget_id" in sql.forecast_breaches("gl", "1")


def test_gpu_grouped_rows_and_totals_share_a_source() -> None:
    rows = sql.grouped_rows("gl", WHERE, "kind = 'idle'", ("node", "org"), 100)
    totals = sql.grouped_totals("gl", WHERE, "kind = 'idle'")
    source = f"FROM gl.gpu_daily WHERE {WHERE} AND kind = 'idle'"
    assert rows == (
        f"SELECT node, org, currency, sum(lines), sum(gpu_seconds), sum(cost) {source}"
        " GROUP BY node, org, currency ORDER BY sum(cost) DESC, node, org LIMIT 100"
    )
    assert totals == f"SELECT currency, sum(lines), sum(gpu_seconds), sum(cost) {source} GROUP BY currency ORDER BY currency"
    assert sql.heatmap("gl", ["a", "b"]).endswith("FROM gl.gpu_utilization_hourly WHERE a AND b ORDER BY node, gpu_uuid, hour")


def test_slot_quotes_names_and_binds_the_view() -> None:
    assert "{db:String}" in sql.view_columns() and "{view:String}" in sql.view_columns()
    assert sql.view_rows("gl", "routing_savings_daily", ["org", "day"], "1", 500) == (
        "SELECT `org`, `day` FROM gl.`routing_savings_daily` WHERE 1 LIMIT 500"
    )
