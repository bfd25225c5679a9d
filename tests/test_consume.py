"""The worker's consumer: Faust's, with the broker's fetch wait taken from the settings.

Why it matters (``streams.consume``): Faust hard-codes a 1.5 s fetch wait, and aiokafka keeps one fetch in
flight per broker; a fetch naming only partitions that just went quiet held every other partition's new
records back by up to that long. These tests build the real app and the real aiokafka consumer object
against the test stack (the app connects to ClickHouse when it is built; the consumer is not started) and check that the wait the consumer will use is the setting.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gpuledger.settings import Settings
from streams.app import create_app
from streams.consume import BatchingConsumer


@pytest.mark.parametrize("seconds, expected_ms", [(0.1, 100), (0.05, 50), (2.0, 2000)])
def test_the_worker_consumer_waits_for_fetches_as_long_as_configured(
    stack_settings: Settings, tmp_path: Path, seconds: float, expected_ms: int
) -> None:
    worker = stack_settings.worker.model_copy(update={"fetch_wait_seconds": seconds, "data_dir": tmp_path})
    settings = stack_settings.model_copy(update={"worker": worker})
    app = create_app(settings)
    consumer = app.consumer
    assert isinstance(consumer, BatchingConsumer)

    async def built() -> int:  # aiokafka objects are created inside a running loop, as Faust's thread does
        kafka_consumer = consumer._thread._create_worker_consumer(app.transport)  # type: ignore[attr-defined]
        return int(kafka_consumer._fetch_max_wait_ms)

    assert asyncio.run(built()) == expected_ms


def test_the_default_fetch_wait_is_far_below_fausts_own() -> None:
    assert Settings().worker.fetch_wait_seconds <= 0.25  # Faust's own 1.5 s was most of the worker's freshness at 5,000 events/s


def test_a_fetch_wait_outside_its_range_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="fetch_wait_seconds"):
        Settings.model_validate({"worker": {"fetch_wait_seconds": 0}})
