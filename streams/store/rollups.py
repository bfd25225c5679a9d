"""Incremental spend rollups: ``spend_hourly`` and ``spend_daily`` kept exact from what changed in the ledger.

A pass (leader worker, every ``worker.rollup_every_seconds``):

1. reads the watermark of the last pass from ``rollup_state`` and the server's clock;
2. finds the hours (and reporting-zone days) of ledger rows stored since ``watermark - OVERLAP``
   (``ledger.ingested_at``, a minmax skip index; a replay, a restatement, a tombstone and a late
   adjustment are all new rows, so their hours are found);
3. inserts into ``spend_hourly``, per group of each dirty hour, *recomputed from ledger FINAL minus what
   the rollup holds*, then the same for ``spend_daily`` from ``spend_hourly`` over the dirty days;
4. records the clock read in 1 as the new watermark.

The rollups are journals of deltas (SummingMergeTree), so ``sum()`` over them is exact at every
moment; a pass is one insert per table, and repeating a pass (a crash between 3 and 4) inserts
zero deltas. ``OVERLAP`` covers inserts still in flight when the clock was read. One maintainer at a
time: two passes running at once would both add the same delta (the leader runs them, one after another).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

OVERLAP = timedelta(seconds=60)
STATE = "spend"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DIMENSIONS = ("org", "team", "project", "cost_centre", "key_id", "llm_model", "gpu_model", "kind", "currency")
MEASURES = ("cost", "prompt_tokens", "completion_tokens", "gpu_seconds", "lines")
HOURLY_KEYS = ("hour", "day", *DIMENSIONS, "model")
DAILY_KEYS = ("day", *DIMENSIONS)
# spend_hourly's columns as computed from ledger lines (tokens and lines signed, so deltas can be negative).
LEDGER_PROJECTION = {
    "hour": "toStartOfHour(event_time)",
    "day": "toDate(event_time, {tz:String})",
    "org": "org",
    "team": "team",
    "project": "project",
    "cost_centre": "cost_centre",
    "key_id": "key_id",
    "llm_model": "if(kind = 'api' OR basis = 'tokens', model, '')",
    "gpu_model": "gpu_model",
    "kind": "kind",
    "currency": "currency",
    "model": "model",
    "cost": "cost",
    "prompt_tokens": "toInt64(prompt_tokens)",
    "completion_tokens": "toInt64(completion_tokens)",
    "gpu_seconds": "gpu_seconds",
    "lines": "toInt64(1)",
}


@dataclass(frozen=True, slots=True)
class State:
    watermark: datetime
    timezone: str


@dataclass(frozen=True, slots=True)
class Pass:
    """What one pass changed: the hours and days it recomputed."""

    hours: list[datetime]
    days: list[date]
    watermark: datetime


def state_sql(database: str) -> str:
    return f"SELECT watermark, timezone FROM {database}.rollup_state FINAL WHERE name = '{STATE}'"


def dirty_sql(database: str) -> str:
    """Hours and reporting-zone days of ledger rows stored since ``{since}`` (skip index on ingested_at)."""
    return (
        f"SELECT DISTINCT toStartOfHour(event_time) AS hour, toDate(event_time, {{tz:String}}) AS day"
        f" FROM {database}.ledger WHERE ingested_at >= {{since:DateTime64(6, 'UTC')}}"
    )


def _delta_sql(target: str, keys: tuple[str, ...], fresh: str, current: str) -> str:
    """``INSERT`` of (fresh - current) per group of ``keys``, groups whose delta is zero left out."""
    cols = ", ".join(keys + MEASURES)
    negated = ", ".join(keys + tuple(f"-{m} AS {m}" for m in MEASURES))
    sums = ", ".join(keys + tuple(f"sum({m}) AS {m}" for m in MEASURES))
    nonzero = " OR ".join(f"{m} != 0" for m in MEASURES)
    return (
        f"INSERT INTO {target} ({cols}) SELECT {sums} FROM ({fresh} UNION ALL SELECT {negated} FROM {current})"
        f" GROUP BY {', '.join(keys)} HAVING {nonzero}"
    )


def hourly_delta_sql(database: str) -> str:
    """Recompute the hours in ``{hours:Array(DateTime('UTC'))}`` from ``ledger FINAL`` into spend_hourly."""
    projection = ", ".join(f"{expr} AS {name}" for name, expr in LEDGER_PROJECTION.items())
    in_hours = "toStartOfHour(event_time) IN {hours:Array(DateTime('UTC'))}"
    span = "event_time >= {lo:DateTime64(6, 'UTC')} AND event_time < {hi:DateTime64(6, 'UTC')}"  # primary-key range first
    fresh = f"SELECT {projection} FROM {database}.ledger FINAL WHERE {span} AND {in_hours}"
    current = f"{database}.spend_hourly WHERE hour IN {{hours:Array(DateTime('UTC'))}}"
    return _delta_sql(f"{database}.spend_hourly", HOURLY_KEYS, fresh, current)


def daily_delta_sql(database: str) -> str:
    """Recompute the days in ``{days:Array(Date)}`` of spend_daily from spend_hourly."""
    keys = ", ".join(DAILY_KEYS)
    fresh = (
        f"SELECT {keys}, {', '.join(MEASURES)} FROM {database}.spend_hourly"
        f" WHERE hour >= {{lo:DateTime('UTC')}} AND hour < {{hi:DateTime('UTC')}} AND day IN {{days:Array(Date)}}"
    )
    current = f"{database}.spend_daily WHERE day IN {{days:Array(Date)}}"
    return _delta_sql(f"{database}.spend_daily", DAILY_KEYS, fresh, current)


def advance_sql(database: str) -> str:
    return (
        f"INSERT INTO {database}.rollup_state (name, watermark, timezone)"
        f" VALUES ('{STATE}', {{watermark:DateTime64(6, 'UTC')}}, {{tz:String}})"
    )


def hour_span(hours: list[datetime]) -> dict[str, Any]:
    """The ledger range covering ``hours`` (lets the primary key skip every other day)."""
    return {"lo": min(hours), "hi": max(hours) + timedelta(hours=1)}


def day_span(days: list[date]) -> dict[str, Any]:
    """UTC hours that can hold ``days`` of any time zone (offsets are within ±14 h)."""
    first, last = min(days), max(days)
    return {
        "lo": datetime(first.year, first.month, first.day, tzinfo=UTC) - timedelta(days=1),
        "hi": datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=2),
    }


def read_state(client: Client, database: str) -> State:
    rows = client.query(state_sql(database)).result_rows
    if not rows:
        raise RuntimeError(f"{database}.rollup_state has no '{STATE}' row: run `gpuledger migrate` (migration 0010)")
    watermark, tz = rows[0]
    return State(watermark.replace(tzinfo=UTC), tz)


def maintain(client: Client, database: str) -> Pass:
    """One incremental pass (see the module docstring); returns what it recomputed."""
    state = read_state(client, database)
    now = client.query("SELECT now64(6, 'UTC')").result_rows[0][0].replace(tzinfo=UTC)
    since = state.watermark - OVERLAP if state.watermark > EPOCH else EPOCH
    dirty = client.query(dirty_sql(database), parameters={"since": since, "tz": state.timezone}).result_rows
    hours = sorted({h.replace(tzinfo=UTC) for h, _ in dirty})
    days = sorted({d for _, d in dirty})
    settings = {"max_execution_time": 0}
    if hours:
        params = {"hours": hours, "tz": state.timezone, **hour_span(hours)}
        client.command(hourly_delta_sql(database), parameters=params, settings=settings)
        client.command(daily_delta_sql(database), parameters={"days": days, **day_span(days)}, settings=settings)
    client.command(advance_sql(database), parameters={"watermark": now, "tz": state.timezone})
    return Pass(hours, days, now)


# The dashboard's rollups that are still refreshable materialized views (migration 0015): each re-reads the ledger.
REFRESHES = ("gpu_daily_refresh", "gpu_utilization_hourly_refresh", "self_hosted_vs_api_rollup_refresh", "serving_hours_refresh")


def refresh_rollups(client: Client, stopped: bool = False, spend: bool = True) -> None:
    """Bring every rollup of ``client``'s database up to date now: one incremental spend pass, then each refreshable view.

    For a demo or a test that must show the ledger as it is right now, with no worker running (one spend pass at a
    time: with a worker up, pass ``spend=False`` and wait for its pass). ``stopped``: the views' schedules are stopped
    (a benchmark, so they do not compete with what it times); each is started for its refresh and stopped again.
    """
    if spend:
        maintain(client, str(client.database))
    for view in _present_refreshes(client):
        if stopped:
            client.command(f"SYSTEM START VIEW {view}")
        client.command(f"SYSTEM REFRESH VIEW {view}")
        client.command(f"SYSTEM WAIT VIEW {view}")
        if stopped:
            client.command(f"SYSTEM STOP VIEW {view}")


def stop_rollups(client: Client) -> None:
    """Stop every refreshable rollup's schedule (benchmarks: refreshes would compete with the timed queries)."""
    for view in _present_refreshes(client):
        client.command(f"SYSTEM STOP VIEW {view}")


def _present_refreshes(client: Client) -> list[str]:
    """The refreshable rollups this database has (a tree migrated before 0015 has none), in ``REFRESHES`` order."""
    present = {r[0] for r in client.query("SELECT name FROM system.tables WHERE database = currentDatabase()").result_rows}
    return [view for view in REFRESHES if view in present]
