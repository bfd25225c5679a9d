"""Migrations: ordered, applied once, and protected against after-the-fact edits."""

from __future__ import annotations

import pytest

from gpuledger.clickhouse import connect
from gpuledger.migrate import MigrationError, apply_migrations, load_migrations
from gpuledger.settings import Settings

pytestmark = pytest.mark.engines


def fresh(settings: Settings, name: str) -> Settings:
    return settings.model_copy(update={"clickhouse": settings.clickhouse.model_copy(update={"database": name})})


def test_migrations_apply_once_in_order_and_record_their_versions(stack_settings: Settings) -> None:
    settings = fresh(stack_settings, "t_migrate_once")
    first = apply_migrations(settings)
    assert [m.version for m in first] == [m.version for m in load_migrations()] == sorted(m.version for m in first)
    assert apply_migrations(settings) == []
    client = connect(settings.clickhouse)
    assert [r[0] for r in client.query("SELECT version FROM schema_migrations ORDER BY version").result_rows] == [
        m.version for m in load_migrations()
    ]
    tables = {r[0] for r in client.query("SHOW TABLES").result_rows}
    assert {
        "usage_events",
        "gpu_samples",
        "ledger",
        "spend_hourly",
        "spend_daily",
        "spend_by_org_daily",
        "budgets",
        "budget_alerts",
        "budget_alert_deliveries",
        "budget_alert_history",
    } <= tables
    assert "usage_estimated" in {r[0] for r in client.query("DESCRIBE TABLE usage_events").result_rows}
    assert not [t for t in tables if t.startswith(".inner")], "views write TO named tables"
    assert {"llm_model", "gpu_model", "cost_centre", "cost_per_mtok"} <= {
        r[0] for r in client.query("DESCRIBE TABLE spend_by_org_daily").result_rows
    }


def test_an_edited_migration_is_refused(stack_settings: Settings) -> None:
    settings = fresh(stack_settings, "t_migrate_edited")
    apply_migrations(settings)
    connect(settings.clickhouse).command(
        "ALTER TABLE schema_migrations UPDATE checksum = 'edited' WHERE version = 2 SETTINGS mutations_sync = 1"
    )
    with pytest.raises(MigrationError, match="0002_ledger changed after it was applied"):
        apply_migrations(settings)


def test_daily_rollups_count_days_in_the_reporting_time_zone(stack_settings: Settings) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    from schemas import LedgerLine
    from streams.sink import ledger_row
    from streams.store import rollups
    from streams.store.tables import LEDGER_COLUMNS

    settings = fresh(stack_settings, "t_migrate_berlin").model_copy(update={"reporting_timezone": "Europe/Berlin"})
    apply_migrations(settings)
    client = connect(settings.clickhouse)
    late_evening = LedgerLine(  # 23:30 UTC on 2 Nov is 00:30 on 3 Nov in Berlin
        line_id="api:tz",
        kind="api",
        event_time=datetime(2026, 11, 2, 23, 30, tzinfo=UTC),
        org="o",
        team="t",
        project="p",
        cost_centre="c",
        model="m",
        price_id="x",
        gpu_seconds=Decimal(0),
        cost=Decimal("1.5"),
        currency="USD",
        prompt_tokens=10,
    )
    client.insert("ledger", [ledger_row(late_evening, 1)], column_names=list(LEDGER_COLUMNS))
    rollups.maintain(client, settings.clickhouse.database)
    rows = client.query("SELECT toString(day), llm_model, total_cost, cost_per_mtok FROM spend_by_org_daily").result_rows
    assert rows == [("2026-11-03", "m", Decimal("1.5"), Decimal(150000))]
