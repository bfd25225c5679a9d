"""Query-layer figures on the real ClickHouse and Kafka: several currencies kept apart, the budget standings cache,
and a refused org refused before anything is read. The ledger lines are written by hand, so every figure is known."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from gpuledger.clickhouse import connect
from gpuledger.commands.reference_import import publish
from gpuledger.settings import Settings
from gpuledger.ui import queries
from gpuledger.ui.auth import Refused, Viewer
from gpuledger.ui.filters import Filters
from schemas import Budget, LedgerLine, codec_for
from schemas.keys import budget_key
from streams.sink import ledger_row
from streams.store.rollups import refresh_rollups
from streams.store.tables import LEDGER_COLUMNS, USAGE_COLUMNS
from tests.support import isolated, ledger_line, usage_event_row

pytestmark = pytest.mark.engines
OCT, NOV = date(2026, 10, 1), date(2026, 11, 1)


def line(line_id: str, day: date, currency: str, kind: str, cost: str, tokens: int = 0) -> LedgerLine:
    return ledger_line(
        line_id,
        kind,
        datetime(day.year, day.month, 10, tzinfo=UTC),
        cost,
        org="research",
        team="agents",
        model="m" if kind == "api" else "NVIDIA H100 80GB HBM3",
        price_id="x",
        currency=currency,
        prompt_tokens=tokens,
        basis="" if kind == "api" else "remainder",
    )


@pytest.fixture(scope="module")
def two_currencies(stack_settings: Settings) -> Iterator[Settings]:
    """Spend per month and currency: Oct USD 4 (1M tokens) + 6 idle, Oct EUR 8 (2M tokens) + 12 idle, Nov USD 9 (3M tokens) + 21 idle."""
    settings = isolated(stack_settings, "ui_queries")
    client = connect(settings.clickhouse)
    lines = [
        line("u1", OCT, "USD", "api", "4", 1_000_000),
        line("u2", OCT, "USD", "idle", "6"),
        line("e1", OCT, "EUR", "api", "8", 2_000_000),
        line("e2", OCT, "EUR", "idle", "12"),
        line("n1", NOV, "USD", "api", "9", 3_000_000),
        line("n2", NOV, "USD", "idle", "21"),
    ]
    client.insert("ledger", [ledger_row(x, 1) for x in lines], column_names=list(LEDGER_COLUMNS))
    refresh_rollups(client)
    yield settings


def ctx(settings: Settings, viewer: Viewer | None = None, state: dict[str, Any] | None = None, **filters: str) -> queries.Ctx:
    return queries.Ctx(
        settings,
        connect(settings.clickhouse),
        viewer or Viewer("finops", None),
        Filters.parse(filters, date(2026, 11, 29)),
        state if state is not None else {},
    )


def test_the_jevons_table_keeps_each_currency_of_a_month(two_currencies: Settings) -> None:
    table, chart = queries._jevons(ctx(two_currencies), date(2026, 12, 1))
    assert [(r["month"], r["currency"], r["spend"], r["tokens"], r["per_mtok_usage"]) for r in table.rows] == [
        (OCT, "EUR", Decimal(20), 2_000_000, Decimal(4)),
        (OCT, "USD", Decimal(10), 1_000_000, Decimal(4)),
        (NOV, "USD", Decimal(30), 3_000_000, Decimal(3)),
    ]
    assert {t["currency"]: t["spend"] for t in table.totals()} == {"USD": Decimal(40), "EUR": Decimal(20)}
    assert [v for v in chart["spend"] if v is not None] == [10.0, 30.0]  # one currency per chart: the configured one


def test_the_lines_summary_totals_each_currency(two_currencies: Settings) -> None:
    page = queries.lines(ctx(two_currencies, since="2026-10-01", until="2026-12-01"))
    assert page.table("summary").rows == [
        {"lines": 2, "cost": Decimal(20), "currency": "EUR"},
        {"lines": 4, "cost": Decimal(40), "currency": "USD"},
    ]
    assert "(6 of 6 shown;" in page.table("lines").title  # counted over both currencies
    newest = queries.lines(ctx(two_currencies, since="2026-10-01", until="2026-12-01"), limit=2)  # the ledger read from the newest hour on
    assert [r["line_id"] for r in newest.table("lines").rows] == ["n1", "n2"] and "(2 of 6 shown;" in newest.table("lines").title
    assert queries._newest(ctx(two_currencies, since="2026-10-01", until="2026-12-01"), 2, [(NOV.replace(day=10), 2)]) == datetime(
        2026, 11, 10, tzinfo=UTC
    )
    empty = queries.lines(ctx(two_currencies, since="2025-01-01", until="2025-02-01"))
    assert empty.table("summary").rows == [{"lines": 0, "cost": Decimal(0), "currency": "USD"}]


def test_budget_standings_are_read_once_per_refresh_interval(two_currencies: Settings) -> None:
    """A budget published after the first read shows only once the refresh interval has passed: one Kafka read per interval."""
    hourly = two_currencies.model_copy(update={"ui": two_currencies.ui.model_copy(update={"refresh_seconds": 3600.0})})
    state: dict[str, Any] = {}
    assert queries.budget_standings(ctx(hourly, state=state)) == ([], {})
    budget = Budget(budget_id="ui-cache", org="research", period="month", amount=Decimal(100), currency="USD", updated_at=datetime.now(UTC))
    asyncio.run(publish(two_currencies, "budgets", [(budget_key(budget.budget_id), codec_for(Budget).encode(budget))]))
    assert queries.budget_standings(ctx(hourly, state=state)) == ([], {})  # another tab within the interval: the cached read
    every_second = two_currencies.model_copy(update={"ui": two_currencies.ui.model_copy(update={"refresh_seconds": 1.0})})
    time.sleep(1.1)
    assert [b.budget_id for b in queries.budget_standings(ctx(every_second, state=state))[0]] == ["ui-cache"]


def test_budgets_refuses_a_foreign_org_before_reading_anything(two_currencies: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queries, "budget_standings", lambda c: pytest.fail("read budgets for a refused org"))
    with pytest.raises(Refused):
        queries.budgets(ctx(two_currencies, Viewer("research-lead", frozenset({"research"})), org="support"))


def test_the_models_page_shows_routing_savings_and_cost_per_outcome_scoped_to_the_viewer(two_currencies: Settings) -> None:
    """Two API requests routed with a baseline, one per org: research saved 0.0081 - 0.000486 = 0.007614; its viewer sees
    only that row (the support row and the request outside the range stay hidden); no outcomes yet: an empty table."""
    client = connect(two_currencies.clickhouse)

    def routed(event_id: str, org: str, when: datetime, cost: str, baseline: str) -> list[object]:
        return usage_event_row(
            event_id=event_id,
            request_start=when,
            event_time=when,
            key_id="",
            backend="",
            endpoint="",
            prompt_tokens=40,
            completion_tokens=800,
            org=org,
            team="t",
            model="gpt-4o-mini",
            requested_model="auto",
            route_rule="default",
            baseline_model="gpt-4o",
            cost=Decimal(cost),
            baseline_cost=Decimal(baseline),
        )

    october = datetime(2026, 10, 5, 12, tzinfo=UTC)
    client.insert(
        "usage_events",
        [
            routed("r1", "research", october, "0.000486", "0.0081"),
            routed("r2", "support", october, "0.001", "0.0081"),
            routed("r3", "research", datetime(2025, 1, 1, tzinfo=UTC), "0.001", "0.0081"),
        ],
        column_names=list(USAGE_COLUMNS),
    )
    page = queries.models(ctx(two_currencies, Viewer("research-lead", frozenset({"research"})), since="2026-10-01", until="2026-12-01"))
    assert page.notes == []
    [saved] = page.table("routing_savings").rows
    assert (saved["org"], saved["route_rule"], saved["savings"]) == ("research", "default", Decimal("0.007614"))
    assert page.table("cost_per_outcome").rows == []
    everyone = queries.models(ctx(two_currencies, since="2026-10-01", until="2026-12-01"))
    assert sorted(r["org"] for r in everyone.table("routing_savings").rows) == ["research", "support"]


def test_the_gpus_page_reads_its_rollups(stack_settings: Settings) -> None:
    """GPU-1 (node n1): a 10:00 window at 80 % (research share 0.30, idle 0.10), a 10:30 window at 40 % (research 0.20);
    GPU-2 (node n2): support at 10 %. Heatmap GPU-1 10h = (80 + 40) / 2 = 60; research's viewer sees GPU-1 only."""
    settings = isolated(stack_settings, "ui_gpus")
    t = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)

    def gpu(line_id: str, minute: int, gpu_uuid: str, org: str, kind: str, cost: str, util: float) -> LedgerLine:
        return ledger_line(
            line_id,
            kind,
            t.replace(minute=minute),
            cost,
            org=org,
            team="t",
            price_id="x",
            gpu_seconds=Decimal(60),
            gpu_uuid=gpu_uuid,
            node="n1" if gpu_uuid == "GPU-1" else "n2",
            utilization_pct=util,
            basis="tokens" if kind == "gpu" else "remainder",
        )

    client = connect(settings.clickhouse)
    lines = [
        gpu("a", 0, "GPU-1", "research", "gpu", "0.3", 80),
        gpu("b", 0, "GPU-1", "research", "idle", "0.1", 80),
        gpu("c", 30, "GPU-1", "research", "gpu", "0.2", 40),
        gpu("d", 0, "GPU-2", "support", "gpu", "0.7", 10),
    ]
    client.insert("ledger", [ledger_row(x, 1) for x in lines], column_names=list(LEDGER_COLUMNS))
    refresh_rollups(client)
    page = queries.gpus(ctx(settings, since="2026-11-02", until="2026-11-03"))
    assert [(r["gpu_uuid"], r["h0"]) for r in page.table("heatmap").rows] == [("GPU-1", Decimal(60)), ("GPU-2", Decimal(10))]
    assert [(r["node"], r["org"], r["cost"]) for r in page.table("idle").rows] == [("n1", "research", Decimal("0.1"))]
    assert {t["currency"]: t["cost"] for t in page.table("attribution").totals()} == {"USD": Decimal("1.3")}
    research = queries.gpus(ctx(settings, Viewer("research-lead", frozenset({"research"})), since="2026-11-02", until="2026-11-03"))
    assert [r["gpu_uuid"] for r in research.table("heatmap").rows] == ["GPU-1"]
    assert {r["org"] for r in research.table("attribution").rows} == {"research"}
