"""Notifier test helpers: a fake Slack per test, alerts, publishing to real Kafka, running the notifier."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gpuledger.kafka import new_producer
from gpuledger.settings import Settings
from schemas import BudgetAlert, codec_for
from streams.notifier import NotifierSettings, run_notifier
from streams.notifier.runner import ensure_alerts_topic
from tests.notifier.fake_slack import FakeSlack

PERIOD = datetime(2027, 3, 1, tzinfo=UTC)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def alert(
    scope: str = "acme/ml",
    pct: int = 50,
    spend: str = "500",
    budget: str = "1000",
    kind: str = "threshold",
    projected_breach: datetime | None = None,
    message: str = "",
) -> BudgetAlert:
    budget_id = f"{scope}-monthly"
    return BudgetAlert(
        alert_id=f"{budget_id}/{PERIOD.date()}/{kind}/{pct}",
        budget_id=budget_id,
        scope=scope,
        kind=kind,
        threshold_pct=pct,
        period_start=PERIOD,
        period_end=PERIOD + timedelta(days=31),
        spend=Decimal(spend),
        budget_amount=Decimal(budget),
        currency="USD",
        raised_at=PERIOD + timedelta(days=10),
        projected_breach=projected_breach,
        message=message,
    )


def notifier_settings(tmp_path: Path, **overrides: Any) -> NotifierSettings:
    name = uuid.uuid4().hex[:10]
    base: dict[str, Any] = {
        "group_id": f"nt-{name}",
        "state_dir": tmp_path / "state",
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.2,
        "redelivery_pause_s": 0.2,
        "request_timeout_s": 5.0,
        "metrics_port": 0,
    }
    return NotifierSettings(**{**base, **overrides})


def alerts_topic(ns: NotifierSettings) -> str:
    """Each test's own alerts topic, named after its own consumer group."""
    return f"{ns.group_id}.alerts"


def with_alerts_topic(settings: Settings, ns: NotifierSettings) -> Settings:
    """``settings`` whose topics.budget_alerts (the topic the notifier reads) is this test's own."""
    return settings.model_copy(update={"topics": settings.topics.model_copy(update={"budget_alerts": alerts_topic(ns)})})


async def publish(settings: Settings, ns: NotifierSettings, alerts: list[BudgetAlert]) -> None:
    await ensure_alerts_topic(with_alerts_topic(settings, ns))
    producer = new_producer(settings.kafka)
    await producer.start()
    try:
        codec = codec_for(BudgetAlert)
        for a in alerts:
            await producer.send_and_wait(alerts_topic(ns), codec.encode(a), key=a.budget_id.encode())
    finally:
        await producer.stop()


async def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Running:
    """A notifier task that a test can stop cleanly or cancel abruptly."""

    def __init__(self, settings: Settings, ns: NotifierSettings) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(run_notifier(with_alerts_topic(settings, ns), ns, self.stop))

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 15)

    async def kill(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, 15)
