"""Incremental rollups: every rollup kept exact from what changed in the ledger and the usage events.

A pass (leader worker, every ``worker.rollup_every_seconds``):

1. reads the watermark of the last pass from ``rollup_state`` and the server's clock;
2. finds the hours (and reporting-zone days) of ledger rows and of usage events stored since
   ``watermark - OVERLAP`` (``ingested_at``, a minmax skip index on both tables; a replay, a restatement,
   a tombstone and a late adjustment are all new rows, so their hours are found);
3. reads the dirty hours' ledger lines from ``ledger FINAL`` once (a chunk of hours at a time, into the scratch
   table ``rollup_lines``); for each hourly journal (``JOURNALS``), inserts per group of each dirty hour of its
   source *recomputed from those lines (or from usage_events FINAL) minus what the journal holds*; replaces the
   dirty hours of ``gpu_utilization_hours`` (not a sum: a mean of floats and a set of orgs); then the day
   journals: ``self_hosted_vs_api_days`` over the UTC days of every dirty hour, ``gpu_days`` and ``spend_daily``
   from ``gpu_hourly`` and ``spend_hourly`` over the dirty reporting-zone days;
4. records the clock read in 1 as the new watermark, unless the watermark changed meanwhile (a migration
   that reset it to rebuild a new rollup: the next pass then rebuilds).

The journals are deltas (SummingMergeTree), so ``sum()`` over them is exact at every moment; a pass is
one insert per table and chunk of hours, and repeating a pass (a crash between 3 and 4) inserts zero
deltas. ``OVERLAP`` covers inserts still in flight when the clock was read. One maintainer at a time: two
passes running at once would both add the same delta and share ``rollup_lines`` (the leader runs them, one
after another).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from streams.store.rollup_journals import (
    DAILY_KEYS,
    GPU,
    IN_DIRTY_HOURS,
    JOURNALS,
    LINE_COLUMNS,
    SELF_HOSTED_KEYS,
    SELF_HOSTED_MEASURES,
    SPEND,
    Journal,
    self_hosted_fresh,
    utilization_windows,
)

OVERLAP = timedelta(seconds=60)
STATE = "spend"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Dirty hours are recomputed in chunks of at most this many hours within one such stretch: a chunk's lines fit in memory
# (the first pass after a migration has every hour dirty) and its ledger range stays within two days.
CHUNK_HOURS = 24
# A line keeps its event_time across versions (its id is derived from it), so the hour filter may run before FINAL
# merges versions: only the dirty hours' lines are merged, not their whole days.
SETTINGS = {"max_execution_time": 0, "optimize_move_to_prewhere_if_final": 1}


@dataclass(frozen=True, slots=True)
class State:
    watermark: datetime
    timezone: str


def state_sql(database: str) -> str:
    return f"SELECT watermark, timezone FROM {database}.rollup_state FINAL WHERE name = '{STATE}'"


def dirty_sql(database: str, source: str = "ledger") -> str:
    """Hours and reporting-zone days of ``source`` rows stored since ``{since}`` (skip index on ingested_at)."""
    return (
        f"SELECT DISTINCT toStartOfHour(event_time) AS hour, toDate(event_time, {{tz:String}}) AS day"
        f" FROM {database}.{source} WHERE ingested_at >= {{since:DateTime64(6, 'UTC')}}"
    )


def _delta_sql(target: str, keys: tuple[str, ...], measures: tuple[str, ...], fresh: str, current: str) -> str:
    """``INSERT`` of (fresh - current) per group of ``keys``, groups whose delta is zero left out."""
    cols = ", ".join(keys + measures)
    negated = ", ".join(keys + tuple(f"-{m} AS {m}" for m in measures))
    sums = ", ".join(keys + tuple(f"sum({m}) AS {m}" for m in measures))
    nonzero = " OR ".join(f"{m} != 0" for m in measures)
    return (
        f"INSERT INTO {target} ({cols}) SELECT {sums} FROM ({fresh} UNION ALL SELECT {negated} FROM {current})"
        f" GROUP BY {', '.join(keys)} HAVING {nonzero}"
    )


def journal_delta_sql(database: str, journal: Journal) -> str:
    """Recompute the hours in ``{hours:Array(DateTime('UTC'))}`` of ``journal`` from its source (``Journal``)."""
    current = f"{database}.{journal.table} WHERE hour IN {{hours:Array(DateTime('UTC'))}}"
    return _delta_sql(f"{database}.{journal.table}", journal.keys, journal.measures, journal.fresh(database), current)


def _day_delta_sql(database: str, target: str, hourly: Journal, keys: tuple[str, ...], condition: str = "") -> str:
    """Recompute the reporting-zone days in ``{days:Array(Date)}`` of ``target`` from the hourly journal ``hourly``."""
    fresh = (
        f"SELECT {', '.join(keys + hourly.measures)} FROM {database}.{hourly.table}"
        f" WHERE hour >= {{lo:DateTime('UTC')}} AND hour < {{hi:DateTime('UTC')}} AND day IN {{days:Array(Date)}}{condition}"
    )
    current = f"{database}.{target} WHERE day IN {{days:Array(Date)}}"
    return _delta_sql(f"{database}.{target}", keys, hourly.measures, fresh, current)


def daily_delta_sql(database: str) -> str:
    """Recompute the days in ``{days:Array(Date)}`` of spend_daily from spend_hourly."""
    return _day_delta_sql(database, "spend_daily", SPEND, DAILY_KEYS)


def gpu_days_delta_sql(database: str) -> str:
    """Recompute the days in ``{days:Array(Date)}`` of gpu_days (the GPUs page's ``gpu_daily``) from gpu_hourly."""
    return _day_delta_sql(database, "gpu_days", GPU, GPU.keys[1:], " AND kind IN ('gpu', 'idle', 'adjustment')")


def utilization_replace_sql(database: str) -> str:
    """Replace the dirty hours of ``gpu_utilization_hours`` (ReplacingMergeTree by version, with tombstones): every row
    held for them is withdrawn at ``{version}`` and each GPU-hour recomputed from its lines (``rollup_lines``) is written at
    ``{version} + 1``, so a GPU-hour left with no lines disappears and the others take their new figures.

    Per GPU-hour: the sum of its windows' utilization (``utilization_windows``), their number, and the orgs on it."""
    table = f"{database}.gpu_utilization_hours"
    windows = utilization_windows(database)
    return (
        f"INSERT INTO {table} (hour, node, gpu_uuid, utilization_sum, windows, orgs, version, is_deleted)"
        " SELECT hour, node, gpu_uuid, toFloat64(0) AS utilization_sum, toUInt64(0) AS windows, CAST([], 'Array(String)') AS orgs,"
        f" {{version:UInt64}} AS version, toUInt8(1) AS is_deleted FROM {table} FINAL WHERE hour IN {{hours:Array(DateTime('UTC'))}}"
        " UNION ALL SELECT toStartOfHour(window) AS hour, node, gpu_uuid, sum(u) AS utilization_sum, count() AS windows,"
        " arraySort(groupUniqArrayArray(window_orgs)) AS orgs, {version:UInt64} + 1 AS version, toUInt8(0) AS is_deleted"
        f" FROM ({windows}) GROUP BY hour, node, gpu_uuid"
    )


def lines_sql(database: str) -> str:
    """The dirty hours' ledger lines, each once (FINAL), into the pass's scratch table ``rollup_lines``."""
    return f"INSERT INTO {database}.rollup_lines SELECT {LINE_COLUMNS} FROM {database}.ledger FINAL WHERE {IN_DIRTY_HOURS}"


def chunks(hours: list[datetime]) -> list[list[datetime]]:
    """Sorted ``hours`` in runs of at most ``CHUNK_HOURS`` hours, each within ``CHUNK_HOURS`` of its first."""
    out: list[list[datetime]] = []
    for h in hours:
        if out and len(out[-1]) < CHUNK_HOURS and h - out[-1][0] < timedelta(hours=CHUNK_HOURS):
            out[-1].append(h)
        else:
            out.append([h])
    return out


def self_hosted_delta_sql(database: str) -> str:
    """Recompute the UTC days in ``{days:Array(Date)}`` of ``self_hosted_vs_api_days`` from the hourly journals."""
    current = f"{database}.self_hosted_vs_api_days WHERE day IN {{days:Array(Date)}}"
    fresh = self_hosted_fresh(database)
    return _delta_sql(f"{database}.self_hosted_vs_api_days", SELF_HOSTED_KEYS, SELF_HOSTED_MEASURES, fresh, current)


def utc_days(hours: list[datetime]) -> dict[str, Any]:
    """The UTC days of ``hours`` and the hour range that holds them (the parameters of ``self_hosted_delta_sql``)."""
    days = sorted({h.date() for h in hours})
    return {"days": days, "lo": datetime.combine(days[0], time(), UTC), "hi": datetime.combine(days[-1], time(), UTC) + timedelta(days=1)}


def advance_sql(database: str) -> str:
    """The new watermark, written only if ``{seen}`` is still the stored one (a migration may have reset it meanwhile)."""
    return (
        f"INSERT INTO {database}.rollup_state (name, watermark, timezone)"
        f" SELECT name, {{watermark:DateTime64(6, 'UTC')}}, timezone FROM {database}.rollup_state FINAL"
        f" WHERE name = '{STATE}' AND watermark = {{seen:DateTime64(6, 'UTC')}}"
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


def _dirty(client: Client, database: str, source: str, since: datetime, tz: str) -> tuple[list[datetime], list[date]]:
    rows = client.query(dirty_sql(database, source), parameters={"since": since, "tz": tz}).result_rows
    return sorted({h.replace(tzinfo=UTC) for h, _ in rows}), sorted({d for _, d in rows})


def maintain(client: Client, database: str) -> list[datetime]:
    """One incremental pass (see the module docstring); returns the ledger hours it recomputed."""
    state = read_state(client, database)
    now = client.query("SELECT now64(6, 'UTC')").result_rows[0][0].replace(tzinfo=UTC)
    since = state.watermark - OVERLAP if state.watermark > EPOCH else EPOCH
    dirty = {source: _dirty(client, database, source, since, state.timezone) for source in ("ledger", "usage_events")}
    version = int((now - EPOCH).total_seconds() * 1_000_000)
    for chunk in chunks(dirty["ledger"][0]):
        _recompute_ledger_hours(client, database, chunk, state.timezone, version)
    for chunk in chunks(dirty["usage_events"][0]):
        params = {"hours": chunk, **hour_span(chunk)}
        for journal in (j for j in JOURNALS if j.source == "usage_events"):
            client.command(journal_delta_sql(database, journal), parameters=params, settings=SETTINGS)
    changed = dirty["ledger"][0] + dirty["usage_events"][0]
    if changed:
        client.command(self_hosted_delta_sql(database), parameters=utc_days(changed), settings=SETTINGS)
    days = dirty["ledger"][1]
    for daily in (gpu_days_delta_sql, daily_delta_sql) if days else ():  # spend_daily last (see JOURNALS)
        client.command(daily(database), parameters={"days": days, **day_span(days)}, settings=SETTINGS)
    client.command(advance_sql(database), parameters={"watermark": now, "seen": state.watermark})
    return dirty["ledger"][0]


def _recompute_ledger_hours(client: Client, database: str, hours: list[datetime], tz: str, version: int) -> None:
    """Every ledger-derived rollup for ``hours``: their lines read from ``ledger FINAL`` once, into ``rollup_lines``."""
    span = {"hours": hours, **hour_span(hours)}
    client.command(f"TRUNCATE TABLE {database}.rollup_lines")
    client.command(lines_sql(database), parameters=span, settings=SETTINGS)
    client.command(utilization_replace_sql(database), parameters={**span, "version": version}, settings=SETTINGS)
    for journal in (j for j in JOURNALS if j.source == "ledger"):
        client.command(journal_delta_sql(database, journal), parameters={**span, "tz": tz}, settings=SETTINGS)
    client.command(f"TRUNCATE TABLE {database}.rollup_lines")


def refresh_rollups(client: Client) -> None:
    """Bring every rollup of ``client``'s database up to date now: one incremental pass.

    For a demo, a test or a benchmark that must show the ledger as it is right now, with no worker running (one pass
    at a time: with a worker up, wait for its pass instead).
    """
    maintain(client, str(client.database))
