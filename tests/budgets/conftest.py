"""Budget test helpers: an isolated namespace with the demo directory and prices, usage events, budgets."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gpuledger.clickhouse import connect
from gpuledger.commands.budgets import save
from gpuledger.commands.reference_import import import_orgs, import_prices
from gpuledger.kafka import new_producer
from gpuledger.settings import Settings
from schemas import Budget, InferenceUsage, codec_for
from streams.budgets.definitions import BudgetSpec
from streams.notifier import NotifierSettings, Target, run_notifier
from tests.support import ROOT, isolated

DEMO = ROOT / "gpuledger" / "data" / "demo"
MODEL = "claude-sonnet-4"  # 3.00 USD per million input tokens in the demo price list
KEYS = {"research": "key-research-agents", "support": "key-support-bot", "finance": "key-finance-ops"}


@pytest.fixture
def budget_env(stack_settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """Own topics, group and database, with the demo org directory and price list published."""
    settings = isolated(stack_settings, "b" + request.node.name.removeprefix("test_")[:36])
    asyncio.run(import_orgs(settings, DEMO / "orgs.yaml"))
    asyncio.run(import_prices(settings, DEMO / "prices.yaml"))
    return settings


def noon_zone(now: datetime | None = None) -> str:
    """A fixed-offset zone where it is about noon now, so a daily period is ~12 h from either end whenever tests run."""
    hours = 12 - (now or datetime.now(UTC)).hour
    hours = hours - 24 if hours > 12 else hours
    return "UTC" if hours == 0 else f"Etc/GMT{-hours:+d}"  # POSIX sign: Etc/GMT-5 is UTC+5


def usage(event_id: str, org: str, usd: int, at: datetime) -> InferenceUsage:
    """A request that costs exactly ``usd`` dollars (``usd`` x 1/3 M prompt tokens is not whole; use multiples of 3)."""
    assert usd % 3 == 0, "claude-sonnet-4 costs 3 USD per million prompt tokens"
    return InferenceUsage(
        event_id=event_id,
        request_start=at - timedelta(seconds=1),
        request_end=at,
        key_id=KEYS[org],
        model=MODEL,
        backend="anthropic",
        prompt_tokens=usd // 3 * 1_000_000,
        completion_tokens=0,
        latency_ms=1000.0,
        status="ok",
    )


def publish_usage(settings: Settings, events: list[InferenceUsage]) -> None:
    async def run() -> None:
        producer = new_producer(settings.kafka)
        await producer.start()
        try:
            encode = codec_for(InferenceUsage).encode
            for e in events:
                await producer.send(settings.topics.inference_usage, encode(e), key=e.event_id.encode())
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(run())


def set_budgets(settings: Settings, *entries: dict[str, Any]) -> list[Budget]:
    return asyncio.run(save(settings, [BudgetSpec.model_validate(e) for e in entries]))


def raised_alerts(settings: Settings) -> list[tuple[str, str, int]]:
    """(budget_id, kind, threshold_pct) of every alert recorded in ClickHouse, in order of raising."""
    rows = (
        connect(settings.clickhouse)
        .query("SELECT budget_id, kind, threshold_pct FROM budget_alerts FINAL ORDER BY raised_at, threshold_pct")
        .result_rows
    )
    return [tuple(r) for r in rows]  # type: ignore[misc]


class NotifierThread:
    """The real notifier (``run_notifier``) on an event loop of its own, so sync tests can run it beside the worker."""

    def __init__(self, settings: Settings, ns: NotifierSettings) -> None:
        self.settings, self.ns = settings, ns
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        async def main() -> None:
            self.stop_event = asyncio.Event()
            await run_notifier(self.settings, self.ns, self.stop_event)

        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def __enter__(self) -> NotifierThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        while self.stop_event is None and self.thread.is_alive():
            time.sleep(0.01)
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(20)
        if self.error is not None:
            raise self.error


def notifier_for(settings: Settings, state_dir: Path, hook: str) -> NotifierSettings:
    """Notifier settings posting everything to ``hook`` (it reads ``settings.topics.budget_alerts``, this namespace's)."""
    return NotifierSettings(
        group_id=f"{settings.worker.app_id}-notifier",
        state_dir=state_dir,
        default=Target(name="default", url=hook),
        backoff_base_s=0.05,
        backoff_max_s=0.2,
    )
