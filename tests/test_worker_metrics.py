"""The worker process's /metrics and /healthz, against the real Kafka and ClickHouse, checked by promtool."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from gpuledger.clickhouse import connect
from gpuledger.kafka import new_producer
from gpuledger.settings import Settings
from schemas import InferenceUsage, codec_for
from streams.sink import ClickHouseSink
from tests.promtool import check_metrics
from tests.support import WorkerProcess, isolated, wait_until

pytestmark = pytest.mark.engines


async def produce(settings: Settings, values: list[bytes]) -> None:
    producer = new_producer(settings.kafka)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(settings.topics.inference_usage, value, key=uuid.uuid4().hex.encode())
    finally:
        await producer.stop()


def usage(i: int) -> bytes:
    now = datetime.now(UTC)
    return codec_for(InferenceUsage).encode(
        InferenceUsage(
            event_id=f"wm-{uuid.uuid4().hex}",
            request_start=now,
            request_end=now,
            key_id="k",
            model="m",
            backend="vllm",
            prompt_tokens=i,
            completion_tokens=1,
            latency_ms=1.0,
            status="ok",
        )
    )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(text) for s in family.samples}


def test_worker_serves_metrics_and_health(stack_settings: Settings, tmp_path: Path) -> None:
    port = int(os.environ.get("GPULEDGER_TEST_PORT_BASE", "20000")) + 311
    settings = isolated(stack_settings, "worker_metrics")  # isolated() turns metrics off; settings_env() passes the port on
    settings = settings.model_copy(update={"worker": settings.worker.model_copy(update={"metrics_port": port})})
    worker = WorkerProcess(settings, tmp_path / "worker").start()
    try:
        asyncio.run(produce(settings, [usage(i) for i in range(1, 6)] + [b"\x00not avro"]))
        topic = settings.topics.inference_usage

        def stored() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            try:
                values = samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text)
            except httpx.HTTPError:
                return None
            lag = sum(
                v for (name, labels), v in values.items() if name == "gpuledger_worker_consumer_lag_messages" and ("topic", topic) in labels
            )
            done = values.get(("gpuledger_worker_rows_inserted_total", (("table", "usage_events"),)), 0) >= 5
            return values if done and lag == 0 and any(name == "gpuledger_worker_consumer_lag_messages" for name, _ in values) else None

        values = wait_until(stored, 60, "the worker's metrics to show the batch stored and no lag", worker)
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        worker.stop()
    check_metrics(text)
    assert values[("gpuledger_worker_dead_letters_total", (("stage", "decode"), ("topic", topic)))] == 1
    assert values[("gpuledger_worker_batch_store_duration_seconds_count", (("agent", "usage"),))] >= 1
    assert health.status_code == 200 and health.json()["kafka_ok"] is True and all(health.json()["reference_caught_up"].values())
    assert [v for (name, _), v in values.items() if name == "gpuledger_worker_reference_caught_up"] == [1, 1, 1, 1], (
        "orgs, prices, budgets, equivalents"
    )


def test_insert_attempts_are_counted_stored_and_refused(stack_settings: Settings) -> None:
    """The real ClickHouse through the worker's sink: stored rows are counted, a row refused for its content is a
    poison row (isolated, never counted as stored, never retried), so the retry counter does not move."""
    database = stack_settings.clickhouse.database
    sink = ClickHouseSink(connect(stack_settings.clickhouse), database)
    table = f"wm_{uuid.uuid4().hex[:8]}"
    sink.client.command(f"CREATE TABLE {database}.{table} (x UInt32, CONSTRAINT small CHECK x < 10) ENGINE = Memory")

    def value(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"table": table}) or 0.0

    try:
        refused = asyncio.run(sink.store(table, ["x"], [[1], [2], [99], [3]]))
    finally:
        sink.client.command(f"DROP TABLE {database}.{table}")
    assert list(refused) == [2] and "VIOLATED_CONSTRAINT" in refused[2]
    assert value("gpuledger_worker_rows_inserted_total") == 3
    assert value("gpuledger_worker_poison_rows_total") == 1
    assert value("gpuledger_worker_insert_retries_total") == 0
    assert REGISTRY.get_sample_value("gpuledger_worker_insert_duration_seconds_count", {"table": table}) >= 2
