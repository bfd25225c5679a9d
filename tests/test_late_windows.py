"""Late data for a closed GPU window is booked as adjustments in the open period, never dropped (README, "Late data").

Real Kafka, the real worker process and the real ClickHouse. The window is 8 hours old, past the
default ``restate_hours`` (6), so its lines must never be rewritten in place.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from gpuledger.clickhouse import connect
from gpuledger.kafka import new_producer
from gpuledger.settings import Settings
from schemas import GpuSample, InferenceUsage, codec_for
from tests.support import WorkerProcess, caught_up, demo_worker, wait_until

GPU = "GPU-late-0000-0000-0000-000000000001"
pytestmark = pytest.mark.engines


@pytest.fixture
def late(stack_settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, WorkerProcess]]:
    with demo_worker(stack_settings, "late_windows", tmp_path / "worker") as running:
        yield running


def samples(window: datetime) -> list[GpuSample]:
    return [
        GpuSample(
            sample_id=f"gpu-node-a/{GPU}/{i}",
            node="gpu-node-a",
            gpu_uuid=GPU,
            gpu_index=0,
            gpu_model="NVIDIA H100 80GB HBM3",
            interval_start=window + timedelta(seconds=5 * i),
            interval_end=window + timedelta(seconds=5 * (i + 1)),
            utilization_pct=50.0,
            memory_used_bytes=0,
            memory_total_bytes=80 * 2**30,
            power_watts=300.0,
        )
        for i in range(12)
    ]


def request(window: datetime) -> InferenceUsage:
    end = window + timedelta(seconds=30)
    return InferenceUsage(
        event_id="late-request-1",
        request_start=end - timedelta(seconds=2),
        request_end=end,
        key_id="key-search-ranker",
        model="llama-3.1-8b-instruct",
        backend="vllm",
        prompt_tokens=700,
        completion_tokens=300,
        latency_ms=2000.0,
        status="ok",
        node="gpu-node-a",
        gpu_uuids=[GPU],
    )


async def publish(settings: Settings, sample_list: list[GpuSample], usage: list[InferenceUsage]) -> None:
    producer = new_producer(settings.kafka)
    await producer.start()
    try:
        for s in sample_list:
            await producer.send_and_wait(settings.topics.gpu_samples, key=s.gpu_uuid.encode(), value=codec_for(GpuSample).encode(s))
        for u in usage:
            await producer.send_and_wait(
                settings.topics.inference_usage, key=u.event_id.encode(), value=codec_for(InferenceUsage).encode(u)
            )
    finally:
        await producer.stop()


def test_closed_window_first_seen_late_is_booked_as_adjustments_in_the_open_period(late: tuple[Settings, WorkerProcess]) -> None:
    settings, worker = late
    client = connect(settings.clickhouse)
    window = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=8)
    stamp = int(window.timestamp())

    def adjustments() -> list[tuple]:
        return client.query(
            "SELECT line_id, org, cost, adjusts_line_id, adjusts_window, event_time FROM ledger FINAL WHERE kind = 'adjustment' ORDER BY line_id"
        ).result_rows

    # 1. The whole window arrives 8 h late: H100 at 2.49/h, 60 s, no workload and no tokens -> 0.0415 idle for platform,
    #    booked now (open period), naming the window it belongs to; nothing is written into the closed period.
    started = datetime.now(UTC)
    asyncio.run(publish(settings, samples(window), []))
    first = wait_until(lambda: adjustments(), 60, "the late window's adjustment", worker)
    assert [(r[0], r[1], r[2], r[3]) for r in first] == [
        (f"adj:idle:{GPU}:{stamp}#1", "platform", Decimal("0.0415"), f"idle:{GPU}:{stamp}")
    ]
    assert first[0][4].replace(tzinfo=UTC) == window and first[0][5].replace(tzinfo=UTC) >= started - timedelta(seconds=5)
    assert client.query("SELECT count() FROM ledger FINAL WHERE event_time < now() - INTERVAL 6 HOUR").result_rows[0][0] == 0

    # 2. A request for that window arrives later still: 50 % busy -> 0.02075 moves from platform's idle to search.
    asyncio.run(publish(settings, [], [request(window)]))
    rows = wait_until(lambda: r if len(r := adjustments()) == 3 else None, 60, "the correction's two adjustments", worker)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (f"adj:gpu:{GPU}:{stamp}:search/ranking/reranker/CC-1001/llama-3.1-8b-instruct/key-search-ranker#1", "search", Decimal("0.02075")),
        (f"adj:idle:{GPU}:{stamp}#1", "platform", Decimal("0.0415")),
        (f"adj:idle:{GPU}:{stamp}#2", "platform", Decimal("-0.02075")),
    ]
    totals = dict(client.query("SELECT org, sum(cost) FROM ledger FINAL GROUP BY org").result_rows)
    assert totals == {"platform": Decimal("0.02075"), "search": Decimal("0.02075")}

    # 3. The same events again (a replay, a spool flushed twice): nothing moves.
    asyncio.run(publish(settings, samples(window), [request(window)]))
    wait_until(lambda: caught_up(settings), 60, "the replay consumed", worker)
    time.sleep(3)  # two allocator passes over the replayed rows
    assert len(adjustments()) == 3
    assert "late data for closed GPU windows" in worker.log.read_text()
