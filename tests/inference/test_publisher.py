"""Usage publishing: delivered to the real Kafka when it is up; dropped and counted, never blocking, when it is not."""

from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import UTC, datetime

from prometheus_client import REGISTRY

from gpuledger.settings import KafkaSettings, Settings
from inference.metering.openai_usage import MAX_TOKENS
from inference.metering.publisher import UsagePublisher
from schemas import InferenceUsage
from tests.inference.usage_tap import UsageTap


def event(key_id: str) -> InferenceUsage:
    now = datetime.now(UTC)
    return InferenceUsage(
        event_id=uuid.uuid4().hex,
        request_start=now,
        request_end=now,
        key_id=key_id,
        model="m",
        backend="vllm",
        prompt_tokens=1,
        completion_tokens=2,
        latency_ms=1.0,
        status="ok",
        endpoint="completions",
    )


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_events_reach_kafka_and_are_counted(stack_settings: Settings, tap: UsageTap) -> None:
    component, key_id = f"test-{uuid.uuid4().hex[:6]}", f"pub-{uuid.uuid4().hex}"
    publisher = UsagePublisher(stack_settings.kafka, stack_settings.topics.inference_usage, component=component)
    sent = [event(key_id) for _ in range(50)]
    for e in sent:
        publisher.submit(e)
    await publisher.close()
    received = await tap.events(lambda e: e.key_id == key_id, 50)
    assert {e.event_id for e in received} == {e.event_id for e in sent}
    assert counter("gpuledger_usage_events_published_total", component=component) == 50


async def test_overload_drops_and_counts_without_blocking() -> None:
    component = f"test-{uuid.uuid4().hex[:6]}"
    publisher = UsagePublisher(KafkaSettings(bootstrap_servers="127.0.0.1:9"), "nowhere", component=component, queue_size=10)
    started = time.perf_counter()
    for _ in range(1000):
        publisher.submit(event("k"))
    elapsed = time.perf_counter() - started
    await publisher.close(timeout=0.1)
    assert counter("gpuledger_usage_events_dropped_total", component=component, reason="queue_full") == 990
    assert elapsed < 0.05, f"submit must never wait for Kafka ({elapsed * 1000:.1f} ms for 1000 events)"


async def test_an_unencodable_event_is_replaced_by_a_flagged_one_and_the_publisher_goes_on(stack_settings: Settings, tap: UsageTap) -> None:
    """10**30 tokens (what a backend once reported) cannot be Avro-encoded: before, the publisher task died with it."""
    component, key_id = f"test-{uuid.uuid4().hex[:6]}", f"pub-{uuid.uuid4().hex}"
    publisher = UsagePublisher(stack_settings.kafka, stack_settings.topics.inference_usage, component=component)
    huge = dataclasses.replace(event(key_id), prompt_tokens=10**30, latency_ms=float("nan"), model="m" * 5000)
    unfixable = dataclasses.replace(event(key_id), event_id=None)  # type: ignore[arg-type]  # a bug upstream of the publisher
    after = [event(key_id) for _ in range(3)]
    for e in (huge, unfixable, *after):
        publisher.submit(e)
    await publisher.close()
    received = {e.event_id: e for e in await tap.events(lambda e: e.key_id == key_id, 4)}
    replaced = received.pop(huge.event_id)
    assert (replaced.prompt_tokens, replaced.completion_tokens, replaced.usage_estimated, replaced.latency_ms, len(replaced.model)) == (
        MAX_TOKENS,
        2,
        True,
        0.0,
        256,
    )
    assert set(received) == {e.event_id for e in after} and not any(e.usage_estimated for e in received.values())
    assert counter("gpuledger_usage_events_replaced_total", component=component) == 1
    assert counter("gpuledger_usage_events_dropped_total", component=component, reason="unencodable") == 1
    assert counter("gpuledger_usage_events_published_total", component=component) == 4
