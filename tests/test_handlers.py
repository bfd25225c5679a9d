"""The worker's handlers, policies and batcher, each on its own: no Faust app, no engines.

``create_app`` only wires these objects; the pipeline tests run them inside the real worker
against the real Kafka and ClickHouse. Here the reference tables are fed records through their
own change handler (what their Kafka view calls), and the dead-letter sender is a small recorder
of what would be sent (its Kafka side is tested in tests/test_ingest_failures.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gpuledger.settings import Settings
from schemas import GpuSample, InferenceUsage, ModelEquivalent, OrgDirectory, Price, codec_for
from schemas.keys import equivalent_key, org_key, price_key
from streams import reference
from streams.batching import RecordBatcher
from streams.handlers import EventChecks, GuardedPass, ReferenceData, ReferenceRejects, SampleRows, UsageRows, settled_after
from streams.ingest import DeadLetters
from streams.store.tables import LEDGER_COLUMNS, SAMPLE_COLUMNS, USAGE_COLUMNS
from streams.validation import TimeWindow

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
MINI = Price(
    sku="gpt-4o-mini",
    kind="token",
    currency="USD",
    effective_from=datetime(2026, 1, 1, tzinfo=UTC),
    input_per_mtok=Decimal("0.15"),
    cached_input_per_mtok=Decimal("0.075"),
    output_per_mtok=Decimal("0.60"),
)
SEARCH = OrgDirectory(kind="api_key", key="key-search", org="search", team="ranking", project="web", cost_centre="CC-1")
NODE = OrgDirectory(kind="node", key="gpu-node-1", org="platform")


@dataclass
class Origin:
    topic: str = "usage"
    partition: int = 3
    offset: int = 41
    key: bytes | None = None
    value: bytes | None = None


def usage(model: str = "gpt-4o-mini", key_id: str = "key-search", **changes: Any) -> InferenceUsage:
    fields: dict[str, Any] = dict(
        event_id="e-1",
        request_start=NOW - timedelta(seconds=3),
        request_end=NOW - timedelta(seconds=1),
        key_id=key_id,
        model=model,
        backend="openai",
        prompt_tokens=1200,
        cached_prompt_tokens=1000,
        completion_tokens=350,
        latency_ms=2000.0,
        status="ok",
    )
    return InferenceUsage(**{**fields, **changes})


def sample(node: str = "gpu-node-1") -> GpuSample:
    return GpuSample(
        sample_id=f"{node}/GPU-1/1",
        node=node,
        gpu_uuid="GPU-1",
        gpu_index=0,
        gpu_model="NVIDIA H100 80GB HBM3",
        interval_start=NOW - timedelta(seconds=10),
        interval_end=NOW,
        utilization_pct=50.0,
        memory_used_bytes=1,
        memory_total_bytes=2,
        power_watts=300.0,
    )


def loaded_reference() -> ReferenceData:
    """The four tables, fed the way their compacted-topic views feed them."""
    settings = Settings()
    data = ReferenceData(
        *(make(settings) for make in (reference.org_table, reference.price_table, reference.budget_table, reference.equivalent_table))
    )
    data.orgs._changed(
        {
            org_key("api_key", "key-search"): codec_for(OrgDirectory).encode(SEARCH),
            org_key("node", "gpu-node-1"): codec_for(OrgDirectory).encode(NODE),
        }
    )
    data.prices._changed({price_key(MINI): codec_for(Price).encode(MINI)})
    llama = ModelEquivalent(model="llama-3.1-8b-instruct", api_sku="gpt-4o-mini", effective_from=datetime(2026, 1, 1, tzinfo=UTC))
    data.equivalents._changed({equivalent_key(llama): codec_for(ModelEquivalent).encode(llama)})
    for table in data.tables:
        table.view.caught_up.set()
    return data


def test_usage_rows_price_an_api_request_for_its_payer() -> None:
    data = loaded_reference()
    rows = UsageRows(data.lookup, "unassigned")(Origin(), usage(), data.books())
    event = dict(zip(USAGE_COLUMNS, rows["usage_events"][0], strict=True))
    line = dict(zip(LEDGER_COLUMNS, rows["ledger"][0], strict=True))
    # README: (200 × 0.15 + 1,000 × 0.075 + 350 × 0.60) / 1,000,000 = 0.000315
    assert (event["org"], event["team"], event["cost"], event["priced_as"]) == ("search", "ranking", Decimal("0.000315"), "api")
    assert (event["source_partition"], event["source_offset"]) == (3, 41)
    assert (line["line_id"], line["cost"], line["org"], line["event_time"]) == (
        "api:e-1",
        Decimal("0.000315"),
        "search",
        NOW - timedelta(seconds=1),
    )


def test_usage_rows_of_a_self_hosted_model_write_no_line_but_their_api_equivalent() -> None:
    data = loaded_reference()
    rows = UsageRows(data.lookup, "unassigned")(
        Origin(), usage(model="llama-3.1-8b-instruct", key_id="nobody", gpu_uuids=["GPU-1"]), data.books()
    )
    event = dict(zip(USAGE_COLUMNS, rows["usage_events"][0], strict=True))
    assert "ledger" not in rows
    assert (event["org"], event["priced_as"], event["cost"], event["api_equivalent_cost"]) == (
        "unassigned",
        "gpu",
        Decimal(0),
        Decimal("0.000315"),
    )


def test_sample_rows_name_the_node_owner_or_the_unassigned_org() -> None:
    data = loaded_reference()
    rows = SampleRows(data.lookup, "unassigned")
    owned = dict(zip(SAMPLE_COLUMNS, rows(Origin(offset=7), sample())["gpu_samples"][0], strict=True))
    stray = dict(zip(SAMPLE_COLUMNS, rows(Origin(), sample("gpu-node-9"))["gpu_samples"][0], strict=True))
    assert (owned["owner_org"], owned["source_offset"], stray["owner_org"]) == ("platform", 7, "unassigned")


def test_event_checks_use_the_clock_at_check_time() -> None:
    clock = [NOW]
    checks = EventChecks(TimeWindow(future_skew=timedelta(minutes=5), max_age=timedelta(days=90)), clock=lambda: clock[0])
    assert checks.usage(usage()) is None
    assert checks.sample(sample()) is None
    clock[0] = NOW - timedelta(hours=1)  # the same event now lies an hour in the future
    assert "future" in (checks.usage(usage()) or "")
    clock[0] = NOW + timedelta(days=91)
    assert checks.sample(sample()) is not None


class RecordingSender:
    """Stands in for ``AckedSender``: records what would be sent, failing the first ``failures`` sends."""

    def __init__(self, failures: int = 0) -> None:
        self.failures, self.sent = failures, []

    async def send_with_headers(self, items: list[Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("injected: Kafka unreachable")
        self.sent.extend(items)


def test_reference_rejects_are_dead_lettered_and_kept_while_kafka_is_away() -> None:
    sender = RecordingSender(failures=1)
    rejects = ReferenceRejects(DeadLetters(sender, "dead"))  # type: ignore[arg-type]
    rejects("app-prices-changelog", b"token:x", b"garbage", "undecodable: unknown magic byte")
    asyncio.run(rejects.settle())  # Kafka away: logged, not raised, still queued
    assert sender.sent == []
    asyncio.run(rejects.settle())
    [(topic, key, value, headers)] = sender.sent
    assert (topic, key, value) == ("dead", b"token:x", b"garbage")
    assert dict(headers)["x-stage"] == b"reference"
    assert dict(headers)["x-reason"] == b"reference: undecodable: unknown magic byte"
    assert "x-origin-offset" not in dict(headers)  # compaction may remove it: no offset promised


def _failures(task: str) -> float:
    return REGISTRY.get_sample_value("gpuledger_worker_pass_failures_total", {"task": task}) or 0.0


def test_guarded_pass_waits_for_the_reference_data_and_survives_failures() -> None:
    async def scenario() -> list[Any]:
        ready, runs = asyncio.Event(), []

        async def run() -> None:
            runs.append(len(runs))
            if len(runs) == 2:
                raise RuntimeError("injected: ClickHouse away")

        guarded = GuardedPass("unit-pass", run, ready.wait)
        waiting = asyncio.create_task(guarded())
        await asyncio.sleep(0.01)
        assert runs == []  # nothing runs against half-read reference data
        ready.set()
        return [await waiting, await guarded(), await guarded(), runs]

    before = _failures("unit-pass")
    first, second, third, runs = asyncio.run(scenario())
    assert (first, second, third, runs) == (True, False, True, [0, 1, 2])
    assert _failures("unit-pass") == before + 1


def test_settled_after_prepares_only_once_ready() -> None:
    async def scenario() -> list[str]:
        ready, log = asyncio.Event(), []

        def rows(records: list[int]) -> int:
            log.append(f"prepared {len(records)}")
            return len(records)

        task = asyncio.create_task(settled_after(ready.wait, rows)([1, 2]))
        await asyncio.sleep(0.01)
        log.append("ready")
        ready.set()
        log.append(f"returned {await task}")
        return log

    assert asyncio.run(scenario()) == ["ready", "prepared 2", "returned 2"]


class Steps:
    """Records the order of the batcher's steps; ``store`` holds each batch until released."""

    def __init__(self, store_failures: int = 0) -> None:
        self.log: list[str] = []
        self.store_failures = store_failures
        self.release = asyncio.Event()

    async def prepare(self, batch: list[int]) -> list[int]:
        self.log.append(f"prepared {batch}")
        return [n * 10 for n in batch]

    async def store(self, prepared: list[int]) -> None:
        await self.release.wait()
        if self.store_failures:
            self.store_failures -= 1
            self.log.append("store failed")
            raise ConnectionError("injected: dead letters could not be sent")
        self.log.append(f"stored {prepared}")

    async def acknowledge(self, batch: list[int]) -> None:
        self.log.append(f"acked {batch}")


def test_record_batcher_is_due_by_size_or_age() -> None:
    now = [100.0]
    batcher = RecordBatcher(Steps().store, size=3, seconds=0.5, clock=lambda: now[0])
    assert batcher.wait_seconds() is None
    batcher.add([1])
    now[0] += 0.2
    assert batcher.wait_seconds() == pytest.approx(0.3) and not batcher.due()
    now[0] += 0.3
    assert batcher.due()
    batcher.pending.clear()
    batcher.add([1, 2, 3])
    assert batcher.due()  # full: due at once


def test_record_batcher_prepares_the_next_batch_while_storing_and_acks_in_order() -> None:
    async def scenario() -> list[str]:
        steps = Steps()
        batcher = RecordBatcher(steps.store, prepare=steps.prepare, size=3, seconds=0.5)
        batcher.add([1, 2, 3, 4, 5, 6, 7, 8])
        flushing = asyncio.create_task(batcher.flush(steps.acknowledge))
        await asyncio.sleep(0.01)
        # the first batch is being stored (held); the second is already prepared, waiting its turn
        assert steps.log == ["prepared [1, 2, 3]", "prepared [4, 5, 6]"]
        assert batcher.pending == [4, 5, 6, 7, 8]  # nothing leaves the queue before the batch before it is stored
        steps.release.set()
        await flushing
        await batcher.wait()
        return steps.log

    assert asyncio.run(scenario()) == [
        "prepared [1, 2, 3]",
        "prepared [4, 5, 6]",
        "stored [10, 20, 30]",
        "acked [1, 2, 3]",
        "prepared [7, 8]",
        "stored [40, 50, 60]",
        "acked [4, 5, 6]",
        "stored [70, 80]",
        "acked [7, 8]",
    ]


def test_record_batcher_retries_a_failed_batch_and_acknowledges_only_after_it_is_stored() -> None:
    async def scenario() -> list[str]:
        steps = Steps(store_failures=2)
        steps.release.set()
        batcher = RecordBatcher(steps.store, prepare=steps.prepare, size=10, seconds=0.1, name="unit", max_backoff=0.01)
        batcher.add([1, 2])
        await batcher.flush(steps.acknowledge)
        await batcher.wait()
        return steps.log

    before = REGISTRY.get_sample_value("gpuledger_worker_batch_retries_total", {"agent": "unit"}) or 0.0
    assert asyncio.run(scenario()) == ["prepared [1, 2]", "store failed", "store failed", "stored [10, 20]", "acked [1, 2]"]
    assert REGISTRY.get_sample_value("gpuledger_worker_batch_retries_total", {"agent": "unit"}) == before + 2


def test_record_batcher_close_leaves_the_batch_being_stored_unacknowledged() -> None:
    async def scenario() -> list[str]:
        steps = Steps()
        batcher = RecordBatcher(steps.store, prepare=steps.prepare, size=10, seconds=0.1)
        batcher.add([1])
        await batcher.flush(steps.acknowledge)
        await batcher.close()  # shutdown while ClickHouse holds the insert
        steps.release.set()
        await asyncio.sleep(0.01)
        return steps.log

    assert asyncio.run(scenario()) == ["prepared [1]"]
