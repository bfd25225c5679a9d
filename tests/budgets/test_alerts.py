"""Budget alerts end to end: usage events -> real Kafka -> the worker process -> ClickHouse ledger ->
budget evaluation -> alerts topic -> the notifier -> a local server speaking Slack's webhook protocol
(Slack itself is unreachable from here; see tests/notifier/fake_slack.py)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from gpuledger.clickhouse import connect
from gpuledger.commands.budgets import current
from gpuledger.settings import Settings
from tests.budgets.conftest import NotifierThread, noon_zone, notifier_for, publish_usage, raised_alerts, set_budgets, usage
from tests.notifier.fake_slack import FakeSlack
from tests.support import WorkerProcess, caught_up, wait_until

pytestmark = pytest.mark.engines


def headlines(slack: FakeSlack, hook: str) -> list[str]:
    return [m["blocks"][0]["text"]["text"] for m in slack.messages(hook)]


def section_texts(message: dict) -> list[str]:
    return [f["text"] for b in message["blocks"] if b["type"] == "section" for f in b.get("fields", [])]


def test_crossing_50_80_100_posts_three_messages_and_a_replay_posts_none(budget_env: Settings, tmp_path: Path) -> None:
    settings = budget_env
    set_budgets(settings, {"id": "research-daily", "org": "research", "period": "day", "timezone": noon_zone(), "amount": "30"})
    # Spend booked earlier today (not in the last hour), so neither a forecast nor a spike is due: only thresholds.
    at = datetime.now(UTC) - timedelta(hours=3)
    events = [usage(f"r-{i}", "research", 3, at + timedelta(seconds=i)) for i in range(10)]
    worker = WorkerProcess(settings, tmp_path / "worker").start()
    with FakeSlack() as slack:
        hook = slack.new_hook("finance")
        with NotifierThread(settings, notifier_for(settings, tmp_path / "notifier", hook)):
            try:
                for upto, count in ((5, 1), (8, 2), (10, 3)):  # 15.00, 24.00, 30.00 of 30.00
                    publish_usage(settings, events[upto - {5: 5, 8: 3, 10: 2}[upto] : upto])
                    wait_until(lambda c=count: len(slack.messages(hook)) >= c, 60, f"alert {count}", worker)
                    # The standing (`budgets list`, the gateway) agrees with the alert at once, not a refresh later.
                    standing = asyncio.run(current(settings))[1]["research-daily"]
                    assert (standing.spend, standing.exhausted) == (Decimal(3 * upto), upto == 10)
                assert headlines(slack, hook) == [
                    "Budget 50% threshold reached: research at 50.0% of budget",
                    "Budget 80% threshold reached: research at 80.0% of budget",
                    "Budget 100% threshold reached: research at 100.0% of budget",
                ]
                last = slack.messages(hook)[2]
                texts = section_texts(last)
                assert "*Spend*\n30.00 USD" in texts and "*Budget amount*\n30.00 USD" in texts
                assert "*Top models*\nclaude-sonnet-4: 30.00 USD" in texts
                assert "*Top keys*\nkey-research-agents: 30.00 USD" in texts

                # The same ten events again (a producer retry, a replay): the ledger does not move, nothing is posted.
                publish_usage(settings, events)
                wait_until(lambda: caught_up(settings), 60, "the replay to be consumed", worker)
                time.sleep(3)  # three more evaluation ticks
                assert len(slack.messages(hook)) == 3
                assert raised_alerts(settings) == [
                    ("research-daily", "threshold", 50),
                    ("research-daily", "threshold", 80),
                    ("research-daily", "threshold", 100),
                ]
                history = wait_until(lambda: _history(settings) if len(_history(settings)) == 3 else None, 20, "delivery history")
                assert history == [(50, "delivered", 1, 200), (80, "delivered", 1, 200), (100, "delivered", 1, 200)]
            finally:
                worker.stop()


def _history(settings: Settings) -> list[tuple]:
    sql = "SELECT threshold_pct, delivery_status, attempts, last_http_status FROM budget_alert_history WHERE delivery_status != 'pending' ORDER BY threshold_pct"
    return [tuple(r) for r in connect(settings.clickhouse).query(sql).result_rows]


def test_worker_killed_after_raising_and_before_delivery_delivers_exactly_once(budget_env: Settings, tmp_path: Path) -> None:
    settings = budget_env
    set_budgets(settings, {"id": "support-daily", "org": "support", "period": "day", "timezone": noon_zone(), "amount": "30"})
    at = datetime.now(UTC) - timedelta(hours=3)
    worker = WorkerProcess(settings, tmp_path / "worker").start()
    try:
        publish_usage(settings, [usage(f"s-{i}", "support", 3, at + timedelta(seconds=i)) for i in range(5)])
        wait_until(lambda: raised_alerts(settings), 60, "the 50% alert to be raised", worker)
        worker.kill()  # no notifier is running: the alert is on the topic, undelivered
        time.sleep(settings.worker.session_timeout_seconds + 1)  # as an orchestrator would: restart once the member expired
        worker = WorkerProcess(settings, tmp_path / "worker").start()
        publish_usage(settings, [usage(f"s-{i}", "support", 3, at + timedelta(seconds=i)) for i in range(8)])  # replayed + 3 new
        wait_until(lambda: len(raised_alerts(settings)) >= 2, 90, "the 80% alert after the restart", worker)
        with FakeSlack() as slack:
            hook = slack.new_hook("support")
            with NotifierThread(settings, notifier_for(settings, tmp_path / "notifier", hook)):
                wait_until(lambda: len(slack.messages(hook)) >= 2, 30, "both alerts delivered")
                time.sleep(3)
            assert headlines(slack, hook) == [
                "Budget 50% threshold reached: support at 50.0% of budget",
                "Budget 80% threshold reached: support at 80.0% of budget",
            ]
        assert raised_alerts(settings) == [("support-daily", "threshold", 50), ("support-daily", "threshold", 80)]
    finally:
        worker.stop()


def test_forecast_and_spike_fire_on_shaped_traffic_and_stay_quiet_on_steady_traffic(budget_env: Settings, tmp_path: Path) -> None:
    settings = budget_env
    zone = noon_zone()
    set_budgets(
        settings,
        {"id": "research-steep", "org": "research", "period": "day", "timezone": zone, "amount": "100"},
        {"id": "support-steady", "org": "support", "period": "day", "timezone": zone, "amount": "200"},
        {"id": "finance-spiky", "org": "finance", "period": "day", "timezone": zone, "amount": "1000"},
    )
    now = datetime.now(UTC)
    events = [usage(f"steep-{i}", "research", 3, now - timedelta(minutes=30 - i)) for i in range(7)]  # 21.00 in 30 min
    events += [usage(f"steady-{k}", "support", 3, now - timedelta(hours=k + 0.5)) for k in range(25)]  # 3.00 every hour
    events += [usage(f"base-{k}", "finance", 3, now - timedelta(hours=k + 0.5)) for k in range(1, 25)]  # 3.00/h baseline
    events += [usage(f"spike-{i}", "finance", 3, now - timedelta(minutes=50 - i)) for i in range(5)]  # then 15.00 in an hour
    worker = WorkerProcess(settings, tmp_path / "worker").start()
    try:
        publish_usage(settings, events)
        wait_until(lambda: len(raised_alerts(settings)) >= 2, 60, "forecast and spike alerts", worker)
        wait_until(lambda: caught_up(settings), 60, "all events consumed", worker)
        time.sleep(3)
        assert sorted(raised_alerts(settings)) == [("finance-spiky", "spike", 0), ("research-steep", "forecast", 0)]
        row = (
            connect(settings.clickhouse)
            .query("SELECT projected_breach, raised_at, message FROM budget_alerts FINAL WHERE kind = 'forecast'")
            .result_rows[0]
        )
        breach, raised_at, message = row
        # 21.00 in the last hour -> 21/h; 79.00 left -> about 3 h 46 min after raising.
        expected = raised_at + timedelta(hours=79 / 21)
        assert abs((breach - expected).total_seconds()) < 60, (breach, expected)
        assert "21.00 USD/h" in message
        spike = connect(settings.clickhouse).query("SELECT message FROM budget_alerts FINAL WHERE kind = 'spike'").result_rows[0][0]
        assert "spent 15.00 USD in the last hour: 5.0x its average of 3.00 USD/h" in spike
    finally:
        worker.stop()
