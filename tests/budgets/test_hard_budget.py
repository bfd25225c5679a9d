"""Hard budgets: the real gateway (over HTTP, in front of a fake vLLM) stops a scope within seconds of
its budget being exhausted, and lets it through again when the budget is raised or the period rolls
over. Usage flows gateway -> real Kafka -> the worker process -> ClickHouse -> budget status topic -> gateway."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from gpuledger.clickhouse import connect
from gpuledger.commands.budgets import current
from gpuledger.kafka import AckedSender
from gpuledger.sections.gateway import GatewayConfig
from gpuledger.settings import Settings
from inference.gateway.app import create_app
from inference.gateway.budget_guard import BudgetGuard
from schemas import BudgetStatus, codec_for
from streams.budgets.evaluator import BudgetEvaluator, Topics
from tests.budgets.conftest import KEYS, MODEL, noon_zone, set_budgets
from tests.inference.fake_vllm import FakeVllm
from tests.inference.servers import serve
from tests.support import WorkerProcess, wait_until

pytestmark = pytest.mark.engines
SUPPORT, RESEARCH = "sk-support-chatbot", "sk-research-agents"
CHAT = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "word " * 100}]}
# 100 prompt tokens x 3.00 + 100 completion tokens x 15.00 per million = 0.0018 USD per request.
COST = Decimal("0.0018")
AMOUNT = Decimal("0.0090")


def gateway_config(backend_url: str) -> GatewayConfig:
    key = lambda secret, org, team: {"id": KEYS[org], "sha256": hashlib.sha256(secret.encode()).hexdigest(), "org": org, "team": team}  # noqa: E731
    return GatewayConfig.model_validate(
        {
            "backends": [{"name": "fake", "kind": "openai", "base_url": backend_url + "/v1"}],
            "models": [{"name": MODEL, "targets": [{"backend": "fake"}]}],
            "keys": [key(SUPPORT, "support", "chatbot"), key(RESEARCH, "research", "agents")],
        }
    )


def budget(amount: Decimal, zone: str) -> dict[str, str]:
    return {
        "id": "chatbot-hard",
        "org": "support",
        "team": "chatbot",
        "period": "day",
        "timezone": zone,
        "amount": str(amount),
        "mode": "hard",
    }


def test_hard_budget_blocks_within_10s_and_lifts_when_raised_or_rolled_over(budget_env: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings, zone = budget_env, noon_zone()
    set_budgets(settings, budget(AMOUNT, zone))
    worker = WorkerProcess(settings, tmp_path / "worker").start()
    try:
        with (
            serve(FakeVllm(models=(MODEL,)).app()) as backend,
            serve(create_app(gateway_config(backend), settings)) as gateway,
            httpx.Client(base_url=gateway, timeout=10) as http,
        ):

            def ask(secret: str) -> httpx.Response:
                return http.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {secret}"})

            spent, breached_at, deadline = Decimal(0), None, time.monotonic() + 90
            while (answer := ask(SUPPORT)).status_code == 200:
                usage = answer.json()["usage"]
                assert (usage["prompt_tokens"], usage["completion_tokens"]) == (100, 100)
                spent += COST
                if spent >= AMOUNT and breached_at is None:
                    breached_at = time.monotonic()  # this request's ledger line exhausts the budget
                assert time.monotonic() < deadline, "never blocked"
                worker.assert_alive()
                time.sleep(0.2)
            blocked_after = time.monotonic() - breached_at if breached_at else None
            assert answer.status_code == 429, answer.text
            assert blocked_after is not None and blocked_after <= 10, f"blocked {blocked_after} s after the breach"
            error = answer.json()["error"]
            assert (error["type"], error["code"]) == ("insufficient_quota", "budget_exceeded")
            shown = re.match(
                r"Hard budget 'chatbot-hard' \(support/chatbot\) is exhausted: (\d+\.\d+) of 0\.009 USD spent this period; "
                r"requests are refused until the period ends \(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\) or the budget is raised\.$",
                error["message"],
            )
            assert shown, error["message"]
            # The spend shown is the worker's, from whole ledger lines: at least the budget, at most what was answered.
            assert AMOUNT <= Decimal(shown[1]) <= spent and Decimal(shown[1]) % COST == 0, (shown[1], spent)
            assert ask(RESEARCH).status_code == 200  # another org's traffic is not affected

            set_budgets(settings, budget(Decimal("1.00"), zone))  # raised: accepted again within seconds
            wait_until(lambda: ask(SUPPORT).status_code == 200, 15, "the raised budget to let requests through")
            set_budgets(settings, budget(AMOUNT, zone))  # lowered below the spend: refused again
            wait_until(lambda: ask(SUPPORT).status_code == 429, 15, "the lowered budget to block again")

            worker.stop()  # the next period is evaluated by the same evaluator, its clock a day ahead
            asyncio.run(evaluate_at(settings, lambda: datetime.now(UTC) + timedelta(days=1)))
            wait_until(lambda: ask(SUPPORT).status_code == 200, 15, "the new period to let requests through")
    finally:
        worker.stop()
    rejected = connect(settings.clickhouse).query(
        "SELECT count() FROM usage_events FINAL WHERE status = 'rejected' AND key_id = {k:String}", parameters={"k": KEYS["support"]}
    )
    assert rejected.result_rows[0][0] >= 2  # refused requests are metered too (once the worker stored them)


async def evaluate_at(settings: Settings, clock: Callable[[], datetime]) -> None:
    sender = AckedSender(settings.kafka)
    budgets = (await current(settings))[0]
    evaluator = BudgetEvaluator(
        connect(settings.clickhouse),
        settings.clickhouse.database,
        lambda: budgets,
        sender.send_all,
        Topics(settings.topics.budget_alerts, settings.topics.budget_status),
        settings.budgets,
        clock,
    )
    try:
        await evaluator.run_once()
    finally:
        await sender.stop()


def status(period_end: datetime, exhausted: bool = True, **scope: str) -> bytes:
    now = datetime.now(UTC)
    record = BudgetStatus(
        budget_id="b",
        org=scope.get("org", "acme"),
        team=scope.get("team", ""),
        project=scope.get("project", ""),
        model=scope.get("model"),
        mode="hard",
        period_start=now - timedelta(hours=1),
        period_end=period_end,
        spend=Decimal(2),
        amount=Decimal(1),
        currency="USD",
        exhausted=exhausted,
        evaluated_at=now,
    )
    return codec_for(BudgetStatus).encode(record)


def test_guard_matches_scope_and_model_and_expires_with_the_period(stack_settings: Settings) -> None:
    """The guard's decision alone (messages applied directly; the topic plumbing is covered above)."""
    now = datetime.now(UTC)
    guard = BudgetGuard(stack_settings.kafka, "unused", clock=lambda: now)
    guard.apply(b"b", status(now + timedelta(hours=1), team="ml"))
    assert guard.blocking("acme", "ml", "p1", ["m"]) is not None
    assert guard.blocking("acme", "web", "p1", ["m"]) is None
    assert guard.blocking("other", "ml", "", ["m"]) is None
    guard.apply(b"b", status(now + timedelta(hours=1), model="big"))
    assert guard.blocking("acme", "any", "", ["small"]) is None and guard.blocking("acme", "any", "", ["auto", "big"]) is not None
    guard.apply(b"b", status(now - timedelta(seconds=1)))  # the exhausted period is over: nobody waits for the worker
    assert guard.blocking("acme", "ml", "", ["m"]) is None
    guard.apply(b"b", status(now + timedelta(hours=1)))
    guard.apply(b"b", None)  # budget deleted
    assert guard.blocking("acme", "ml", "", ["m"]) is None
