"""Incremental rollups and budget spend on the real ClickHouse: equal to a full recomputation, to the cent.

After each change the worker meets (a first load, a replay, a restatement, a tombstone, a late
adjustment in a closed hour) one incremental pass must leave ``spend_hourly`` and ``spend_daily``
equal to the same grouping computed from scratch over ``ledger FINAL``; budget spend read from
rollup + ledger must equal the ledger alone, whether or not the rollup has caught up.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from gpuledger.clickhouse import connect
from gpuledger.migrate import apply_migrations
from gpuledger.settings import Settings
from schemas import Budget, LedgerLine
from streams.budgets.spend import Probe, measure, top_spenders
from streams.sink import ledger_row
from streams.store import rollups
from streams.store.tables import LEDGER_COLUMNS

pytestmark = pytest.mark.engines
ZONE = "Asia/Kolkata"  # UTC+5:30: its days cut UTC hours in half
T0 = datetime(2026, 10, 5, 17, 0, tzinfo=UTC)  # 22:30 in Kolkata: the hours around it fall on two local days
DIMS = "org, team, project, cost_centre, key_id, llm_model, gpu_model, kind, currency"
SUMS = "sum(cost), sum(prompt_tokens), sum(completion_tokens), sum(gpu_seconds), sum(lines)"
FULL_HOURLY = f"""
SELECT toStartOfHour(event_time) AS hour, toDate(event_time, '{ZONE}') AS day, org, team, project, cost_centre, key_id,
       if(kind = 'api' OR basis = 'tokens', model, '') AS llm_model, gpu_model, kind, currency, model,
       sum(cost), sum(toInt64(prompt_tokens)), sum(toInt64(completion_tokens)), sum(gpu_seconds), count()
FROM ledger FINAL GROUP BY hour, day, {DIMS}, model
"""
ROLLUP_HOURLY = f"SELECT hour, day, {DIMS}, model, {SUMS} FROM spend_hourly GROUP BY hour, day, {DIMS}, model HAVING sum(lines) != 0"
FULL_DAILY = f"""
SELECT toDate(event_time, '{ZONE}') AS day, org, team, project, cost_centre, key_id,
       if(kind = 'api' OR basis = 'tokens', model, '') AS llm_model, gpu_model, kind, currency,
       sum(cost), sum(toInt64(prompt_tokens)), sum(toInt64(completion_tokens)), sum(gpu_seconds), count()
FROM ledger FINAL GROUP BY day, {DIMS}
"""
ROLLUP_DAILY = f"SELECT day, {DIMS}, {SUMS} FROM spend_daily GROUP BY day, {DIMS} HAVING sum(lines) != 0"


def line(line_id: str, at: datetime, cost: str, *, kind: str = "api", team: str = "t1", model: str = "m1", tokens: int = 0) -> LedgerLine:
    return LedgerLine(
        line_id=line_id,
        kind=kind,
        event_time=at,
        org="o",
        team=team,
        project="p",
        cost_centre="cc",
        model=model,
        key_id="k-" + team,
        price_id="x",
        gpu_seconds=Decimal(60 if kind != "api" else 0),
        cost=Decimal(cost),
        currency="USD",
        prompt_tokens=tokens,
        gpu_model="H100" if kind != "api" else "",
        basis="tokens" if kind == "gpu" else "",
    )


@pytest.fixture
def ledger(stack_settings: Settings, request: pytest.FixtureRequest) -> Iterator[Client]:
    name = f"t_rollups_{request.node.name.removeprefix('test_')[:30]}"
    settings = stack_settings.model_copy(
        update={"clickhouse": stack_settings.clickhouse.model_copy(update={"database": name}), "reporting_timezone": ZONE}
    )
    connect(settings.clickhouse, database=None).command(f"DROP DATABASE IF EXISTS {name}")
    apply_migrations(settings)
    yield connect(settings.clickhouse)


def write(client: Client, lines: list[LedgerLine], version: int, deleted: bool = False) -> None:
    client.insert("ledger", [ledger_row(x, version, deleted) for x in lines], column_names=list(LEDGER_COLUMNS))


def rows(client: Client, sql: str) -> set[tuple[Any, ...]]:
    return {tuple(r) for r in client.query(sql).result_rows}


def assert_exact(client: Client) -> None:
    rollups.maintain(client, client.database)
    assert rows(client, ROLLUP_HOURLY) == rows(client, FULL_HOURLY)
    assert rows(client, ROLLUP_DAILY) == rows(client, FULL_DAILY)


def test_rollups_equal_a_full_recomputation_after_every_kind_of_change(ledger: Client) -> None:
    hours = [T0 + timedelta(minutes=20 * i) for i in range(12)]  # 4 hours, 2 Kolkata days
    first = [line(f"api:{i}", at, f"{i}.123456789", tokens=1000 + i) for i, at in enumerate(hours)]
    first += [line(f"gpu:{i}", at, "0.5", kind="gpu", team="t2", tokens=7) for i, at in enumerate(hours[::3])]
    first += [line("idle:0", hours[5], "0.25", kind="idle", model="H100")]
    write(ledger, first, 1)
    assert_exact(ledger)
    assert rows(ledger, "SELECT sum(cost) FROM spend_daily") == {(sum((x.cost for x in first), Decimal(0)),)}

    # Replay: the same lines again, same and newer versions: nothing may count twice.
    write(ledger, first[:5], 1)
    write(ledger, first[5:9], 2)
    assert_exact(ledger)

    # Restatement: a line rewritten with a new version, new cost and a new team.
    write(ledger, [line("api:3", hours[3], "9.999999999", team="t3", tokens=5)], 3)
    assert_exact(ledger)

    # Tombstone: a withdrawn line, the only one of its group in its hour.
    write(ledger, [line("idle:0", hours[5], "0.25", kind="idle", model="H100")], 4, deleted=True)
    assert_exact(ledger)
    assert rows(ledger, "SELECT count() FROM (" + ROLLUP_HOURLY + ") WHERE kind = 'idle'") == {(0,)}

    # Late adjustment: booked now for a closed window days ago, after the rollup had passed that hour.
    adjustment = line("adj:1", T0 - timedelta(days=3, minutes=7), "-1.000000001", kind="adjustment", team="t2")
    write(ledger, [adjustment], 5)
    found = rollups.maintain(ledger, ledger.database)
    assert datetime(2026, 10, 2, 16, 0, tzinfo=UTC) in found.hours
    assert_exact(ledger)

    # A pass with nothing new adds nothing (its recomputation of the overlap nets to zero).
    before = ledger.query("SELECT count() FROM spend_hourly").result_rows[0][0]
    assert rollups.maintain(ledger, ledger.database).hours  # the overlap is looked at again...
    assert ledger.query("SELECT count() FROM spend_hourly").result_rows[0][0] == before  # ...and found unchanged


def measure_hours(client: Client, now: datetime) -> list[datetime]:
    """The closed hours the spend source reads from the ledger because they changed since the watermark."""
    from streams.store.spend import read_hours

    return read_hours(client, client.database, [], now - timedelta(days=3), now)


def direct(client: Client, budget: Budget, start: datetime, end: datetime) -> Decimal:
    sql = (
        "SELECT sum(cost) FROM ledger FINAL WHERE org = {o:String} AND team = {t:String} AND currency = 'USD'"
        " AND event_time >= {s:DateTime64(6, 'UTC')} AND event_time < {e:DateTime64(6, 'UTC')}"
    )
    return Decimal(client.query(sql, parameters={"o": budget.org, "t": budget.team, "s": start, "e": end}).result_rows[0][0])


def test_budget_spend_from_rollups_equals_the_ledger_whether_or_not_the_rollup_caught_up(ledger: Client) -> None:
    now = T0 + timedelta(hours=30, minutes=17)
    lines = [line(f"api:{i}", T0 + timedelta(minutes=37 * i), f"{i % 7}.000000003", team=f"t{i % 2}") for i in range(60)]
    write(ledger, lines, 1)
    budget = Budget(budget_id="b", org="o", team="t1", amount=Decimal(1000), currency="USD", period="day", timezone=ZONE, updated_at=T0)
    # A period cut on the half hour (a Kolkata day), so rollup hours and ledger edges meet inside an hour.
    probe = Probe(budget, datetime(2026, 10, 5, 18, 30, tzinfo=UTC), datetime(2026, 10, 6, 18, 30, tzinfo=UTC))

    def check() -> None:
        f = measure(ledger, ledger.database, [probe], now, forecast_window=timedelta(minutes=45), baseline_hours=5)[0]
        assert f.spend == direct(ledger, budget, probe.period_start, probe.period_end) != 0
        assert f.recent == direct(ledger, budget, now - timedelta(minutes=45), now + timedelta(days=1))
        assert f.last_hour == direct(ledger, budget, now - timedelta(hours=1), now + timedelta(days=1))
        assert f.baseline == direct(ledger, budget, now - timedelta(hours=6), now - timedelta(hours=1)) != 0

    check()  # the rollup has never run: every hour comes from the ledger
    rollups.maintain(ledger, ledger.database)
    stored = ledger.query("SELECT max(ingested_at) FROM ledger").result_rows[0][0]
    # As if the pass had run a minute later: every row is then older than watermark - overlap.
    ledger.command(
        rollups.advance_sql(ledger.database), parameters={"watermark": stored + rollups.OVERLAP + timedelta(microseconds=1), "tz": ZONE}
    )
    assert measure_hours(ledger, now) == []
    check()  # every closed hour from the rollup
    write(ledger, [line("api:7", lines[7].event_time, "123.000000001", team="t1")], 2)  # a restatement the rollup has not seen...
    assert measure_hours(ledger, now) == [lines[7].event_time.replace(minute=0)]
    check()  # ...is read from the ledger until the next pass
    top = top_spenders(ledger, ledger.database, [probe], "key_id", 3, now)[0]
    assert [(s.name, s.spend) for s in top] == [("k-t1", direct(ledger, budget, probe.period_start, probe.period_end))]
