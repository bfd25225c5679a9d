"""CompactedView: the worker's and the gateway's live copy of orgs, prices, budgets and standings."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

import gpuledger.kafka as kafka_module
from gpuledger.kafka import CompactedView, client_options
from gpuledger.settings import KafkaSettings, Settings

pytestmark = pytest.mark.engines


async def _compacted_topic(settings: Settings) -> str:
    name = f"test-view-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 2, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    return name


async def _until(condition: Callable[[], bool], what: str, seconds: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_view_loads_the_topic_then_follows_updates_and_tombstones(stack_settings: Settings) -> None:
    topic = await _compacted_topic(stack_settings)
    producer = AIOKafkaProducer(**client_options(stack_settings.kafka), acks="all")
    await producer.start()
    changes: list[dict[bytes, bytes | None]] = []
    view = CompactedView(stack_settings.kafka, topic, on_change=changes.append)
    try:
        for key, value in ((b"a", b"1"), (b"b", b"2"), (b"a", b"1b")):
            await producer.send_and_wait(topic, value, key=key)
        task = asyncio.create_task(view.run())
        await asyncio.wait_for(view.caught_up.wait(), 30)
        # Loaded whole before anyone is told: the last value per key, in one change set.
        assert view.latest == {b"a": b"1b", b"b": b"2"}
        assert changes == [{b"a": b"1b", b"b": b"2"}]

        # Written while it runs (what the CLI does to a running worker): seen without a restart.
        await producer.send_and_wait(topic, None, key=b"b")
        await producer.send_and_wait(topic, b"3", key=b"c")
        await _until(lambda: view.latest == {b"a": b"1b", b"c": b"3"}, "the tombstone and the new key")
        later = {k: v for batch in changes[1:] for k, v in batch.items()}
        assert later == {b"b": None, b"c": b"3"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()


async def test_backoff_starts_over_after_a_connection_that_worked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three failed connects, then one that read to the end before it broke, then another failed connect.

    The connection attempts are scripted (no broker outage is staged); the retry loop under test is real.
    """
    view = CompactedView(KafkaSettings(), "unused")
    reached_end = iter([False, False, False, True, False])

    async def attempt() -> None:
        view._reached_end = next(reached_end)  # noqa: SLF001 - what a real _follow sets once caught up
        raise ConnectionError("broker unreachable")

    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 5:
            raise asyncio.CancelledError

    follow: Callable[[], Awaitable[None]] = attempt
    monkeypatch.setattr(view, "_follow", follow)
    monkeypatch.setattr(kafka_module.asyncio, "sleep", sleep)
    with pytest.raises(asyncio.CancelledError):
        await view.run()
    steps = [1.0, 2.0, 4.0, 1.0, 2.0]  # the policy's exponential steps; its jitter keeps each wait within [step/2, step]
    assert len(waits) == 5 and all(step / 2 <= wait <= step for wait, step in zip(waits, steps, strict=True)), waits


async def test_a_failing_listener_does_not_stall_the_view(stack_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader whose callback raises (a bug, a record it cannot handle) must not break the connection (a reconnect
    would wait out a backoff, and re-reads the topic each time) nor stop later updates."""
    connections: list[object] = []
    real_reader = kafka_module._reader  # noqa: SLF001

    def counting_reader(kafka: KafkaSettings) -> object:
        connections.append(kafka)
        return real_reader(kafka)

    monkeypatch.setattr(kafka_module, "_reader", counting_reader)
    topic = await _compacted_topic(stack_settings)
    producer = AIOKafkaProducer(**client_options(stack_settings.kafka), acks="all")
    await producer.start()
    seen: list[dict[bytes, bytes | None]] = []

    def listener(changes: dict[bytes, bytes | None]) -> None:
        seen.append(changes)
        if len(seen) == 1:
            raise ValueError("listener bug")

    view = CompactedView(stack_settings.kafka, topic, on_change=listener)
    try:
        await producer.send_and_wait(topic, b"1", key=b"a")
        task = asyncio.create_task(view.run())
        await asyncio.wait_for(view.caught_up.wait(), 30)
        await producer.send_and_wait(topic, b"2", key=b"b")
        await _until(lambda: len(seen) >= 2, "the update after the failing call")
        assert seen == [{b"a": b"1"}, {b"b": b"2"}] and view.latest == {b"a": b"1", b"b": b"2"}
        assert len(connections) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
