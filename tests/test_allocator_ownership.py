"""The allocator's work split across workers by samples partition (``streams.ownership``), with the same exactness.

The unit tests need no engine. The split test runs real allocators against the real ClickHouse:
three workers, each owning some of eight partitions, write exactly the lines one lone allocator writes.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner

from gpuledger.clickhouse import connect
from gpuledger.settings import Settings
from schemas import GpuSample, Price
from streams.allocator import GpuAllocator
from streams.ownership import (
    EVERYTHING,
    OwnedPartitions,
    Watermarks,
    consumer_ownership,
    partition_of,
)
from streams.pricing import PriceBook
from streams.sink import ClickHouseSink, sample_row
from streams.store.tables import LEDGER_COLUMNS, SAMPLE_COLUMNS
from streams.workloads import LabelKeys
from tests.support import isolated

GPUS = [f"GPU-own-{i:04d}" for i in range(40)]
SPLIT = [frozenset({0, 3, 6}), frozenset({1, 4, 7}), frozenset({2, 5})]  # three workers on eight partitions


def test_partition_of_is_kafkas_default_partitioner() -> None:
    """A unit's owner is the consumer of the partition its GPU's samples (keyed by uuid) are produced to."""
    for gpu in GPUS:
        assert partition_of(gpu, 8) == DefaultPartitioner()(gpu.encode(), list(range(8)), list(range(8)))


def _view(owned: frozenset[int]) -> OwnedPartitions:
    """Eight partitions, ``owned`` of them this worker's, keys placed by Kafka's default partitioner."""
    return OwnedPartitions(owned, lambda unit: partition_of(unit, 8))


def test_every_unit_has_exactly_one_owner_and_the_split_is_not_lopsided() -> None:
    views = [_view(owned) for owned in SPLIT]
    owners = [[i for i, view in enumerate(views) if view.owns(gpu)] for gpu in GPUS]
    assert all(len(o) == 1 for o in owners)
    assert {o[0] for o in owners} == {0, 1, 2}


def test_consumer_ownership_reads_only_the_samples_topic_and_owns_nothing_before_assignment() -> None:
    assignment: set[tuple[str, int]] = set()
    asked: list[tuple[str, bytes]] = []

    def key_partition(topic: str, key: bytes) -> int | None:
        asked.append((topic, key))
        return None if key == b"unknown" else partition_of(key.decode(), 8)

    view = consumer_ownership(lambda: assignment, key_partition, "samples")
    assert view() is None
    assignment.update({("samples", 1), ("usage", 2)})
    current = view()
    assert current is not None and current.owned == frozenset({1})
    mine = [gpu for gpu in GPUS if partition_of(gpu, 8) == 1]
    assert mine and [gpu for gpu in GPUS if current.owns(gpu)] == mine
    assert not current.owns("unknown")  # topic not in the consumer's metadata yet: owned by nobody here
    assert {topic for topic, _ in asked} == {"samples"}


def test_watermarks_look_back_over_the_horizon_for_a_gained_partition() -> None:
    horizon, first, later = (datetime(2026, 1, 1, h, tzinfo=UTC) for h in (0, 5, 6))
    marks = Watermarks()
    one = _view(frozenset({0}))
    assert marks.since(one, horizon) == horizon
    marks.advance(one, first)
    assert marks.since(one, horizon) == first
    two = _view(frozenset({0, 1}))  # partition 1 handed over by a rebalance
    assert marks.since(two, horizon) == horizon
    marks.advance(two, later)
    assert marks.since(two, horizon) == later
    assert marks.since(_view(frozenset({1})), horizon) == later  # kept across a revocation: re-read from there


def _samples(window: datetime) -> list[GpuSample]:
    return [
        GpuSample(
            sample_id=f"own/{gpu}/{i}",
            node="gpu-node-a",
            gpu_uuid=gpu,
            gpu_index=n % 8,
            gpu_model="NVIDIA H100 80GB HBM3",
            interval_start=window + timedelta(seconds=5 * i),
            interval_end=window + timedelta(seconds=5 * (i + 1)),
            utilization_pct=float(10 + n),
            memory_used_bytes=0,
            memory_total_bytes=80 * 2**30,
            power_watts=300.0,
        )
        for n, gpu in enumerate(GPUS)
        for i in range(12)
    ]


def _allocator(settings: Settings, view: OwnedPartitions | None) -> GpuAllocator:
    prices = PriceBook(
        [
            Price(
                sku="NVIDIA H100 80GB HBM3",
                kind="gpu_hour",
                currency="USD",
                effective_from=datetime(2026, 1, 1, tzinfo=UTC),
                per_hour=Decimal("2.49"),
            )
        ]
    )
    client = connect(settings.clickhouse)
    return GpuAllocator(
        client=client,
        sink=ClickHouseSink(client, settings.clickhouse.database),
        database=settings.clickhouse.database,
        window_seconds=60,
        restate_hours=6,
        owners=lambda kind, key: None,
        prices=lambda: prices,
        unassigned="unassigned",
        label_keys=LabelKeys.of(settings.worker),
        ownership=(lambda: view) if view else EVERYTHING,
    )


@pytest.mark.engines
def test_three_owners_write_exactly_the_lines_of_one_allocator(stack_settings: Settings, tmp_path: Path) -> None:
    settings = isolated(stack_settings, "allocator_split")
    client = connect(settings.clickhouse)
    window = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3)
    client.insert(
        "gpu_samples", [sample_row(s, "platform", 0, i) for i, s in enumerate(_samples(window))], column_names=list(SAMPLE_COLUMNS)
    )

    lone = _allocator(settings, None).plan(PriceBook([]))  # no price: nothing derivable, nothing written
    assert lone[1] == []
    single = {row[0]: row for row in _rows(_allocator(settings, None))}
    assert len(single) == len(GPUS)  # one idle line per GPU window
    parts = [{row[0]: row for row in _rows(_allocator(settings, _view(owned)))} for owned in SPLIT]
    assert all(parts), "every worker owns some of the forty GPUs"
    assert sum(len(p) for p in parts) == len(single)  # no line derived twice
    cost = LEDGER_COLUMNS.index("cost")
    merged = {lid: row[cost] for p in parts for lid, row in p.items()}
    assert merged == {lid: row[cost] for lid, row in single.items()}

    # The split allocators store their lines; a second pass (nothing new) writes nothing, and the ledger holds each line once.
    workers = [_allocator(settings, _view(owned)) for owned in SPLIT]
    assert sum(asyncio.run(w.run_once()) for w in workers) == len(GPUS)
    assert sum(asyncio.run(w.run_once()) for w in workers) == 0
    assert client.query("SELECT count(), sum(cost) FROM ledger FINAL").result_rows[0] == (len(GPUS), sum(merged.values()))


def _rows(allocator: GpuAllocator) -> list[list[object]]:
    prices = allocator.prices()
    view = allocator.ownership()
    return allocator.plan(prices, view)[1]
