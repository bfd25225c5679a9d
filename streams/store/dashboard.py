"""The dashboard's SQL text, built without a database: each builder takes the database name and the pieces the
caller has already built (``gpuledger.ui.queries.scope()``'s WHERE clause, a level, a limit) and returns the query,
with ClickHouse ``{name:Type}`` placeholders left for the caller's parameters."""

from __future__ import annotations

# spend_daily or spend_hourly with spend_by_org_daily's one model name per row (the LLM, else the GPU): the same filters apply
SPEND_ROLLUP = "(SELECT *, if(llm_model != '', llm_model, gpu_model) AS model FROM {db}.{table})"


def visible_orgs(db: str) -> str:
    return f"SELECT DISTINCT org FROM {db}.spend_daily ORDER BY org"


def period_table(db: str, where: str, dims: tuple[str, ...]) -> str:
    label = "concat(org, '/', team)" if len(dims) > 1 else "org"
    return (
        f"SELECT {label} AS grp, currency, sumIf(total_cost, day < {{start:Date}}), sumIf(total_cost, day >= {{start:Date}})"
        f" FROM {db}.spend_by_org_daily WHERE {where} GROUP BY {', '.join(dims)}, currency ORDER BY 4 DESC, grp"
    )


def jevons_spend(db: str, where: str) -> str:
    return f"SELECT toStartOfMonth(day) AS m, currency, sum(total_cost) FROM {db}.spend_by_org_daily WHERE {where} GROUP BY m, currency"


def jevons_units(db: str, where: str) -> str:
    return (
        f"SELECT toStartOfMonth(day) AS m, currency, sum(tokens), sum(usage_cost), sum(allocation_cost) FROM {db}.self_hosted_vs_api_rollup"
        f" WHERE {where} GROUP BY m, currency"
    )


def drill_keys(db: str, where: str) -> str:
    return (
        f"SELECT key_id, currency, sumIf(cost, kind = 'api'), sumIf(cost, kind = 'gpu'), sumIf(cost, kind = 'idle'),"
        f" sumIf(cost, kind = 'adjustment'), sum(cost), sum(prompt_tokens + completion_tokens)"
        f" FROM {SPEND_ROLLUP.format(db=db, table='spend_daily')} WHERE {where} GROUP BY key_id, currency ORDER BY 7 DESC, key_id"
    )


def drill_level(db: str, where: str, level: str) -> str:
    return (
        f"SELECT {level}, currency, sum(api_cost), sum(gpu_cost), sum(idle_cost), sum(adjustment_cost), sum(total_cost), sum(tokens)"
        f" FROM {db}.spend_by_org_daily WHERE {where} GROUP BY {level}, currency ORDER BY 7 DESC, {level}"
    )


def lines_per_day(db: str, where: str) -> str:
    return (
        f"SELECT day, currency, sum(lines), sum(cost) FROM {SPEND_ROLLUP.format(db=db, table='spend_daily')} WHERE {where}"
        " GROUP BY day, currency ORDER BY day DESC, currency"
    )


def lines_totals(db: str, where: str) -> str:
    return f"SELECT currency, count(), sum(cost) FROM {db}.ledger FINAL WHERE {where} GROUP BY currency ORDER BY currency"


def lines_listing(db: str, keys: str, condition: str, limit: int) -> str:
    # pick the lines on the few columns that order and filter them, then read those lines whole by primary key
    picked = (
        f"SELECT toDate(event_time), line_id FROM {db}.ledger FINAL WHERE {condition} ORDER BY event_time DESC, line_id LIMIT {int(limit)}"
    )
    return (
        f"SELECT {keys} FROM {db}.ledger FINAL WHERE {condition} AND (toDate(event_time), line_id) IN ({picked})"
        " ORDER BY event_time DESC, line_id"
    )


def newest_hours(db: str, where: str) -> str:
    return f"SELECT hour, sum(lines) FROM {SPEND_ROLLUP.format(db=db, table='spend_hourly')} WHERE {where} GROUP BY hour ORDER BY hour DESC"


ALERTS_FROM = "(SELECT *, splitByChar('/', splitByChar(' ', scope)[1])[1] AS org FROM {db}.budget_alert_history)"


def forecast_breaches(db: str, where: str) -> str:
    return (
        f"SELECT budget_id, argMax(projected_breach, raised_at) FROM {ALERTS_FROM.format(db=db)} WHERE {where} AND kind = 'forecast'"
        " AND period_end > now64() GROUP BY budget_id"
    )


def alert_history(db: str, where: str, columns: list[str]) -> str:
    return f"SELECT {', '.join(columns)} FROM {ALERTS_FROM.format(db=db)} WHERE {where} ORDER BY raised_at DESC LIMIT 1000"


def heatmap(db: str, heat_where: list[str]) -> str:
    return (
        f"SELECT node, gpu_uuid, hour, utilization_sum / windows FROM {db}.gpu_utilization_hourly WHERE {' AND '.join(heat_where)}"
        " ORDER BY node, gpu_uuid, hour"
    )


def _gpu_source(db: str, where: str, condition: str) -> str:
    return f"FROM {db}.gpu_daily WHERE {where} AND {condition}"


def grouped_rows(db: str, where: str, condition: str, keys: tuple[str, ...], limit: int) -> str:
    source = _gpu_source(db, where, condition)
    return (
        f"SELECT {', '.join(keys)}, currency, sum(lines), sum(gpu_seconds), sum(cost) {source}"
        f" GROUP BY {', '.join(keys)}, currency ORDER BY sum(cost) DESC, {', '.join(keys)} LIMIT {int(limit)}"
    )


def grouped_totals(db: str, where: str, condition: str) -> str:
    source = _gpu_source(db, where, condition)
    return f"SELECT currency, sum(lines), sum(gpu_seconds), sum(cost) {source} GROUP BY currency ORDER BY currency"


def view_columns() -> str:
    return "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {view:String} ORDER BY position"


def view_rows(db: str, view: str, names: list[str], where: str, limit: int) -> str:
    return f"SELECT {', '.join(f'`{n}`' for n in names)} FROM {db}.`{view}` WHERE {where} LIMIT {limit}"
