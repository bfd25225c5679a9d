"""Message rendering, routing, retry classification, settings and CLI, without Kafka (Slack is the local fake)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from slack_sdk.models.blocks import Block
from typer.testing import CliRunner

from gpuledger.settings import load_settings, use_config_file
from schemas import SpendShare
from streams.notifier import NotifierSettings, Route, Target
from streams.notifier.cli import app
from streams.notifier.routing import route_for
from streams.notifier.runner import wait_or_stop
from streams.notifier.slack import RetryPolicy, json_payload, percent_of_budget, post_with_retry, slack_message
from streams.notifier.state import DeliveryState
from tests.notifier.conftest import alert
from tests.notifier.fake_slack import FakeSlack

FAST = RetryPolicy(max_attempts=4, backoff_base_s=0.01, backoff_max_s=0.02)


def test_message_figures_forecast_and_message_text() -> None:
    a = alert(
        kind="forecast", pct=0, spend="1234.5", budget="2000", projected_breach=datetime(2027, 3, 24, tzinfo=UTC), message="GPU spend up 3x"
    )
    m = slack_message(a)
    assert m["text"] == ":crystal_ball: Budget forecast to exceed: acme/ml at 61.7% of budget"
    assert m["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Budget forecast to exceed: acme/ml at 61.7% of budget", "emoji": True},
    }
    texts = [f["text"] for f in m["blocks"][1]["fields"]]
    assert "*Spend*\n1,234.50 USD" in texts and "*Budget amount*\n2,000.00 USD" in texts
    assert "*Forecast breach*\n24 Mar 2027" in texts and "*Kind*\nforecast" in texts
    assert m["blocks"][2] == {"type": "section", "text": {"type": "mrkdwn", "text": "GPU spend up 3x"}}
    assert a.alert_id in m["blocks"][3]["elements"][0]["text"]


def test_message_names_the_top_models_and_keys_driving_the_spend() -> None:
    a = replace(
        alert(spend="812.5"),
        top_models=[SpendShare(name="llama-70b", spend=Decimal("600")), SpendShare(name="gpt-4o", spend=Decimal("212.5"))],
        top_keys=[SpendShare(name="key-ml-batch", spend=Decimal("812.5"))],
    )
    drivers = [
        f["text"] for b in slack_message(a)["blocks"] if b["type"] == "section" for f in b.get("fields", []) if f["text"].startswith("*Top")
    ]
    assert drivers == ["*Top models*\nllama-70b: 600.00 USD\ngpt-4o: 212.50 USD", "*Top keys*\nkey-ml-batch: 812.50 USD"]
    assert json_payload(a)["top_models"] == [{"name": "llama-70b", "spend": "600"}, {"name": "gpt-4o", "spend": "212.5"}]


def test_percent_is_decimal_and_zero_budget_is_not_a_crash() -> None:
    assert percent_of_budget(alert(spend="0.0005", budget="0.001")) == Decimal("50.0")
    assert percent_of_budget(alert(spend="1", budget="3")) == Decimal("33.3")
    zero = alert(spend="12", budget="0")
    assert percent_of_budget(zero) is None
    assert "*Percent of budget*\nn/a (zero budget)" in [f["text"] for f in slack_message(zero)["blocks"][1]["fields"]]
    body = json_payload(alert(spend="0.1", budget="0.3"))
    assert body["spend"] == "0.1" and body["percent_of_budget"] == "33.3"


def valid_block_kit(message: dict) -> None:
    """Parse every block with slack_sdk's Block Kit models and run their validation (lengths, counts, types)."""
    assert isinstance(message["text"], str) and len(message["text"]) <= 3000
    for raw in message["blocks"]:
        block = Block.parse(raw)
        assert block is not None, f"not a Block Kit block: {raw}"
        block.validate_json()
        assert block.to_dict() == raw, "slack_sdk reads the block as written"


def test_periods_are_shown_in_the_budgets_zone_with_an_inclusive_last_day() -> None:
    berlin = replace(
        alert(),
        period_start=datetime(2026, 10, 31, 23, tzinfo=UTC),
        period_end=datetime(2026, 11, 30, 23, tzinfo=UTC),
        timezone="Europe/Berlin",
        kind="forecast",
        projected_breach=datetime(2026, 11, 24, 23, 30, tzinfo=UTC),
    )
    daily = replace(alert(), period_start=datetime(2026, 11, 29, tzinfo=UTC), period_end=datetime(2026, 11, 30, tzinfo=UTC))
    weekly = replace(alert(), period_start=datetime(2026, 12, 28, tzinfo=UTC), period_end=datetime(2027, 1, 4, tzinfo=UTC))
    periods = [
        dict(f["text"].lstrip("*").split("*\n", 1) for f in slack_message(a)["blocks"][1]["fields"]) for a in (berlin, daily, weekly)
    ]
    assert [p["Period"] for p in periods] == ["1–30 Nov 2026 (Europe/Berlin)", "29 Nov 2026 (UTC)", "28 Dec 2026 – 3 Jan 2027 (UTC)"]
    assert periods[0]["Forecast breach"] == "25 Nov 2026", "the breach day in Berlin, not UTC's 24th"
    for a in (berlin, daily, weekly):
        valid_block_kit(slack_message(a))


def test_user_supplied_strings_are_mrkdwn_escaped_and_messages_stay_valid() -> None:
    hostile = replace(
        alert(scope="<!channel>&co", message="spend by <@U123> & <https://evil|click>" * 200),
        budget_id="b<1>",
        top_models=[SpendShare(name="<!here>", spend=Decimal("1"))],
        top_keys=[SpendShare(name="k&" * 1500, spend=Decimal("2"))],
    )
    message = slack_message(hostile)
    valid_block_kit(message)
    mrkdwn = [message["text"]] + [
        t
        for b in message["blocks"]
        for t in (
            [f["text"] for f in b.get("fields", [])]
            + [e["text"] for e in b.get("elements", [])]
            + ([b["text"]["text"]] if b["type"] == "section" and "text" in b else [])
        )
    ]
    assert all("<" not in t and ">" not in t for t in mrkdwn), "no raw < or > reaches Slack's mrkdwn"
    assert "*Scope*\n&lt;!channel&gt;&amp;co" in mrkdwn and "*Budget*\nb&lt;1&gt;" in mrkdwn
    assert any("&lt;!here&gt;: 1.00 USD" in t for t in mrkdwn)
    assert message["blocks"][0]["text"]["text"].startswith("Budget 50% threshold reached: <!channel>&co"), (
        "plain_text is shown as is, never parsed"
    )


def test_routes_match_whole_segments_longest_first() -> None:
    ns = NotifierSettings(
        routes=[Route(name="a", match="acme", url="http://x/a"), Route(name="a-ml", match="/acme/ml/", url="http://x/b")],
        default=Target(name="d", url="http://x/d"),
    )
    assert route_for("acme", ns).name == "a"
    assert route_for("acme/research/p1", ns).name == "a"
    assert route_for("acme/ml", ns).name == "a-ml"
    assert route_for("acme/ml/llm", ns).name == "a-ml"
    assert route_for("acme/mlops", ns).name == "a"
    assert route_for("acmecorp", ns).name == "d"
    assert route_for("acme/ml model=llama-70b", ns).name == "a-ml"  # a per-model budget routes like its team
    assert route_for("globex", NotifierSettings()) is None


async def test_retry_classes() -> None:
    with FakeSlack() as slack:
        hook = slack.new_hook()
        async with httpx.AsyncClient(timeout=2) as client:
            for _ in range(4):
                slack.then(hook, 503, "service_unavailable")
            seen: list[int | None] = []
            out = await post_with_retry(client, hook, {"text": "x"}, FAST, on_attempt=lambda s, d: seen.append(s))
            assert (out.status, out.attempts, out.http_status) == ("exhausted", 4, 503)
            assert seen == [503] * 4 and slack.messages(hook) == []

            out = await post_with_retry(client, slack.base_url + "/services/T/B/nope", {"text": "x"}, FAST)
            assert (out.status, out.attempts, out.http_status, out.detail) == ("failed", 1, 404, "no_service")
            out = await post_with_retry(client, hook, {"blocks": []}, FAST)
            assert (out.status, out.attempts, out.http_status, out.detail) == ("failed", 1, 400, "no_text")

            slack.then(hook, 429, "rate_limited", Retry_After="0.3")
            started = time.monotonic()
            out = await post_with_retry(client, hook, {"text": "y"}, FAST)
            assert (out.status, out.attempts) == ("delivered", 2) and time.monotonic() - started >= 0.3
            assert slack.messages(hook) == [{"text": "y"}]

            slack.then(hook, 500, "oops")
            stop = asyncio.Event()
            stop.set()
            out = await post_with_retry(client, hook, {"text": "z"}, FAST, sleep=lambda s: wait_or_stop(stop, s))
            assert (out.status, out.attempts) == ("interrupted", 1)

        dead_port = slack.server.server_address[1]
    async with httpx.AsyncClient(timeout=1) as client:  # the server is gone: connection refused
        out = await post_with_retry(client, f"http://127.0.0.1:{dead_port}/services/T/B/x", {"text": "x"}, FAST)
    assert out.status == "exhausted" and out.http_status is None and out.detail == "network: ConnectError"


@pytest.fixture
def no_chosen_config() -> Iterator[None]:
    """The notifier's --config chooses the process-wide settings file; forget it after the test."""
    yield
    use_config_file(None)


def test_settings_from_yaml_keep_urls_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_chosen_config: None) -> None:
    config = tmp_path / "notifier.yaml"
    config.write_text(
        "topics: {budget_alerts: my.alerts}\nnotifier:\n  state_dir: %s\n  max_attempts: 3\n"
        "  default: {name: ops, url: 'https://hooks.slack.com/services/T1/B1/supersecret'}\n"
        "  routes:\n    - {name: acme, match: acme, url: 'https://hooks.slack.com/services/T2/B2/acmesecret'}\n"
        "    - {name: fin, match: initech/finance, format: json, url: 'https://example.test/hook'}\n" % (tmp_path / "st")
    )
    monkeypatch.setenv("GPULEDGER_NOTIFIER__MAX_ATTEMPTS", "5")
    settings = load_settings(config)
    ns = settings.notifier
    assert settings.topics.budget_alerts == "my.alerts" and ns.max_attempts == 5  # the environment wins over the file
    assert [r.name for r in ns.routes] == ["acme", "fin"] and ns.routes[1].format == "json"
    assert ns.default is not None and ns.default.url.get_secret_value().endswith("supersecret")
    assert "supersecret" not in repr(settings) and "acmesecret" not in str(settings)

    result = CliRunner().invoke(app, ["status", "--config", str(config)])
    assert result.exit_code == 0 and "no delivery state yet" in result.output
    state = DeliveryState(ns.state_file)
    state.begin("a1", "acme")
    state.attempt("a1", 200, "ok")
    state.finish("a1", "delivered", "acme")
    state.close()
    result = CliRunner().invoke(app, ["status", "--config", str(config)])
    assert result.exit_code == 0 and "delivered=1" in result.output and "secret" not in result.output


def test_run_refuses_to_start_without_any_target(tmp_path: Path, no_chosen_config: None) -> None:
    config = tmp_path / "empty.yaml"
    config.write_text(f"notifier: {{state_dir: {tmp_path}}}\n")
    result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 1 and "no routes and no default target" in result.output
