"""The weekly digest per team: its week in the team's zone, its figures from the real ClickHouse and Kafka, and
exactly one Slack message per team and week, posted to the local fake Slack webhook server (Slack itself cannot
be reached from here; ``FakeSlack`` answers as incoming webhooks do)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from gpuledger.clickhouse import connect
from gpuledger.kafka import new_producer
from gpuledger.sections.notifier import DigestSchedule, Target
from gpuledger.settings import Settings
from schemas import BudgetStatus, InferenceUsage, LedgerLine, OrgDirectory, codec_for
from streams.enrich import PricedUsage
from streams.notifier.digest import DigestSender, due_week
from streams.notifier.runner import wait_or_stop
from streams.notifier.state import DeliveryState
from streams.sink import ledger_row, usage_row
from streams.store.digest import team_week
from streams.store.tables import LEDGER_COLUMNS, USAGE_COLUMNS
from tests.notifier.conftest import Running, notifier_settings, wait_until
from tests.notifier.fake_slack import FakeSlack
from tests.support import ROOT, isolated, ledger_line, settings_env

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # Monday 09:00 in Berlin: the week of 23-29 Nov is due
WEEK_START = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)  # Monday 23 Nov 00:00 in Berlin
BERLIN = DigestSchedule(scope="acme/ml", weekday="monday", at=time(9), timezone="Europe/Berlin")


def test_the_due_week_is_the_last_full_local_week() -> None:
    before = due_week(BERLIN, NOW - timedelta(minutes=1))  # 08:59 local: the week before is still the latest due
    at = due_week(BERLIN, NOW)
    assert (before.start, before.end, before.digest_id) == (WEEK_START - timedelta(days=7), WEEK_START, "digest/acme/ml/2026-W47")
    assert (at.start, at.end, at.digest_id) == (WEEK_START, WEEK_START + timedelta(days=7), "digest/acme/ml/2026-W48")
    # Summer time ended on Sunday 25 Oct 2026: that week has 169 hours, midnight to midnight in Berlin.
    autumn = due_week(BERLIN, datetime(2026, 10, 26, 12, tzinfo=UTC))
    assert (autumn.start, autumn.end) == (datetime(2026, 10, 18, 22, tzinfo=UTC), datetime(2026, 10, 25, 23, tzinfo=UTC))
    friday = due_week(DigestSchedule(scope="acme/ml", weekday="friday", at=time(9), timezone="America/New_York"), NOW)
    assert friday.end == datetime(2026, 11, 23, 5, tzinfo=UTC)  # Friday 27 Nov 09:00 not reached: the week of 16-22 Nov


def line(line_id: str, when: datetime, team: str, model: str, cost: str, kind: str = "api") -> LedgerLine:
    return ledger_line(line_id, kind, when, cost, org="acme", team=team, model=model, basis="tokens" if kind == "gpu" else "")


def routed(event_id: str, cost: str, baseline: str, rule: str) -> PricedUsage:
    when = WEEK_START + timedelta(days=2)
    usage = InferenceUsage(
        event_id=event_id,
        request_start=when,
        request_end=when,
        key_id="k",
        model="gpt-4o-mini",
        backend="openai",
        prompt_tokens=10,
        completion_tokens=10,
        latency_ms=1.0,
        status="ok",
        requested_model="auto",
        route_rule=rule,
        baseline_model="gpt-4o",
    )
    return PricedUsage(
        usage,
        OrgDirectory(kind="api_key", key="k", org="acme", team="ml", project="p"),
        "api",
        "",
        Decimal(cost),
        None,
        None,
        "",
        Decimal(baseline),
        "b",
    )


@pytest.fixture(scope="module")
def week_data(stack_settings: Settings) -> Iterator[Settings]:
    """acme/ml's week: 12.8495 USD spent (two models and idle), 1.65 USD saved by routing, one budget at 40 %."""
    settings = isolated(stack_settings, "digest")
    client = connect(settings.clickhouse)
    client.insert(
        "ledger",
        [
            ledger_row(x, 1)
            for x in (
                line("a", WEEK_START + timedelta(hours=1), "ml", "gpt-4o-mini", "10.004"),
                line("g", WEEK_START + timedelta(days=3), "ml", "llama-8b", "2.3455", kind="gpu"),
                line("i", WEEK_START + timedelta(days=4), "ml", "NVIDIA H100", "0.5", kind="idle"),
                line("early", WEEK_START - timedelta(seconds=1), "ml", "gpt-4o-mini", "100"),  # the week before, in Berlin
                line("other", WEEK_START + timedelta(hours=1), "search", "gpt-4o-mini", "7"),  # another team
            )
        ],
        column_names=list(LEDGER_COLUMNS),
    )
    client.insert(
        "usage_events",
        [usage_row(routed("r1", "1.20", "3.00", "default"), 0, 1), usage_row(routed("r2", "0.40", "0.25", "fallback:1"), 0, 2)],
        column_names=list(USAGE_COLUMNS),
    )

    async def standings() -> None:
        producer = new_producer(settings.kafka)
        await producer.start()
        try:
            for budget_id, team, spend in (("ml-weekly", "ml", "40"), ("search-weekly", "search", "99")):
                status = BudgetStatus(
                    budget_id=budget_id,
                    org="acme",
                    team=team,
                    mode="soft",
                    period_start=NOW,
                    period_end=NOW + timedelta(days=7),
                    spend=Decimal(spend),
                    amount=Decimal(100),
                    currency="USD",
                    exhausted=False,
                    evaluated_at=NOW,
                )
                await producer.send_and_wait(settings.topics.budget_status, codec_for(BudgetStatus).encode(status), key=budget_id.encode())
        finally:
            await producer.stop()

    asyncio.run(standings())
    yield settings


def sections(message: dict[str, object]) -> dict[str, str]:
    """Each section's bold title -> its text below the title."""
    found: dict[str, str] = {}
    for block in message["blocks"]:  # type: ignore[attr-defined]
        for text in [block.get("text", {}).get("text", "")] + [f["text"] for f in block.get("fields", [])]:
            if text.startswith("*"):
                title, _, body = text.partition("\n")
                found[title.strip("*")] = body
    return found


async def test_one_message_per_team_and_week_with_its_figures(week_data: Settings, slack: FakeSlack, tmp_path: Path) -> None:
    hook = slack.new_hook("ml")
    ns = notifier_settings(tmp_path, default=Target(name="ml", url=hook), digests=[BERLIN])

    async def sweep(now: datetime) -> list[str]:
        state = DeliveryState(ns.state_file)  # a fresh ledger connection each time: a restarted notifier
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                return await DigestSender(week_data, ns, state, client, lambda s: wait_or_stop(asyncio.Event(), s)).send_due(now)
        finally:
            state.close()

    assert await sweep(NOW) == ["digest/acme/ml/2026-W48"]
    assert await sweep(NOW + timedelta(hours=3)) == []  # same week, and after a restart: nothing more
    [message] = slack.messages(hook)
    got = sections(message)
    assert message["blocks"][0]["text"]["text"] == "Weekly AI spend: acme/ml"
    assert got["Week"] == "23–29 Nov 2026 (Europe/Berlin)"
    assert got["Spend"] == "12.85 USD"  # 10.004 + 2.3455 + 0.5: not the line a second before the week, not another team's
    assert got["Top models"] == "gpt-4o-mini: 10.00 USD\nllama-8b: 2.35 USD"
    assert got["Routing savings"] == "1.65 USD saved: 1.60 USD actual vs 3.25 USD at the baseline models, over 2 routed requests"
    assert got["Budgets"] == "ml-weekly (acme/ml): 40.00 USD of 100.00 USD (40.0%)"
    assert got["Cost per successful outcome"] == "_no outcomes_"  # the outcomes views exist, the team recorded none that week
    assert await sweep(NOW + timedelta(days=7)) == ["digest/acme/ml/2026-W49"]  # the next week: its own message
    assert len(slack.messages(hook)) == 2


def test_cost_per_outcome_section_reads_the_outcomes_view_when_it_exists(week_data: Settings) -> None:
    """A stand-in with the columns the digest reads from cost_per_outcome_daily (day, org, team, kind, cost, successes), created here."""
    client = connect(week_data.clickhouse)
    client.command(
        "CREATE VIEW IF NOT EXISTS outcomes_stand_in AS SELECT toDate('2026-11-24') AS day, 'acme' AS org, 'ml' AS team, "
        "'ticket_resolved' AS kind, toDecimal128('8.40', 9) AS cost, toUInt64(21) AS successes"
    )
    figures = team_week(
        client, week_data.clickhouse.database, "acme", "ml", WEEK_START, WEEK_START + timedelta(days=7), "outcomes_stand_in"
    )
    assert [(a.name, a.amount) for a in figures.cost_per_success or []] == [("ticket_resolved", Decimal("0.4"))]  # 8.40 / 21
    odd = team_week(
        client, week_data.clickhouse.database, "acme", "ml", WEEK_START, WEEK_START + timedelta(days=7), "ledger"
    )  # another shape
    assert odd.cost_per_success is None


async def test_the_running_notifier_posts_the_due_digest_once(week_data: Settings, slack: FakeSlack, tmp_path: Path) -> None:
    hook = slack.new_hook("run")
    ns = notifier_settings(tmp_path, default=Target(name="run", url=hook), digests=[BERLIN], digest_check_s=0.2, record_history=False)
    first = Running(week_data, ns)
    await wait_until(lambda: len(slack.messages(hook)) >= 1, what="the digest")
    await first.shutdown()
    second = Running(week_data, ns)
    await asyncio.sleep(1.0)  # five checks
    await second.shutdown()
    [message] = slack.messages(hook)
    assert message["blocks"][-1]["elements"][0]["text"] == f"digest `{due_week(BERLIN, datetime.now(UTC)).digest_id}`"


def test_preview_digest_prints_a_teams_message_and_refuses_a_bad_zone(week_data: Settings, tmp_path: Path) -> None:
    env = {**os.environ, **settings_env(week_data, tmp_path)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gpuledger.commands.cli", "notifier", "preview-digest", *args],
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )

    ok = cli("--scope", "acme/ml", "--timezone", "Europe/Berlin")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    message = json.loads(ok.stdout)
    assert message["blocks"][0]["text"]["text"] == "Weekly AI spend: acme/ml"
    assert sections(message)["Budgets"] == "ml-weekly (acme/ml): 40.00 USD of 100.00 USD (40.0%)"
    bad = cli("--scope", "acme/ml", "--timezone", "Mars/Olympus")
    assert bad.returncode == 1 and "unknown time zone 'Mars/Olympus'" in bad.stdout
