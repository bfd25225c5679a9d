"""The store layer's SQL builders, without a database: which hours go to the ledger, what is bound, what is summed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from schemas import Budget
from streams.budgets.spend import Probe
from streams.store import rollups, spend, tables

H = timedelta(hours=1)
NOW = datetime(2026, 10, 30, 23, 40, tzinfo=UTC)
OPEN = datetime(2026, 10, 30, 23, 0, tzinfo=UTC)


def budget(**scope: str) -> Budget:
    return Budget(budget_id="b", org=scope.pop("org", "acme"), period="day", amount=Decimal(10), currency="USD", updated_at=NOW, **scope)


def test_the_ledger_is_read_for_hours_a_boundary_cuts_and_hours_changed_since_the_watermark() -> None:
    cut = datetime(2026, 10, 30, 18, 30, tzinfo=UTC)  # a Kolkata midnight
    aligned = datetime(2026, 10, 29, 0, 0, tzinfo=UTC)
    dirty = [datetime(2026, 10, 12, 5, 0, tzinfo=UTC), OPEN, OPEN + H]  # the open hour and later are read from the ledger anyway
    assert spend.ledger_hours([cut, aligned, NOW], dirty, NOW) == [datetime(2026, 10, 12, 5, 0, tzinfo=UTC), cut - timedelta(minutes=30)]


def test_a_naive_boundary_is_utc() -> None:
    assert spend.ledger_hours([datetime(2026, 10, 1), datetime(2026, 10, 2, 5, 30)], [], NOW) == [datetime(2026, 10, 2, 5, tzinfo=UTC)]


def test_consecutive_hours_become_one_range() -> None:
    hours = [OPEN - 5 * H, OPEN - 4 * H, OPEN - 3 * H, OPEN - H]
    assert spend._runs(hours) == [(OPEN - 5 * H, OPEN - 2 * H), (OPEN - H, OPEN)]
    assert spend._runs([]) == []


def test_the_spend_source_reads_rollup_hours_not_in_the_ledger_set_and_ledger_ranges_for_the_rest() -> None:
    params: dict[str, object] = {}
    sql = spend.spend_source("db", [OPEN - 5 * H, OPEN - 4 * H, OPEN - H], NOW, params)
    rollup, ledger = sql.split(" UNION ALL ")
    assert "FROM db.spend_hourly" in rollup and "hour NOT IN {ledger_hours:Array(DateTime('UTC'))}" in rollup
    assert "FROM db.ledger FINAL" in ledger and ledger.count(" OR ") == 2  # the open hour on, and two runs of hours
    assert params["open"] == OPEN and (params["lo0"], params["hi0"], params["lo1"], params["hi1"]) == (
        OPEN - 5 * H,
        OPEN - 3 * H,
        OPEN - H,
        OPEN,
    )


def test_measure_binds_every_budget_value_and_splices_none() -> None:
    probes = [
        Probe(budget(org="o'; DROP TABLE ledger --", team="t1"), OPEN - 23 * H, OPEN + H),
        Probe(budget(model="gpt-x"), OPEN - 23 * H, OPEN + H),
    ]
    sql, params = spend.measure_sql("db", probes, NOW, [], forecast_window=timedelta(minutes=45), baseline=timedelta(hours=24))
    assert "DROP" not in sql and "gpt-x" not in sql and "t1" not in sql
    assert params["p_org"] == ["o'; DROP TABLE ledger --", "acme"] and params["p_team"] == ["t1", ""] and params["p_model"] == ["", "gpt-x"]
    assert params["n"] == 2 and params["earliest"] == NOW - timedelta(hours=25)
    assert "INTERVAL 2700 SECOND" in sql and "INTERVAL 90000 SECOND" in sql
    assert "ON s.org = p.org AND s.currency = p.currency" in sql


def test_top_spenders_only_by_model_or_key() -> None:
    probes = [Probe(budget(), OPEN - 23 * H, OPEN + H)]
    sql, params = spend.top_spenders_sql("db", probes, "key_id", 3, NOW, [])
    assert "LIMIT {n:UInt32} BY probe" in sql and "HAVING sum(lines) != 0" in sql and params["n"] == 3
    with pytest.raises(ValueError, match="by model or key_id, not 'org; --'"):
        spend.top_spenders_sql("db", probes, "org; --", 3, NOW, [])


def test_a_rollup_pass_inserts_recomputed_minus_held_and_leaves_zero_deltas_out() -> None:
    sql = rollups.journal_delta_sql("db", rollups.SPEND)
    assert sql.startswith("INSERT INTO db.spend_hourly (hour, day, org,")
    assert "FROM db.rollup_lines UNION ALL" in sql  # the dirty hours' lines, read from ledger FINAL once per chunk
    lines = rollups.lines_sql("db")
    assert lines.startswith("INSERT INTO db.rollup_lines SELECT event_time,")
    assert "FROM db.ledger FINAL WHERE event_time >= {lo:DateTime64(6, 'UTC')}" in lines and "{hours:Array(DateTime('UTC'))}" in lines
    assert (
        "-cost AS cost" in sql and "-lines AS lines" in sql and "FROM db.spend_hourly WHERE hour IN {hours:Array(DateTime('UTC'))}" in sql
    )
    assert sql.endswith("HAVING cost != 0 OR prompt_tokens != 0 OR completion_tokens != 0 OR gpu_seconds != 0 OR lines != 0")
    daily = rollups.daily_delta_sql("db")
    assert "FROM db.spend_hourly WHERE hour >= {lo:DateTime('UTC')}" in daily and "model" not in daily.replace("_model", "")


def test_dirty_hours_are_recomputed_in_chunks_of_at_most_a_day_each() -> None:
    spread = [OPEN - 100 * H, *(OPEN - n * H for n in range(30, 0, -1))]
    assert [len(c) for c in rollups.chunks(spread)] == [1, 24, 6]
    assert rollups.chunks([]) == [] and all(c[-1] - c[0] < rollups.CHUNK_HOURS * H for c in rollups.chunks(spread))


def test_the_hours_of_a_day_span_every_zone() -> None:
    span = rollups.day_span([date(2026, 10, 3), date(2026, 10, 1)])
    assert span == {"lo": datetime(2026, 9, 30, tzinfo=UTC), "hi": datetime(2026, 10, 5, tzinfo=UTC)}  # UTC-12 .. UTC+14
    assert rollups.hour_span([OPEN, OPEN - 3 * H]) == {"lo": OPEN - 3 * H, "hi": OPEN + H}


def test_each_table_declares_its_columns_once() -> None:
    for columns in (tables.LEDGER_COLUMNS, tables.USAGE_COLUMNS, tables.SAMPLE_COLUMNS, tables.BUDGET_COLUMNS, tables.ALERT_COLUMNS):
        assert len(set(columns)) == len(columns)
    from streams import sink
    from streams.budgets import evaluator

    assert not hasattr(sink, "LEDGER_COLUMNS") and evaluator.BUDGET_COLUMNS is tables.BUDGET_COLUMNS  # no second declaration


def test_the_allocator_reads_every_ledger_column_but_version_and_tombstone_and_its_own_window() -> None:
    from streams.store import allocator

    booked = allocator.booked_lines("db")
    assert "version" not in booked.replace("_version", "") and "is_deleted" not in booked and "adjusts_window" in booked
    assert booked.split("FROM")[0].count(",") == len(tables.LEDGER_COLUMNS) - 3  # 31 columns
    assert "INTERVAL 60 SECOND" in allocator.dirty_units("db", 60) and "INTERVAL 300 SECOND" in allocator.token_groups("db", 300)
    assert "{since:DateTime64(3)}" in allocator.dirty_units("db", 60) and "FROM db.ledger FINAL" in allocator.prior_adjustments("db")
