"""SIGTERM stops the worker within its grace period even when an insert hangs inside ClickHouse's client.

ClickHouse is reached through a local TCP proxy (tests/hostile/stalling_proxy.py) that forwards
bytes unchanged until told to stall; then requests get no answer, as from a server hung on a
disk. The insert thread cannot be cancelled, so only the grace-period exit can end the process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest

from gpuledger.clickhouse import connect
from gpuledger.kafka import new_producer
from gpuledger.settings import Settings
from schemas import InferenceUsage, codec_for
from tests.hostile.stalling_proxy import StallingProxy
from tests.support import WorkerProcess, consumer_lag, isolated, wait_until

pytestmark = pytest.mark.engines
PROXY_PORT = int(os.environ.get("GPULEDGER_TEST_PORT_BASE", "29000")) + 330


def test_sigterm_ends_a_worker_whose_insert_hangs_within_the_grace_period(stack_settings: Settings, tmp_path: Path) -> None:
    base = isolated(stack_settings, "hangstop")
    target = urlparse(base.clickhouse.url)
    settings = base.model_copy(
        update={
            "clickhouse": base.clickhouse.model_copy(update={"url": f"http://127.0.0.1:{PROXY_PORT}"}),
            "worker": base.worker.model_copy(update={"shutdown_grace_seconds": 3.0}),
        }
    )
    with StallingProxy(PROXY_PORT, (target.hostname or "127.0.0.1", target.port or 8123)) as proxy:
        worker = WorkerProcess(settings, tmp_path / "worker").start()
        try:
            asyncio.run(_send(settings, _event("first")))
            client = connect(base.clickhouse)  # straight to ClickHouse, not through the proxy
            wait_until(
                lambda: client.query("SELECT count() FROM usage_events").result_rows[0][0] == 1, 60, "the first event stored", worker
            )
            proxy.stall()
            asyncio.run(_send(settings, _event("hang")))
            time.sleep(3)  # the batch is handed to the (now hanging) insert
            assert worker.proc is not None
            started = time.monotonic()
            worker.proc.send_signal(signal.SIGTERM)
            code = worker.proc.wait(settings.worker.shutdown_grace_seconds + 10)
            took = time.monotonic() - started
        finally:
            worker.stop()
    assert took <= settings.worker.shutdown_grace_seconds + 3, took
    assert code == 6, worker.log.read_text()[-2000:]
    assert "did not stop within its grace period" in worker.log.read_text()
    assert asyncio.run(consumer_lag(settings, [settings.topics.inference_usage])) == 1  # not committed: read again by the next worker


def _event(event_id: str) -> bytes:
    now = datetime.now(UTC)
    return codec_for(InferenceUsage).encode(
        InferenceUsage(
            event_id=event_id,
            request_start=now - timedelta(seconds=1),
            request_end=now,
            key_id="k",
            model="m",
            backend="openai",
            prompt_tokens=1,
            completion_tokens=1,
            latency_ms=1.0,
            status="ok",
        )
    )


async def _send(settings: Settings, value: bytes) -> None:
    producer = new_producer(settings.kafka)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topics.inference_usage, value)
    finally:
        await producer.stop()
