"""End to end through the real Kafka, the real Faust worker process and the real ClickHouse."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from rich.console import Console

from gpuledger.clickhouse import connect
from gpuledger.commands.reference_import import import_prices
from gpuledger.commands.report import org_totals as report_totals
from gpuledger.commands.report import render, spend_by_org_model
from gpuledger.commands.simulate import publish_fleet
from gpuledger.kafka import client_options, new_producer
from gpuledger.settings import Settings
from schemas import InferenceUsage, codec_for
from tests.support import (
    ROOT,
    WorkerProcess,
    caught_up,
    demo_worker,
    expected_totals,
    org_totals,
    wait_until,
)

DEMO = ROOT / "gpuledger" / "data" / "demo"
pytestmark = pytest.mark.engines


@pytest.fixture
def pipeline(stack_settings: Settings, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Settings, WorkerProcess]]:
    """A namespace of its own (topics, group, database), reference data loaded, and a running worker."""
    with demo_worker(stack_settings, request.node.name.removeprefix("test_")[:40], tmp_path / "worker") as running:
        yield running


def fleet_start(minutes: int) -> datetime:
    """A fleet of ``minutes`` that ended a minute ago, aligned to the minute."""
    return datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=minutes + 1)


def publish(settings: Settings, tmp_path: Path, *, seed: int, start: datetime, minutes: int, scale: float) -> dict:
    return asyncio.run(
        publish_fleet(
            settings,
            seed=seed,
            start=start,
            minutes=minutes,
            scale=scale,
            orgs=DEMO / "orgs.yaml",
            prices=DEMO / "prices.yaml",
            truth_path=tmp_path / f"truth-{seed}.json",
            console=None,
        )
    )


def test_ledger_equals_ground_truth_and_a_replay_changes_nothing(pipeline: tuple[Settings, WorkerProcess], tmp_path: Path) -> None:
    settings, worker = pipeline
    start = fleet_start(4)
    truth = publish(settings, tmp_path, seed=11, start=start, minutes=4, scale=0.5)
    expected = expected_totals(truth)
    assert "unassigned" in expected, "the fleet has a caller missing from the directory"
    wait_until(lambda: org_totals(settings) == expected, 120, "ledger totals to equal the ground truth", worker)

    client = connect(settings.clickhouse)
    # Every whole GPU's window: its lines add up to hourly rate * covered seconds / 3600, to the nano-unit,
    # with exactly one remainder line; every MIG parent's instances plus its free slices add up to the parent's cost.
    rates = {"NVIDIA H100 80GB HBM3": Decimal("2.49"), "NVIDIA L40S": Decimal("0.89"), "NVIDIA A100-SXM4-80GB": Decimal("2.10")}
    windows = client.query(
        "SELECT if(parent_gpu_uuid != '', parent_gpu_uuid, gpu_uuid) AS unit, event_time, sum(cost), max(gpu_seconds), "
        "anyIf(model, basis IN ('remainder', 'mig-free')), countIf(basis = 'remainder'), countIf(basis = 'mig-free'), uniqExact(gpu_uuid) "
        "FROM ledger FINAL WHERE kind IN ('gpu', 'idle') GROUP BY unit, event_time"
    ).result_rows
    assert len(windows) == 12 * 4  # 8 serving GPUs, 2 training, 1 time-sliced, 1 MIG parent; 4 minutes
    for unit, window, total, seconds, model, remainders, free, gpus in windows:
        assert total == (rates[model] * seconds / 3600).quantize(Decimal("1e-9"), ROUND_HALF_EVEN), (unit, window)
        assert (remainders, free, gpus) in ((1, 0, 1), (3, 1, 4)), (unit, window)  # a GPU; or a parent with 3 instances
    # Every team's spend, including training and notebooks that never metered a token, matches the oracle.
    teams = dict(client.query("SELECT concat(org, '/', team), sum(cost) FROM ledger FINAL GROUP BY org, team").result_rows)
    assert {team: Decimal(v) for team, v in truth["teams"].items()} == teams
    # Each holder is charged on the basis the README names: training and notebooks by SM utilization, a MIG
    # notebook without SM readings by memory, a pod assigned a slice with nothing running by allocation.
    holders = set(
        client.query(
            "SELECT DISTINCT kind, basis, org, team, cost_centre, workload, mig_profile FROM ledger FINAL WHERE workload != '' OR basis = 'mig-free'"
        ).result_rows
    )
    assert {
        ("gpu", "sm", "research", "training", "CC-3009", "research-train/llama-ft-0", ""),
        ("gpu", "sm", "research", "agents", "", "notebooks/alice-nb", ""),
        ("gpu", "sm", "platform", "ml-infra", "CC-9000", "notebooks/bob-nb", ""),
        ("gpu", "memory", "search", "ranking", "CC-1001", "search-prod/ranker-eval-nb", "3g.40gb"),
        ("gpu", "allocation", "finance", "ops", "CC-4001", "finance-jobs/ocr-batch-0", "2g.20gb"),
        ("idle", "mig-free", "platform", "ml-infra", "CC-9000", "", ""),
    } <= holders
    # A team paying from two cost centres keeps both shares (their line ids differ by cost centre).
    centres = client.query(
        "SELECT DISTINCT cost_centre FROM ledger FINAL WHERE kind = 'gpu' AND org = 'support' ORDER BY cost_centre"
    ).result_rows
    assert centres == [("CC-2001",), ("CC-2002",)]

    # The analyst's view agrees with the ledger once the worker's rollup pass has run.
    def caught_up_view() -> tuple[Decimal, int] | None:
        total, tokens = client.query("SELECT sum(total_cost), sum(tokens) FROM spend_by_org_daily").result_rows[0]
        return (total, tokens) if total == sum(expected.values()) else None

    view_total, view_tokens = wait_until(caught_up_view, 30, "the rollups to catch up with the ledger")
    # Tensor-parallel requests (two GPUs each) are counted once in the view's tokens.
    assert view_tokens == client.query("SELECT sum(prompt_tokens + completion_tokens) FROM usage_events FINAL").result_rows[0][0]

    # The report shows the same totals, and counts each request's tokens once (even across two GPUs).
    rows = spend_by_org_model(settings)
    assert report_totals(rows) == expected
    assert (
        sum(r.tokens for r in rows)
        == client.query("SELECT sum(prompt_tokens + completion_tokens) FROM usage_events FINAL").result_rows[0][0]
    )
    console = Console(width=200, record=True)
    console.print(render(rows, "USD"))
    assert f"{sum(expected.values()).quantize(Decimal('0.0001')):,}" in console.export_text()

    # The same events published again: every total and every count stays the same.
    # The replay is the same events byte for byte: the same seed *and* the same start (a start taken
    # again from the clock would be new samples in new windows once a minute had rolled over).
    publish(settings, tmp_path, seed=11, start=start, minutes=4, scale=0.5)
    wait_until(lambda: caught_up(settings), 90, "the worker to consume the replay", worker)
    time.sleep(3)  # at least two allocator passes over the replayed rows
    assert org_totals(settings) == expected
    assert client.query("SELECT count() FROM usage_events FINAL").result_rows[0][0] == truth["usage_events"]
    assert client.query("SELECT count() FROM usage_events").result_rows[0][0] >= truth["usage_events"]


def test_worker_killed_mid_stream_loses_nothing_and_counts_nothing_twice(pipeline: tuple[Settings, WorkerProcess], tmp_path: Path) -> None:
    settings, worker = pipeline
    client = connect(settings.clickhouse)
    stored = lambda: client.query("SELECT count() FROM usage_events").result_rows[0][0]  # noqa: E731
    with ThreadPoolExecutor(1) as pool:
        publishing = pool.submit(publish, settings, tmp_path, seed=23, start=fleet_start(6), minutes=6, scale=4)
        deadline = time.monotonic() + 60
        while stored() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        worker.kill()  # mid-stream: the publisher is still sending
        truth = publishing.result()
    assert 0 < stored() < truth["usage_events"], "the kill must land between the first and the last batch"
    # Restart once the group has expired the dead member, as an orchestrator's restart would:
    # a restart racing the dead member's session sometimes left Faust's consumer idle (see README).
    time.sleep(settings.worker.session_timeout_seconds + 2)
    worker.start()
    wait_until(lambda: org_totals(settings) == expected_totals(truth), 240, "totals to equal the ground truth after restart", worker)
    assert client.query("SELECT count() FROM usage_events FINAL").result_rows[0][0] == truth["usage_events"]


async def _send(settings: Settings, values: list[bytes]) -> list[tuple[int, int]]:
    producer = new_producer(settings.kafka)
    await producer.start()
    try:
        sent = [await (await producer.send(settings.topics.inference_usage, value=v, partition=0)) for v in values]
        return [(m.partition, m.offset) for m in sent]
    finally:
        await producer.stop()


async def _dead_letters(settings: Settings) -> list[tuple[bytes, dict[str, bytes]]]:
    consumer = AIOKafkaConsumer(settings.topics.dead_letter, auto_offset_reset="earliest", **client_options(settings.kafka))
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=3000)
        return [(m.value, dict(m.headers)) for msgs in batch.values() for m in msgs]
    finally:
        await consumer.stop()


def usage_event(event_id: str, when: datetime, *, key_id: str = "key-support-bot", model: str = "gpt-4o-mini") -> InferenceUsage:
    return InferenceUsage(
        event_id=event_id,
        request_start=when - timedelta(seconds=1),
        request_end=when,
        key_id=key_id,
        model=model,
        backend="openai",
        prompt_tokens=1_000_000,
        completion_tokens=1_000_000,
        latency_ms=1000.0,
        status="ok",
    )


def test_malformed_message_goes_to_dead_letter_and_unknown_caller_to_unassigned(pipeline: tuple[Settings, WorkerProcess]) -> None:
    settings, worker = pipeline
    good = codec_for(InferenceUsage).encode(usage_event("after-garbage", datetime.now(UTC), key_id="key-nobody-knows"))
    (_, bad_offset), _ = asyncio.run(_send(settings, [b"{not avro at all", good]))
    client = connect(settings.clickhouse)
    line = wait_until(
        lambda: client.query("SELECT org, cost FROM ledger FINAL WHERE line_id = 'api:after-garbage'").result_rows,
        60,
        "the valid message after the malformed one",
        worker,
    )
    assert line == [("unassigned", Decimal("0.75"))]  # 1M prompt at 0.15 + 1M completion at 0.60
    letters = asyncio.run(_dead_letters(settings))
    assert len(letters) == 1
    value, headers = letters[0]
    assert value == b"{not avro at all"
    assert b"magic byte" in headers["x-reason"]
    assert headers["x-origin-topic"].decode() == settings.topics.inference_usage
    assert (headers["x-origin-partition"], headers["x-origin-offset"]) == (b"0", str(bad_offset).encode())


def test_price_change_applies_from_its_effective_time_only(pipeline: tuple[Settings, WorkerProcess], tmp_path: Path) -> None:
    """The new price is imported while the worker runs (after it stored an event), and applies without a restart."""
    settings, worker = pipeline
    change = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    codec = codec_for(InferenceUsage)
    client = connect(settings.clickhouse)

    def priced() -> list[tuple[str, Decimal, str]]:
        return client.query("SELECT line_id, cost, price_id FROM ledger FINAL WHERE kind = 'api' ORDER BY line_id").result_rows  # type: ignore[return-value]

    asyncio.run(_send(settings, [codec.encode(usage_event("before-change", change - timedelta(seconds=1)))]))
    wait_until(lambda: len(priced()) == 1, 60, "the first event priced", worker)
    new_prices = tmp_path / "prices.csv"
    new_prices.write_text(
        f"sku,kind,currency,effective_from,input_per_mtok,output_per_mtok\ngpt-4o-mini,token,USD,{change.isoformat()},0.10,0.40\n"
    )
    asyncio.run(import_prices(settings, new_prices))
    time.sleep(2)  # the price is published ahead of the events it prices, as in production
    asyncio.run(_send(settings, [codec.encode(usage_event("at-change", change))]))
    rows = wait_until(lambda: (r := priced()) and len(r) == 2 and r, 60, "both events priced", worker)
    assert rows == [
        ("api:at-change", Decimal("0.5"), f"gpt-4o-mini@{change.isoformat()}"),
        ("api:before-change", Decimal("0.75"), "gpt-4o-mini@2026-01-01T00:00:00+00:00"),
    ]
