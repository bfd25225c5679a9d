"""Budget spend and report queries: closed, unchanged hours from an hourly rollup (``spend_hourly``; the report's
``usage_hourly`` and ``gpu_hourly`` too), everything else from the deduplicated source (``ledger FINAL``, ``usage_events FINAL``).

Each query reads one *spend source*: the rollup's hours (stamped at the hour's start) for every hour
that is closed and clean, and ledger lines for the rest. "The rest" is the open hour onwards, every
hour written since the rollup's watermark (less its overlap: those may not be in the rollup yet), and
every hour that a window boundary cuts (a period start in a half-hour zone, ``now - 1 h``): a window
then covers rollup hours whole or not at all, and the same ``event_time`` condition is exact on
both halves. The ledger half is a union of hour ranges, so the primary key reads only their days:
the cost follows the open hour and what changed, not the number of closed hours.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from clickhouse_connect.driver.client import Client

from schemas import Budget
from streams.store import rollups

if TYPE_CHECKING:
    from streams.budgets.spend import Probe

HOUR = timedelta(hours=1)
# A ledger line keeps its event_time across versions (its id is derived from it), so filtering on event_time
# before FINAL merges versions is exact, and reads only the hours asked for through the merge.
SETTINGS = {"optimize_move_to_prewhere_if_final": 1}


def _scope_condition(budget: Budget, i: int, params: dict[str, Any]) -> str:
    """SQL selecting the budget's ledger lines; values travel as bound parameters, never spliced in."""
    params[f"org{i}"], params[f"cur{i}"] = budget.org, budget.currency
    parts = [f"org = {{org{i}:String}}", f"currency = {{cur{i}:String}}"]
    for column, value in (("team", budget.team), ("project", budget.project), ("model", budget.model)):
        if value:
            params[f"{column}{i}"] = value
            parts.append(f"{column} = {{{column}{i}:String}}")
    return " AND ".join(parts)


def as_utc(t: datetime) -> datetime:
    """``t`` in UTC; a naive time is taken as UTC (as ClickHouse reads it against the UTC ledger columns)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def floor_hour(t: datetime) -> datetime:
    return as_utc(t).replace(minute=0, second=0, microsecond=0)


def ledger_hours(boundaries: Iterable[datetime], dirty: Iterable[datetime], now: datetime) -> list[datetime]:
    """Hours before the open one to read from the ledger: those written since the watermark and those a boundary cuts."""
    open_hour = floor_hour(now)
    cut = {floor_hour(b) for b in boundaries if as_utc(b) != floor_hour(b)}
    return sorted(h for h in cut | {floor_hour(d) for d in dirty} if h < open_hour)


def _runs(hours: list[datetime]) -> list[tuple[datetime, datetime]]:
    """Sorted hours as [start, end) ranges of consecutive hours."""
    runs: list[tuple[datetime, datetime]] = []
    for h in hours:
        if runs and runs[-1][1] == h:
            runs[-1] = (runs[-1][0], h + HOUR)
        else:
            runs.append((h, h + HOUR))
    return runs


def hour_source(rollup: str, raw: str, hours: list[datetime], now: datetime, params: dict[str, Any]) -> str:
    """A rollup's clean closed hours ``UNION ALL`` its source's rows from ``{earliest}`` on (see the module docstring).

    ``rollup`` is ``SELECT toDateTime64(hour, 6, 'UTC') AS event_time, ... FROM <journal>`` and ``raw`` the same
    columns from the deduplicated source, ``SELECT event_time, ... FROM <table> FINAL WHERE <its filter>``; each is
    given the hour conditions here (bound in ``params``), so the two halves never hold the same hour.
    """
    params["open"], params["ledger_hours"] = floor_hour(now), hours
    ranges = ["event_time >= {open:DateTime64(6, 'UTC')}"]
    for n, (start, end) in enumerate(_runs(hours)):
        params[f"lo{n}"], params[f"hi{n}"] = start, end
        ranges.append(f"(event_time >= {{lo{n}:DateTime64(6, 'UTC')}} AND event_time < {{hi{n}:DateTime64(6, 'UTC')}})")
    closed = (
        " WHERE hour >= {earliest:DateTime64(6, 'UTC')} AND hour < {open:DateTime64(6, 'UTC')}"
        " AND hour NOT IN {ledger_hours:Array(DateTime('UTC'))}"
    )
    fresh = f" AND event_time >= {{earliest:DateTime64(6, 'UTC')}} AND ({' OR '.join(ranges)})"
    return f"{rollup}{closed} UNION ALL {raw}{fresh}"


def spend_source(database: str, hours: list[datetime], now: datetime, params: dict[str, Any]) -> str:
    """Spend from ``spend_hourly`` and ``ledger FINAL`` (``hour_source``).

    Columns: event_time, org, team, project, model, key_id, kind, currency, cost, lines.
    """
    columns = "org, team, project, model, key_id, kind, currency, cost"
    return hour_source(
        f"SELECT toDateTime64(hour, 6, 'UTC') AS event_time, {columns}, lines FROM {database}.spend_hourly",
        f"SELECT event_time, {columns}, toInt64(1) AS lines FROM {database}.ledger FINAL WHERE 1",
        hours,
        now,
        params,
    )


def dirty_hours_sql(database: str, source: str = "ledger") -> str:
    """Hours (from ``{earliest}``) of ``source`` rows stored since the rollups' watermark less its overlap: not yet, or
    not surely, in the rollups. The watermark is read first (a scalar subquery); no state means every hour."""
    watermark = f"(SELECT max(watermark) FROM {database}.rollup_state FINAL WHERE name = '{rollups.STATE}')"
    return (
        f"SELECT DISTINCT toStartOfHour(event_time) FROM {database}.{source}"
        f" WHERE ingested_at >= ifNull({watermark}, toDateTime64(0, 6, 'UTC')) - INTERVAL {int(rollups.OVERLAP.total_seconds())} SECOND"
        f" AND event_time >= {{earliest:DateTime64(6, 'UTC')}}"
    )


def read_hours(
    client: Client, database: str, boundaries: Iterable[datetime], since_earliest: datetime, now: datetime, source: str = "ledger"
) -> list[datetime]:
    """The closed hours a source of ``source`` rows must read from that table (``ledger_hours``). The rollups' watermark
    is read before the query that uses them runs, so a pass that lands meanwhile has inserted its deltas before the
    watermark we saw."""
    rows = client.query(dirty_hours_sql(database, source), parameters={"earliest": since_earliest}).result_rows
    return ledger_hours(boundaries, [row[0].replace(tzinfo=UTC) for row in rows], now)


def window_boundaries(probes: Sequence[Probe], now: datetime, forecast_window: timedelta, baseline: timedelta) -> list[datetime]:
    """Every instant ``measure_sql`` cuts time at."""
    return [t for p in probes for t in (p.period_start, p.period_end)] + [now, now - forecast_window, now - HOUR, now - baseline - HOUR]


def probes_table(probes: Sequence[Probe], params: dict[str, Any]) -> str:
    """The probes as a small table (i, org, currency, team, project, model, ps, pe) from bound arrays; '' matches any."""
    params["n"] = len(probes)
    columns = {
        "org": ("String", [p.budget.org for p in probes]),
        "currency": ("String", [p.budget.currency for p in probes]),
        "team": ("String", [p.budget.team for p in probes]),
        "project": ("String", [p.budget.project for p in probes]),
        "model": ("String", [p.budget.model or "" for p in probes]),
        "ps": ("DateTime64(6, 'UTC')", [p.period_start for p in probes]),
        "pe": ("DateTime64(6, 'UTC')", [p.period_end for p in probes]),
    }
    selected = []
    for name, (kind, values) in columns.items():
        params[f"p_{name}"] = values
        selected.append(f"{{p_{name}:Array({kind})}}[i + 1] AS {name}")
    return f"SELECT arrayJoin(range({{n:UInt32}})) AS i, {', '.join(selected)}"


def measure_sql(
    database: str, probes: Sequence[Probe], now: datetime, hours: list[datetime], *, forecast_window: timedelta, baseline: timedelta
) -> tuple[str, dict[str, Any]]:
    """One scan: per probe (i), spend in its period, in the forecast window, in the last hour and in the spike baseline.

    Each line meets only the probes of its org and currency (a hash join), so the cost grows with
    lines x budgets per org, not lines x budgets.
    """
    params: dict[str, Any] = {"now": now, "earliest": earliest(probes, now, forecast_window, baseline)}
    since = "s.event_time >= {now:DateTime64(6, 'UTC')} - INTERVAL"
    sql = (
        f"SELECT p.i, sumIf(s.cost, s.event_time >= p.ps AND s.event_time < p.pe),"
        f" sumIf(s.cost, {since} {int(forecast_window.total_seconds())} SECOND),"
        f" sumIf(s.cost, {since} 3600 SECOND),"
        f" sumIf(s.cost, {since} {int((baseline + HOUR).total_seconds())} SECOND AND s.event_time < {{now:DateTime64(6, 'UTC')}} - INTERVAL 3600 SECOND)"
        f" FROM ({spend_source(database, hours, now, params)}) AS s"
        f" INNER JOIN ({probes_table(probes, params)}) AS p ON s.org = p.org AND s.currency = p.currency"
        f" WHERE (p.team = '' OR s.team = p.team) AND (p.project = '' OR s.project = p.project) AND (p.model = '' OR s.model = p.model)"
        f" GROUP BY p.i"
    )
    return sql, params


def earliest(probes: Sequence[Probe], now: datetime, forecast_window: timedelta, baseline: timedelta) -> datetime:
    return min([p.period_start for p in probes] + [now - baseline - HOUR, now - forecast_window])


def top_spenders_sql(
    database: str, probes: Sequence[Probe], column: str, limit: int, now: datetime, hours: list[datetime]
) -> tuple[str, dict[str, Any]]:
    """Each probe's largest spenders in its period by ``column``: one scan, lines fanned out to their probes."""
    if column not in ("model", "key_id"):
        raise ValueError(f"top spenders are by model or key_id, not {column!r}")
    params: dict[str, Any] = {"n": limit, "earliest": min(p.period_start for p in probes)}
    members = []
    for i, probe in enumerate(probes):
        params[f"ps{i}"], params[f"pe{i}"] = probe.period_start, probe.period_end
        period = f"event_time >= {{ps{i}:DateTime64(6, 'UTC')}} AND event_time < {{pe{i}:DateTime64(6, 'UTC')}}"
        members.append(f"if({_scope_condition(probe.budget, i, params)} AND {period}, {i}, -1)")
    sql = (
        f"SELECT probe, {column}, sum(cost) AS spent FROM ("
        f" SELECT arrayJoin(arrayFilter(x -> x >= 0, [{', '.join(members)}])) AS probe, {column}, cost, lines"
        f" FROM ({spend_source(database, hours, now, params)}))"
        f" GROUP BY probe, {column} HAVING sum(lines) != 0 ORDER BY probe, spent DESC, {column} LIMIT {{n:UInt32}} BY probe"
    )
    return sql, params


def spend_by_org_model_sql(database: str, hours: list[datetime], now: datetime, params: dict[str, Any]) -> str:
    """``gpuledger report``: cost by kind and lines per org and model between ``{since}`` and ``{until}``."""
    params["earliest"] = params["since"]
    where = "event_time >= {since:DateTime64(6)} AND event_time < {until:DateTime64(6)}"
    return (
        f"SELECT org, model, sumIf(cost, kind = 'api'), sumIf(cost, kind = 'gpu'), sumIf(cost, kind = 'idle'), "
        f"sumIf(cost, kind = 'adjustment'), sum(lines) "
        f"FROM ({spend_source(database, hours, now, params)}) WHERE {where} GROUP BY org, model HAVING sum(lines) != 0 ORDER BY org, model"
    )


def tokens_by_org_model_sql(db: str, hours: list[datetime], now: datetime, params: dict[str, Any]) -> str:
    """Tokens per org and model between ``{since}`` and ``{until}``, from the usage events (a request on two GPUs counts
    once): ``usage_hourly``'s clean closed hours, ``usage_events FINAL`` for the rest (``hours``: from its own dirty set)."""
    params["earliest"] = params["since"]
    where = "event_time >= {since:DateTime64(6)} AND event_time < {until:DateTime64(6)}"
    source = hour_source(
        f"SELECT toDateTime64(hour, 6, 'UTC') AS event_time, org, model, tokens FROM {db}.usage_hourly",
        f"SELECT event_time, org, model, toInt64(prompt_tokens + completion_tokens) AS tokens FROM {db}.usage_events FINAL WHERE 1",
        hours,
        now,
        params,
    )
    return f"SELECT org, model, sum(tokens) FROM ({source}) WHERE {where} GROUP BY org, model"


def gpu_spend_by_team_sql(db: str, hours: list[datetime], now: datetime, params: dict[str, Any]) -> str:
    """GPU spend per org and team: token shares, workloads, idle, adjustments (every ledger line but API calls), from
    ``gpu_hourly``'s clean closed hours and ``ledger FINAL`` for the rest; binds ``earliest``."""
    columns = "org, team, kind, basis, cost"
    source = hour_source(
        f"SELECT toDateTime64(hour, 6, 'UTC') AS event_time, {columns}, lines FROM {db}.gpu_hourly",
        f"SELECT event_time, {columns}, toInt64(1) AS lines FROM {db}.ledger FINAL WHERE kind != 'api'",
        hours,
        now,
        params,
    )
    return (
        f"SELECT org, team, sumIf(cost, kind = 'gpu' AND basis = 'tokens'), sumIf(cost, kind = 'gpu' AND basis != 'tokens'), "
        f"sumIf(cost, kind = 'idle'), sumIf(cost, kind = 'adjustment') FROM ({source}) "
        "GROUP BY org, team HAVING sum(lines) != 0 ORDER BY org, team"
    )
