"""The notifier against the real Kafka and a faithful fake Slack: once, in order, through failures and restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from gpuledger.kafka import client_options
from gpuledger.settings import Settings
from streams.notifier import Route, Target
from streams.notifier.state import DeliveryState
from tests.notifier.conftest import Running, alert, alerts_topic, notifier_settings, publish, wait_until
from tests.notifier.fake_slack import FakeSlack
from tests.promtool import check_metrics

pytestmark = pytest.mark.engines


def fields_of(message: dict) -> dict[str, str]:
    """The Block Kit section fields as {label: value}."""
    section = next(b for b in message["blocks"] if b["type"] == "section" and "fields" in b)
    return dict(f["text"].lstrip("*").split("*\n", 1) for f in (x for x in section["fields"]))


async def committed(settings: Settings, group: str, topic: str) -> int | None:
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    meta = offsets.get(TopicPartition(topic, 0))
    return meta.offset if meta else None


async def test_three_thresholds_give_three_messages_and_replays_none(stack_settings: Settings, slack: FakeSlack, tmp_path: Path) -> None:
    hook = slack.new_hook("acme")
    ns = notifier_settings(tmp_path, default=Target(name="default", url=hook))
    alerts = [alert(pct=50, spend="500"), alert(pct=80, spend="812.345"), alert(pct=100, spend="1000.00")]
    await publish(stack_settings, ns, alerts)
    first = Running(stack_settings, ns)
    await wait_until(lambda: len(slack.messages(hook)) >= 3, what="three messages")
    await first.shutdown()

    got = slack.messages(hook)
    assert len(got) == 3
    assert [m["blocks"][0]["text"]["text"] for m in got] == [
        "Budget 50% threshold reached: acme/ml at 50.0% of budget",
        "Budget 80% threshold reached: acme/ml at 81.2% of budget",
        "Budget 100% threshold reached: acme/ml at 100.0% of budget",
    ]
    f = fields_of(got[1])
    assert f["Scope"] == "acme/ml"
    assert f["Budget"] == "acme/ml-monthly"
    assert f["Spend"] == "812.35 USD"
    assert f["Budget amount"] == "1,000.00 USD"
    assert f["Percent of budget"] == "81.2%"
    assert f["Kind"] == "threshold (80%)"
    assert f["Period"] == "1–31 Mar 2027 (UTC)"
    assert "Forecast breach" not in f
    assert got[0]["text"].startswith(":warning: Budget 50% threshold")
    assert await committed(stack_settings, ns.group_id, alerts_topic(ns)) == 3

    # The same three again (a producer retry, a replay), then one new alert as a marker: only the marker posts.
    marker = alert(pct=0, kind="spike", spend="640")
    await publish(stack_settings, ns, [*alerts, marker])
    second = Running(stack_settings, ns)
    await wait_until(lambda: len(slack.messages(hook)) >= 4, what="the marker")
    await asyncio.sleep(0.5)
    await second.shutdown()
    got = slack.messages(hook)
    assert len(got) == 4
    assert got[3]["blocks"][0]["text"]["text"] == "Budget spend spike: acme/ml at 64.0% of budget"
    assert await committed(stack_settings, ns.group_id, alerts_topic(ns)) == 7
    state = DeliveryState(ns.state_file)
    try:
        assert state.counts() == {"delivered": 4}
        assert all(d.attempts == 1 for d in state.all())
    finally:
        state.close()


async def test_rate_limit_then_server_error_then_success_posts_once(stack_settings: Settings, slack: FakeSlack, tmp_path: Path) -> None:
    hook = slack.new_hook("acme")
    slack.then(hook, 429, "rate_limited", Retry_After="1")
    slack.then(hook, 500, "internal_error")
    ns = notifier_settings(tmp_path, default=Target(name="default", url=hook))
    await publish(stack_settings, ns, [alert(pct=80, spend="800")])
    running = Running(stack_settings, ns)
    await wait_until(lambda: len(slack.messages(hook)) >= 1, what="the message")
    await asyncio.sleep(0.3)
    await running.shutdown()

    attempts = slack.attempts_for(hook)
    assert [a.status for a in attempts] == [429, 500, 200]
    assert attempts[2].at - attempts[0].at >= 1.0  # Retry-After honoured
    assert attempts[1].at - attempts[0].at >= 1.0
    assert len(slack.messages(hook)) == 1
    state = DeliveryState(ns.state_file)
    try:
        (d,) = state.all()
        assert (d.status, d.attempts, d.last_http_status, d.route) == ("delivered", 3, 200, "default")
    finally:
        state.close()


async def test_killed_mid_send_is_delivered_exactly_once_after_restart(stack_settings: Settings, slack: FakeSlack, tmp_path: Path) -> None:
    hook = slack.new_hook("acme")
    slack.hang.add("/" + hook.split("/", 3)[3])  # Slack swallows the request and never answers
    ns = notifier_settings(tmp_path, default=Target(name="default", url=hook), request_timeout_s=30)
    await publish(stack_settings, ns, [alert(pct=100, spend="1000")])
    first = Running(stack_settings, ns)
    await wait_until(lambda: len(slack.attempts_for(hook)) == 1, what="the hung POST")
    await first.kill()  # dies mid-send: consumed, not delivered, offset not committed

    assert slack.messages(hook) == []
    assert await committed(stack_settings, ns.group_id, alerts_topic(ns)) is None
    state = DeliveryState(ns.state_file)
    try:
        assert [d.status for d in state.all()] == ["sending"]
    finally:
        state.close()

    slack.hang.clear()
    second = Running(stack_settings, ns)
    await wait_until(lambda: len(slack.messages(hook)) >= 1, what="redelivery")
    await asyncio.sleep(0.5)
    await second.shutdown()
    assert len(slack.messages(hook)) == 1
    assert slack.messages(hook)[0]["blocks"][0]["text"]["text"] == "Budget 100% threshold reached: acme/ml at 100.0% of budget"
    assert await committed(stack_settings, ns.group_id, alerts_topic(ns)) == 1
    state = DeliveryState(ns.state_file)
    try:
        assert [d.status for d in state.all()] == ["delivered"]
    finally:
        state.close()


async def test_routing_and_permanent_failures(
    stack_settings: Settings, slack: FakeSlack, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")  # httpx logs request URLs at INFO
    acme, acme_ml, default, finance_json = (
        slack.new_hook("acme"),
        slack.new_hook("acmeml"),
        slack.new_hook("default"),
        slack.new_json_hook(),
    )
    unknown = slack.base_url + "/services/Tgone/Bgone/deleted"  # a webhook Slack no longer knows: 404 no_service
    ns = notifier_settings(
        tmp_path,
        routes=[
            Route(name="acme", match="acme", url=acme),
            Route(name="acme-ml", match="acme/ml", url=acme_ml),
            Route(name="initech-finance", match="initech/finance", url=finance_json, format="json"),
            Route(name="umbrella", match="umbrella", url=unknown),
        ],
        default=Target(name="default", url=default),
    )
    slack.then(acme, 400, "invalid_payload")  # the first acme alert is refused: permanent, never retried
    alerts = [
        alert(scope="acme/research", pct=50, spend="500"),  # -> acme: 400
        alert(scope="acme/research", pct=80, spend="800"),  # -> acme: delivered
        alert(scope="acme/ml/llm", pct=50, spend="500"),  # -> acme-ml (longest prefix)
        alert(scope="acmecorp/x", pct=50, spend="500"),  # whole segments only -> default
        alert(scope="globex", pct=50, spend="500"),  # -> default
        alert(scope="umbrella/bio", pct=50, spend="500"),  # -> 404 no_service
        alert(
            scope="initech/finance",
            pct=80,
            spend="123.456",
            budget="150",
            kind="forecast",
            projected_breach=alert().period_start.replace(day=20),
        ),  # -> JSON webhook
    ]
    await publish(stack_settings, ns, alerts)
    running = Running(stack_settings, ns)
    await wait_until(lambda: len(slack.messages(finance_json)) >= 1, what="the JSON webhook")
    await asyncio.sleep(0.3)
    await running.shutdown()

    heads = lambda url: [m["blocks"][0]["text"]["text"] for m in slack.messages(url)]  # noqa: E731
    assert [a.status for a in slack.attempts_for(acme)] == [400, 200]
    assert heads(acme) == ["Budget 80% threshold reached: acme/research at 80.0% of budget"]
    assert heads(acme_ml) == ["Budget 50% threshold reached: acme/ml/llm at 50.0% of budget"]
    assert heads(default) == [
        "Budget 50% threshold reached: acmecorp/x at 50.0% of budget",
        "Budget 50% threshold reached: globex at 50.0% of budget",
    ]
    assert [a.status for a in slack.attempts_for(unknown)] == [404]
    (body,) = slack.messages(finance_json)
    assert body["alert_id"] == alerts[-1].alert_id
    assert Decimal(body["spend"]) == Decimal("123.456") and Decimal(body["budget_amount"]) == Decimal("150")
    assert body["percent_of_budget"] == "82.3"
    assert body["projected_breach"] == "2027-03-20T00:00:00+00:00"
    assert await committed(stack_settings, ns.group_id, alerts_topic(ns)) == len(alerts)

    state = DeliveryState(ns.state_file)
    try:
        by_id = {d.alert_id: d for d in state.all()}
    finally:
        state.close()
    refused = by_id[alerts[0].alert_id]
    assert (refused.status, refused.attempts, refused.last_http_status, refused.last_detail) == ("failed", 1, 400, "invalid_payload")
    gone = by_id[alerts[5].alert_id]
    assert (gone.status, gone.attempts, gone.last_http_status, gone.route) == ("failed", 1, 404, "umbrella")
    assert by_id[alerts[-1].alert_id].route == "initech-finance"

    out = capsys.readouterr()
    logged = out.out + out.err + caplog.text
    assert "/services/" not in logged, "a webhook URL reached the logs"


async def test_cli_process_delivers_serves_metrics_and_stops_on_sigterm(stack_settings: Settings, slack: FakeSlack, tmp_path: Path) -> None:
    hook = slack.new_hook("cli")
    slack.then(hook, 429, "rate_limited", Retry_After="0")
    ns = notifier_settings(tmp_path, default=Target(name="ops", url=hook))
    config = tmp_path / "notifier.yaml"
    port = int(os.environ.get("GPULEDGER_TEST_PORT_BASE", "20000")) + 321
    config.write_text(
        f"log_format: json\ntopics: {{budget_alerts: {alerts_topic(ns)}}}\n"  # one settings file: shared sections and the notifier's
        f"notifier:\n  group_id: {ns.group_id}\n  state_dir: {ns.state_dir}\n  default: {{name: ops, url: '{hook}'}}\n"
        f"  metrics_port: {port}\n  backoff_base_s: 0.05\n"
    )
    await publish(stack_settings, ns, [alert(pct=80, spend="800")])
    env = {
        **os.environ,
        "GPULEDGER_KAFKA__BOOTSTRAP_SERVERS": stack_settings.kafka.bootstrap_servers,
        "GPULEDGER_CLICKHOUSE__URL": stack_settings.clickhouse.url,
        "GPULEDGER_CONFIG": str(tmp_path / "unused.yaml"),
    }  # --config wins
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.notifier.cli", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        await wait_until(lambda: len(slack.messages(hook)) >= 1 or proc.poll() is not None, timeout=20, what="the CLI's message")
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        scraped = [""]

        async def settled() -> bool:  # the alert is settled and committed a moment after Slack saw it
            scraped[0] = (await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/metrics", timeout=5)).text
            return 'gpuledger_notifier_alerts_waiting{partition="0"} 0.0' in scraped[0]

        for _ in range(100):
            if await settled():
                break
            await asyncio.sleep(0.1)
        metrics = scraped[0]
        health = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/healthz", timeout=5)
        proc.send_signal(signal.SIGTERM)
        output = (await asyncio.to_thread(proc.communicate, timeout=15))[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert len(slack.messages(hook)) == 1
    assert "/services/" not in output
    assert await committed(stack_settings, ns.group_id, alerts_topic(ns)) == 1
    check_metrics(metrics)
    for line in (
        'gpuledger_notifier_deliveries_total{outcome="delivered"} 1.0',
        'gpuledger_notifier_attempts_total{status="429"} 1.0',
        'gpuledger_notifier_attempts_total{status="200"} 1.0',
        'gpuledger_notifier_alerts_waiting{partition="0"} 0.0',
    ):
        assert line in metrics.splitlines(), line
    assert health.status_code == 200 and health.json()["consuming"] is True
