"""Incremental rollups, budget spend and the report on the real ClickHouse: equal to a full recomputation, to the cent.

After each change the worker meets (a first load, a replay, a restatement, a tombstone, a late
adjustment in a closed hour) one incremental pass must leave ``spend_hourly`` and ``spend_daily``,
and the dashboard's rollups (``gpu_daily``, ``gpu_utilization_hourly``, ``self_hosted_vs_api_rollup``,
``serving_hours``), equal to the same queries computed from scratch over ``ledger FINAL`` and
``usage_events FINAL`` (migration 0015's definitions); budget spend and ``gpuledger report`` read from
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
from gpuledger.commands.report import gpu_spend_by_team, spend_by_org_model
from gpuledger.migrate import apply_migrations
from gpuledger.settings import Settings
from schemas import Budget, LedgerLine
from streams.budgets.spend import Probe, measure, top_spenders
from streams.sink import ledger_row
from streams.store import rollups
from streams.store.spend import read_hours
from streams.store.tables import LEDGER_COLUMNS
from tests.support import ledger_line

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
# Migration 0015's rollups as its refreshable views computed them (from scratch), and what the pages read now.
GPU_KEYS = "day, node, gpu_uuid, gpu_model, kind, basis, idle_policy, workload, org, team, project, currency"
COMPARED = (
    "day, org, team, project, llm_model, currency, hosting, tokens, usage_cost, allocation_cost, serving_hours, api_equivalent_cost,"
    " ifNull(requests, 0), ifNull(requests_without_equivalent, 0)"
)
DASHBOARD = (
    (
        f"SELECT {GPU_KEYS}, lines, gpu_seconds, cost FROM gpu_daily",
        f"SELECT toDate(event_time, '{ZONE}') AS day, node, gpu_uuid, gpu_model, kind, basis, idle_policy, workload, org, team,"
        f" project, currency, count(), sum(gpu_seconds), sum(cost) FROM ledger FINAL WHERE kind IN ('gpu', 'idle', 'adjustment')"
        f" GROUP BY {GPU_KEYS}",
    ),
    (
        "SELECT hour, node, gpu_uuid, round(utilization_sum, 6), windows, orgs FROM gpu_utilization_hourly",
        "SELECT toStartOfHour(window) AS hour, node, gpu_uuid, round(sum(u), 6), count(), arraySort(groupUniqArrayArray(window_orgs))"
        " FROM (SELECT node, gpu_uuid, event_time AS window, max(utilization_pct) AS u, groupUniqArray(toString(org)) AS window_orgs"
        " FROM ledger FINAL WHERE kind IN ('gpu', 'idle') AND gpu_uuid != '' GROUP BY node, gpu_uuid, window) GROUP BY hour, node, gpu_uuid",
    ),
    (f"SELECT {COMPARED} FROM self_hosted_vs_api_rollup", f"SELECT {COMPARED} FROM self_hosted_vs_api_daily"),
    (
        "SELECT hour, org, team, project, llm_model, currency FROM serving_hours",
        "SELECT DISTINCT toStartOfHour(event_time), org, team, project, model, currency FROM ledger FINAL WHERE kind = 'gpu' AND basis = 'tokens'",
    ),
)


def line(line_id: str, at: datetime, cost: str, *, kind: str = "api", team: str = "t1", model: str = "m1", tokens: int = 0) -> LedgerLine:
    return ledger_line(
        line_id,
        kind,
        at,
        cost,
        org="o",
        team=team,
        cost_centre="cc",
        model=model,
        key_id="k-" + team,
        price_id="x",
        gpu_seconds=Decimal(60 if kind != "api" else 0),
        prompt_tokens=tokens,
        gpu_model="H100" if kind != "api" else "",
        basis="tokens" if kind == "gpu" else "",
    )


@pytest.fixture
def migrated(stack_settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """Settings for a freshly migrated database of this test's own, reporting in Kolkata."""
    name = f"t_rollups_{request.node.name.removeprefix('test_')[:30]}"
    settings = stack_settings.model_copy(
        update={"clickhouse": stack_settings.clickhouse.model_copy(update={"database": name}), "reporting_timezone": ZONE}
    )
    connect(settings.clickhouse, database=None).command(f"DROP DATABASE IF EXISTS {name}")
    apply_migrations(settings)
    return settings


@pytest.fixture
def ledger(migrated: Settings) -> Iterator[Client]:
    yield connect(migrated.clickhouse)


def write(client: Client, lines: list[LedgerLine], version: int, deleted: bool = False) -> None:
    client.insert("ledger", [ledger_row(x, version, deleted) for x in lines], column_names=list(LEDGER_COLUMNS))


def rows(client: Client, sql: str) -> set[tuple[Any, ...]]:
    return {tuple(tuple(v) if isinstance(v, list) else v for v in r) for r in client.query(sql).result_rows}


def assert_exact(client: Client) -> None:
    rollups.maintain(client, client.database)
    assert rows(client, ROLLUP_HOURLY) == rows(client, FULL_HOURLY)
    assert rows(client, ROLLUP_DAILY) == rows(client, FULL_DAILY)
    for rollup, full in DASHBOARD:
        assert rows(client, rollup) == rows(client, full), rollup


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
    assert datetime(2026, 10, 2, 16, 0, tzinfo=UTC) in found
    assert_exact(ledger)

    # A watermark reset meanwhile (a migration adding a rollup) is not overwritten by a pass that read the old one.
    held = rollups.read_state(ledger, ledger.database).watermark
    ledger.command(rollups.advance_sql(ledger.database), parameters={"watermark": datetime.now(UTC), "seen": held - timedelta(seconds=1)})
    assert rollups.read_state(ledger, ledger.database).watermark == held

    # A pass with nothing new adds nothing (its recomputation of the overlap nets to zero).
    before = ledger.query("SELECT count() FROM spend_hourly").result_rows[0][0]
    assert rollups.maintain(ledger, ledger.database)  # the overlap is looked at again...
    assert ledger.query("SELECT count() FROM spend_hourly").result_rows[0][0] == before  # ...and found unchanged


def measure_hours(client: Client, now: datetime) -> list[datetime]:
    """The closed hours the spend source reads from the ledger because they changed since the watermark."""
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
    seen = rollups.read_state(ledger, ledger.database).watermark
    ledger.command(
        rollups.advance_sql(ledger.database), parameters={"watermark": stored + rollups.OVERLAP + timedelta(microseconds=1), "seen": seen}
    )
    assert measure_hours(ledger, now) == []
    check()  # every closed hour from the rollup
    write(ledger, [line("api:7", lines[7].event_time, "123.000000001", team="t1")], 2)  # a restatement the rollup has not seen...
    assert measure_hours(ledger, now) == [lines[7].event_time.replace(minute=0)]
    check()  # ...is read from the ledger until the next pass
    top = top_spenders(ledger, ledger.database, [probe], "key_id", 3, now)[0]
    assert [(s.name, s.spend) for s in top] == [("k-t1", direct(ledger, budget, probe.period_start, probe.period_end))]


USAGE_COLUMNS = ["event_id", "request_start", "event_time", "key_id", "model", "prompt_tokens", "completion_tokens", "latency_ms"]
USAGE_COLUMNS += ["status", "org", "team", "project", "priced_as", "cost", "api_equivalent_cost"]


def usage(client: Client, events: list[tuple[str, datetime, int, str, str, str | None]]) -> None:
    """Usage events (id, time, tokens, team, priced_as, API-equivalent cost or None), model llama, org o."""
    rows = [
        [
            i,
            at,
            at,
            "k-" + team,
            "llama",
            tokens,
            tokens // 4,
            10.0,
            "ok",
            "o",
            team,
            "p",
            priced,
            Decimal(0),
            None if eq is None else Decimal(eq),
        ]
        for i, at, tokens, team, priced, eq in events
    ]
    client.insert("usage_events", rows, column_names=USAGE_COLUMNS)


def gpu_window(at: datetime, gpu: str, shares: dict[str, int], idle: str, util: float, *, workload: str = "") -> list[LedgerLine]:
    """One GPU window: a token share per team (the window's tokens split between them) and its idle line, or a workload."""
    common = {"event_time": at, "org": "o", "project": "p", "cost_centre": "cc", "price_id": "x", "currency": "USD", "node": "n1"}
    common |= {"gpu_uuid": gpu, "gpu_model": "H100", "utilization_pct": util, "gpu_seconds": Decimal(60), "window_seconds": 60}
    key = f"{gpu}:{at:%H%M}"
    if workload:
        return [
            LedgerLine(
                line_id=f"w:{key}",
                kind="gpu",
                team="t3",
                model="H100",
                cost=Decimal("0.9"),
                basis="allocation",
                workload=workload,
                **common,
            )
        ]
    total = sum(shares.values())
    out = [
        LedgerLine(
            line_id=f"s:{key}:{team}",
            kind="gpu",
            team=team,
            model="llama",
            key_id="k-" + team,
            cost=Decimal(n) / 1000,
            prompt_tokens=n,
            basis="tokens",
            share_tokens=n,
            window_tokens=total,
            **common,
        )
        for team, n in shares.items()
    ]
    return out + [
        LedgerLine(
            line_id=f"i:{key}", kind="idle", team="", model="H100", cost=Decimal(idle), basis="remainder", idle_policy="callers", **common
        )
    ]


def assert_report(settings: Settings, client: Client) -> None:
    """The report equals the same figures computed from scratch over ledger FINAL and usage_events FINAL."""
    got = {(r.org, r.model): (r.api, r.gpu, r.idle, r.adjustment, r.tokens, r.lines) for r in spend_by_org_model(settings)}
    tokens = {
        (o, m): t
        for o, m, t in client.query(
            "SELECT org, model, sum(prompt_tokens + completion_tokens) FROM usage_events FINAL GROUP BY org, model"
        ).result_rows
    }
    costs = client.query(
        "SELECT org, model, sumIf(cost, kind = 'api'), sumIf(cost, kind = 'gpu'), sumIf(cost, kind = 'idle'), sumIf(cost, kind = 'adjustment'),"
        " count() FROM ledger FINAL GROUP BY org, model"
    ).result_rows
    assert got == {(o, m): (a, g, i, adj, tokens.get((o, m), 0), n) for o, m, a, g, i, adj, n in costs} != {}
    teams = client.query(
        "SELECT org, team, sumIf(cost, kind = 'gpu' AND basis = 'tokens'), sumIf(cost, kind = 'gpu' AND basis != 'tokens'), "
        "sumIf(cost, kind = 'idle'), sumIf(cost, kind = 'adjustment') FROM ledger FINAL WHERE kind != 'api' GROUP BY org, team ORDER BY org, team"
    ).result_rows
    assert [(r.org, r.team, r.inference, r.workloads, r.idle, r.adjustment) for r in gpu_spend_by_team(settings)] == [
        tuple(t) for t in teams
    ]


def caught_up(client: Client) -> None:
    """As if the last pass had run a minute later: every stored row is then older than watermark - overlap, so readers
    take every closed hour from the rollups."""
    stored = client.query(
        "SELECT greatest((SELECT max(ingested_at) FROM ledger), (SELECT toDateTime64(max(ingested_at), 6) FROM usage_events))"
    )
    seen = rollups.read_state(client, client.database).watermark
    watermark = stored.result_rows[0][0].replace(tzinfo=UTC) + rollups.OVERLAP + timedelta(microseconds=1)
    client.command(rollups.advance_sql(client.database), parameters={"watermark": watermark, "seen": seen})
    now = datetime.now(UTC)
    assert [read_hours(client, client.database, [], EPOCH_DAY, now, source=s) for s in ("ledger", "usage_events")] == [[], []]


EPOCH_DAY = datetime(1970, 1, 2, tzinfo=UTC)


def test_report_and_dashboard_rollups_equal_a_full_recomputation_after_every_kind_of_change(
    migrated: Settings, ledger: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollups, "CHUNK_HOURS", 2)  # the 7 hours below are recomputed in 4 chunks
    times = [T0 + timedelta(minutes=35 * i) for i in range(12)]  # 7 hours over two UTC days and two Kolkata days
    lines = [x for i, at in enumerate(times) for x in gpu_window(at, "GPU-1", {"t1": 300 + i, "t2": 700}, f"0.{i + 1}", 40.0 + i)]
    lines += [x for at in times[::2] for x in gpu_window(at, "GPU-2", {}, "0", 90.5, workload="ns/train")]
    lines += [line(f"api:{i}", at, f"0.00{i}", model="llama", tokens=50 + i) for i, at in enumerate(times[::3])]
    events = [(f"e{i}", at, 1000 + i, "t1", "gpu", None if i % 3 == 0 else f"0.0{i}") for i, at in enumerate(times)]
    events += [(f"a{i}", at, 54 + i, "t1", "api", "0.005") for i, at in enumerate(times[::3])]
    events += [("u0", times[4], 77, "t2", "unpriced", None)]
    write(ledger, lines, 1)
    usage(ledger, events)
    assert_report(migrated, ledger)  # the rollups have never run: every hour from the ledger and the usage events
    assert_exact(ledger)
    caught_up(ledger)
    assert_report(migrated, ledger)  # every closed hour from the rollups
    assert rows(ledger, "SELECT count() FROM self_hosted_vs_api_rollup WHERE hosting = 'self-hosted' AND api_equivalent_cost > 0") != {(0,)}

    # Replay: the same lines and events again (the events stored anew, the lines with newer versions too).
    write(ledger, lines[:9], 1)
    write(ledger, lines[9:20], 2)
    usage(ledger, events[:5])
    assert_report(migrated, ledger)
    assert_exact(ledger)

    # Restatement: a share moves to another team at a new cost; an event is re-priced with its API equivalent gone.
    moved = gpu_window(times[1], "GPU-1", {"t1": 301, "t3": 700}, "0.2", 41.0)
    write(ledger, moved, 3)
    write(ledger, [x for x in gpu_window(times[1], "GPU-1", {"t2": 700}, "0.2", 41.0) if x.team == "t2"], 3, deleted=True)
    usage(ledger, [("e2", times[2], 5000, "t3", "gpu", None)])
    assert_report(migrated, ledger)  # read from the ledger and events: not in the rollups yet
    assert_exact(ledger)

    # Tombstones: a window's idle line (its hour loses the serving hour if it was the only one) and a GPU's whole hour.
    write(ledger, [x for x in gpu_window(times[0], "GPU-1", {"t1": 300, "t2": 700}, "0.1", 40.0) if x.kind == "idle"], 4, deleted=True)
    write(ledger, gpu_window(times[6], "GPU-2", {}, "0", 90.5, workload="ns/train"), 4, deleted=True)
    assert_exact(ledger)
    assert rows(
        ledger,
        f"SELECT count() FROM gpu_utilization_hourly WHERE gpu_uuid = 'GPU-2' AND hour = toStartOfHour(toDateTime('{times[6]:%Y-%m-%d %H:%M:%S}', 'UTC'))",
    ) == {(0,)}

    # Late adjustment: booked now for a closed window days ago.
    adjustment = line("adj:1", T0 - timedelta(days=3, minutes=7), "-1.000000001", kind="adjustment", team="t2")
    write(ledger, [adjustment], 5)
    assert_exact(ledger)
    caught_up(ledger)
    assert_report(migrated, ledger)
