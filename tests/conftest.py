"""Test session fixtures: a real Kafka (KRaft) and a real ClickHouse, started once per run.

The test stack uses its own ports and a fresh data folder, so it never touches a
developer's ``gpuledger stack up``. No engine is mocked.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuledger.settings import Settings, StackSettings
from gpuledger.stack import local

ROOT = Path(__file__).resolve().parents[1]
# Two test sessions on one machine (say, two checkouts) each set their own base.
BASE = int(os.environ.get("GPULEDGER_TEST_PORT_BASE", "29000"))
TEST_STACK = StackSettings(
    data_dir=ROOT / ".gpuledger" / f"test-stack-{BASE}",
    kafka_port=BASE + 92,
    kafka_controller_port=BASE + 93,
    clickhouse_http_port=BASE + 123,
    clickhouse_tcp_port=BASE,
    clickhouse_max_memory_bytes=3_000_000_000,
)


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """Settings pointed at a freshly started test stack, with topics created and migrations applied."""
    local.down(TEST_STACK)
    shutil.rmtree(TEST_STACK.data_dir, ignore_errors=True)
    local.up(TEST_STACK)
    settings = Settings(stack=TEST_STACK).with_stack_endpoints()
    from gpuledger.kafka import ensure_topics
    from gpuledger.migrate import apply_migrations

    asyncio.run(ensure_topics(settings))
    apply_migrations(settings)
    try:
        yield settings
    finally:
        local.down(TEST_STACK)
