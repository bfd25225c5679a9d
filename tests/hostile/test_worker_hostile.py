"""Hostile input against one real worker process, the real Kafka and the real ClickHouse.

Each case is sent between good events on one partition. For each: the worker survives,
the bad item is dead-lettered with its reason, the events after it are stored, and the
good events' ledger equals totals worked out by hand below (Decimal, to the cent).
One worker serves every test of this module, to keep the suite short.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from gpuledger.clickhouse import connect
from gpuledger.commands import dead_letters
from gpuledger.commands.reference_import import import_orgs, import_prices
from gpuledger.kafka import new_producer, table_topic
from gpuledger.settings import Settings
from schemas import GpuProcess, GpuSample, InferenceUsage, Price, codec_for
from schemas.codec import REGISTRY
from schemas.keys import price_key
from tests.support import ROOT, WorkerProcess, consumer_lag, isolated, scraped, settings_env, wait_until

pytestmark = pytest.mark.engines
DEMO = ROOT / "gpuledger" / "data" / "demo"
METRICS_PORT = int(os.environ.get("GPULEDGER_TEST_PORT_BASE", "29000")) + 310
NOW = datetime.now(UTC).replace(microsecond=0)
WINDOW = NOW.replace(second=0) - timedelta(minutes=5)
USAGE, SAMPLES = codec_for(InferenceUsage), codec_for(GpuSample)


def usage(event_id: str, **changes: object) -> InferenceUsage:
    """1M prompt + 1M completion tokens of gpt-4o-mini for support: 1M × 0.15 + 1M × 0.60 per million = 0.75 USD."""
    good = InferenceUsage(
        event_id=event_id,
        request_start=NOW - timedelta(seconds=61),
        request_end=NOW - timedelta(seconds=60),
        key_id="key-support-bot",
        model="gpt-4o-mini",
        backend="openai",
        prompt_tokens=1_000_000,
        completion_tokens=1_000_000,
        latency_ms=1000.0,
        status="ok",
    )
    return replace(good, **changes)  # type: ignore[arg-type]


def sample(sample_id: str, **changes: object) -> GpuSample:
    """A full 60 s window of an H100 on gpu-node-a (platform), 50 % busy, no tokens: 2.49 × 60 / 3600 = 0.0415 USD idle."""
    good = GpuSample(
        sample_id=sample_id,
        node="gpu-node-a",
        gpu_uuid="GPU-hostile-0",
        gpu_index=0,
        gpu_model="NVIDIA H100 80GB HBM3",
        interval_start=WINDOW,
        interval_end=WINDOW + timedelta(seconds=60),
        utilization_pct=50.0,
        memory_used_bytes=1 << 30,
        memory_total_bytes=80 << 30,
        power_watts=300.0,
    )
    return replace(good, **changes)  # type: ignore[arg-type]


def truncated(data: bytes) -> bytes:
    return data[:-7]


# (id, bytes on the usage topic, text expected in the dead letter's reason)
BAD_USAGE = [
    ("negative tokens", USAGE.encode(usage("neg", prompt_tokens=-5)), "invalid: prompt_tokens = -5 is outside 0..1,000,000,000,000"),
    ("2^62 tokens", USAGE.encode(usage("huge", completion_tokens=2**62)), "completion_tokens = 4611686018427387904 is outside"),
    ("negative cached", USAGE.encode(usage("negcached", cached_prompt_tokens=-1)), "cached_prompt_tokens = -1 is outside"),
    ("NaN latency", USAGE.encode(usage("nanlat", latency_ms=float("nan"))), "latency_ms = nan is not a finite number"),
    ("Inf ttft", USAGE.encode(usage("infttft", ttft_ms=float("inf"))), "ttft_ms = inf is not a finite number"),
    ("-Inf latency", USAGE.encode(usage("ninflat", latency_ms=float("-inf"))), "latency_ms = -inf is not a finite number"),
    (
        "dated 2100",
        USAGE.encode(usage("y2100", request_start=datetime(2100, 1, 1, tzinfo=UTC), request_end=datetime(2100, 1, 1, 0, 0, 1, tzinfo=UTC))),
        "in the future (clock skew limit)",
    ),
    (
        "dated 1970",
        USAGE.encode(usage("y1970", request_start=datetime(1970, 1, 1, tzinfo=UTC), request_end=datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC))),
        "older than the raw tables' retention (90 days)",
    ),
    ("empty event id", USAGE.encode(usage("")), "invalid: event_id is empty"),
    ("end before start", USAGE.encode(usage("backwards", request_start=NOW)), "request_end"),
    ("truncated Avro", truncated(USAGE.encode(usage("cut"))), "decode: corrupt Avro body"),
    ("unknown schema id", b"\x00\x00\x00\x03\xe7" + USAGE.encode(usage("sid"))[5:], "decode: unknown schema id 999"),
    (
        "wrong record type",
        SAMPLES.encode(sample("s-on-usage")),
        f"is {REGISTRY[SAMPLES.writer_id]}, not a {REGISTRY[USAGE.writer_id]} record",
    ),
    ("empty message", b"", "decode: message too short"),
    ("huge model name", USAGE.encode(usage("bigname", model="m" * 900_000)), "model is 900,000 characters long"),
]
BAD_SAMPLES = [
    ("NaN utilization", SAMPLES.encode(sample("nan-util", utilization_pct=float("nan"))), "utilization_pct = nan is not a finite number"),
    ("Inf utilization", SAMPLES.encode(sample("inf-util", utilization_pct=float("inf"))), "utilization_pct = inf is not a finite number"),
    ("150 % utilization", SAMPLES.encode(sample("util150", utilization_pct=150.0)), "utilization_pct = 150.0 is outside 0..100"),
    ("NaN power", SAMPLES.encode(sample("nan-power", power_watts=float("nan"))), "power_watts = nan is not a finite number"),
    (
        "-Inf memory utilization",
        SAMPLES.encode(sample("ninf-mem", memory_utilization_pct=float("-inf"))),
        "memory_utilization_pct = -inf is not a finite number",
    ),
    ("Inf energy", SAMPLES.encode(sample("inf-energy", energy_joules=float("inf"))), "energy_joules = inf is not a finite number"),
    (
        "NaN process utilization",
        SAMPLES.encode(sample("nan-proc", processes=[GpuProcess(pid=1, sm_utilization_pct=float("nan"))])),
        "processes[].sm_utilization_pct = nan is not a finite number",
    ),
    ("negative gpu index", SAMPLES.encode(sample("neg-index", gpu_index=-1)), "gpu_index = -1 is outside 0..65,535"),
    ("negative memory", SAMPLES.encode(sample("neg-mem", memory_used_bytes=-1)), "memory_used_bytes = -1 is outside"),
    ("end before start", SAMPLES.encode(sample("backwards", interval_end=WINDOW - timedelta(seconds=1))), "is not after interval_start"),
    (
        "dated 2100",
        SAMPLES.encode(
            sample("y2100", interval_start=datetime(2100, 1, 1, tzinfo=UTC), interval_end=datetime(2100, 1, 1, 0, 1, tzinfo=UTC))
        ),
        "in the future",
    ),
    (
        "dated 1970",
        SAMPLES.encode(
            sample("y1970", interval_start=datetime(1970, 1, 1, tzinfo=UTC), interval_end=datetime(1970, 1, 1, 0, 1, tzinfo=UTC))
        ),
        "older than the raw tables' retention",
    ),
    ("empty sample id", SAMPLES.encode(sample("")), "invalid: sample_id is empty"),
    ("usage on samples", USAGE.encode(usage("u-on-samples")), "not a gpu_sample.v2 record"),
]


async def _send(settings: Settings, topic: str, values: list[bytes], **options: object) -> list[int]:
    producer = new_producer(settings.kafka, **options)
    await producer.start()
    try:
        return [(await (await producer.send(topic, value=v, partition=0))).offset for v in values]
    finally:
        await producer.stop()


async def _publish_bad_reference(settings: Settings) -> None:
    """What a hostile producer could write to the prices topic, bypassing the importer."""
    gold = Price(
        sku="gold-model",
        kind="token",
        currency="USD",
        effective_from=datetime(2026, 1, 1, tzinfo=UTC),
        input_per_mtok=Decimal("12345678901234567890123456789"),
        output_per_mtok=Decimal("1"),
    )
    producer = new_producer(settings.kafka)
    await producer.start()
    try:
        topic = table_topic(settings, "prices")
        await producer.send_and_wait(topic, codec_for(Price).encode(gold), key=price_key(gold))
        await producer.send_and_wait(topic, b"\x00\x00\x00\x00\x05garbage", key=b"token:garbage@2026")
    finally:
        await producer.stop()


@pytest.fixture(scope="module")
def hostile(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, WorkerProcess]]:
    settings = isolated(stack_settings, "hostile")
    settings = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"metrics_port": METRICS_PORT, "shutdown_grace_seconds": 4.0})}
    )
    asyncio.run(import_orgs(settings, DEMO / "orgs.yaml"))
    asyncio.run(import_prices(settings, DEMO / "prices.yaml"))
    asyncio.run(_publish_bad_reference(settings))
    worker = WorkerProcess(settings, tmp_path_factory.mktemp("hostile-worker")).start()
    yield settings, worker
    worker.stop()


def _letters(settings: Settings) -> list[dead_letters.DeadLetter]:
    return asyncio.run(dead_letters.read(settings))


def _metric(name: str, **labels: str) -> float:
    """A sample of the worker's /metrics (the exposition parsed by prometheus-client's own parser)."""
    return scraped(f"http://127.0.0.1:{METRICS_PORT}", name, **labels)


def test_bad_events_are_dead_lettered_and_the_good_ones_priced_exactly(hostile: tuple[Settings, WorkerProcess]) -> None:
    settings, worker = hostile
    client = connect(settings.clickhouse)
    # good-0, bad, good-1, bad, ..., good-N on partition 0: every bad event has good ones behind it.
    usage_values, expected_usage_ids = [USAGE.encode(usage("good-0"))], ["good-0"]
    for n, (_, value, _) in enumerate(BAD_USAGE, start=1):
        usage_values += [value, USAGE.encode(usage(f"good-{n}"))]
        expected_usage_ids.append(f"good-{n}")
    # A model whose only price was refused (29 digits) is stored unpriced, not booked at an absurd cost.
    usage_values.append(USAGE.encode(usage("gold", model="gold-model")))
    # claude-sonnet-4 for research: 2M prompt of which 1M cached, 100k completion:
    # 1M × 3.00 + 1M × 0.30 + 100k × 15.00 per million = 3.00 + 0.30 + 1.50 = 4.80 USD.
    usage_values.append(
        USAGE.encode(
            usage(
                "claude",
                key_id="key-research-agents",
                model="claude-sonnet-4",
                prompt_tokens=2_000_000,
                cached_prompt_tokens=1_000_000,
                completion_tokens=100_000,
            )
        )
    )
    sample_values = [SAMPLES.encode(sample("good-sample"))] + [value for _, value, _ in BAD_SAMPLES]
    sample_values.append(SAMPLES.encode(sample("good-sample-2", gpu_uuid="GPU-hostile-1", gpu_index=1)))
    usage_offsets = asyncio.run(_send(settings, settings.topics.inference_usage, usage_values))
    sample_offsets = asyncio.run(_send(settings, settings.topics.gpu_samples, sample_values))

    def api_lines() -> dict[str, Decimal]:
        rows = client.query("SELECT event_id, cost FROM ledger FINAL WHERE kind = 'api'").result_rows
        return {event_id: Decimal(cost) for event_id, cost in rows}

    lines = wait_until(
        lambda: (found := api_lines()) and len(found) == len(expected_usage_ids) + 1 and found, 90, "every good usage event priced", worker
    )
    assert lines == {**{i: Decimal("0.75") for i in expected_usage_ids}, "claude": Decimal("4.80")}
    totals = dict(client.query("SELECT org, sum(cost) FROM ledger FINAL WHERE kind = 'api' GROUP BY org").result_rows)
    assert totals == {"support": Decimal("0.75") * len(expected_usage_ids), "research": Decimal("4.80")}
    stored = dict(client.query("SELECT event_id, priced_as FROM usage_events FINAL").result_rows)
    assert stored == {**{i: "api" for i in expected_usage_ids}, "claude": "api", "gold": "unpriced"}

    wait_until(lambda: client.query("SELECT count() FROM gpu_samples FINAL").result_rows[0][0] == 2, 60, "the good samples", worker)
    assert sorted(r[0] for r in client.query("SELECT sample_id FROM gpu_samples FINAL").result_rows) == ["good-sample", "good-sample-2"]
    # The NaN sample in the same window did not stop allocation: the window is priced, all idle (no tokens).
    window = wait_until(
        lambda: client.query("SELECT org, sum(cost) FROM ledger FINAL WHERE gpu_uuid = 'GPU-hostile-0' GROUP BY org").result_rows,
        60,
        "the GPU window priced",
        worker,
    )
    assert window == [("platform", Decimal("0.0415"))]

    expected = len(BAD_USAGE) + len(BAD_SAMPLES)
    letters = wait_until(
        lambda: (found := [d for d in _letters(settings) if d.stage != "reference"]) and len(found) >= expected and found,
        60,
        "every bad event dead-lettered",
        worker,
    )
    by_origin = {(d.origin_topic, d.origin_offset): d for d in letters}
    wanted = {(settings.topics.inference_usage, usage_offsets[2 * n + 1]) for n in range(len(BAD_USAGE))}
    wanted |= {(settings.topics.gpu_samples, sample_offsets[n + 1]) for n in range(len(BAD_SAMPLES))}
    assert set(by_origin) == wanted, (sorted(wanted - set(by_origin)), sorted(set(by_origin) - wanted))
    for n, (case, value, reason) in enumerate(BAD_USAGE):
        letter = by_origin[(settings.topics.inference_usage, usage_offsets[2 * n + 1])]
        assert reason in letter.reason, (case, letter.reason)
        assert letter.value == (value if len(value) < 900_000 else None), case
    for n, (case, _, reason) in enumerate(BAD_SAMPLES):
        assert reason in by_origin[(settings.topics.gpu_samples, sample_offsets[n + 1])].reason, case

    refs = {d.reason for d in _letters(settings) if d.stage == "reference"}
    assert any("input_per_mtok: 12345678901234567890123456789.000000000 is above the largest accepted price" in r for r in refs), refs
    assert any("undecodable" in r for r in refs), refs
    assert _metric("gpuledger_worker_dead_letters_total", topic=settings.topics.inference_usage, stage="invalid") == 11
    assert _metric("gpuledger_worker_dead_letters_total", topic=settings.topics.inference_usage, stage="decode") == 4
    assert _metric("gpuledger_worker_reference_rejected_total", table="prices") == 2
    worker.assert_alive()


def test_ten_megabyte_messages(hostile: tuple[Settings, WorkerProcess]) -> None:
    """Incompressible 10 MB: the broker refuses it at produce time (message.max.bytes 1 MiB), so no consumer ever sees it.
    A 10 MB model name compresses (lz4) below that limit, so the broker takes it: the worker dead-letters it
    without its value (too large to re-publish; it stays readable at its origin offset) and stores the next event."""
    settings, worker = hostile
    noise = b"\x00\x00\x00\x00\x0b" + os.urandom(10_000_000)
    with pytest.raises(MessageSizeTooLargeError):
        asyncio.run(_send(settings, settings.topics.inference_usage, [noise], max_request_size=16 * 1024 * 1024))
    big = USAGE.encode(usage("ten-mb", model="m" * 10_000_000))
    offsets = asyncio.run(
        _send(settings, settings.topics.inference_usage, [big, USAGE.encode(usage("after-ten-mb"))], max_request_size=16 * 1024 * 1024)
    )
    client = connect(settings.clickhouse)
    wait_until(
        lambda: client.query("SELECT cost FROM ledger FINAL WHERE event_id = 'after-ten-mb'").result_rows == [(Decimal("0.75"),)],
        60,
        "the event after the 10 MB one",
        worker,
    )
    letter = wait_until(
        lambda: [d for d in _letters(settings) if d.origin_offset == offsets[0] and d.origin_topic == settings.topics.inference_usage],
        30,
        "the 10 MB event dead-lettered",
    )[0]
    assert "model is 10,000,000 characters long" in letter.reason and letter.value is None


def test_a_metrics_port_in_use_stops_the_worker_at_start_with_exit_code_5(hostile: tuple[Settings, WorkerProcess], tmp_path: Path) -> None:
    settings, _ = hostile
    env = {
        **os.environ,
        **settings_env(settings, tmp_path),
        "GPULEDGER_WORKER__METRICS_PORT": str(METRICS_PORT),
    }  # the shared worker holds it
    done = subprocess.run(
        [sys.executable, "-m", "gpuledger.commands.cli", "worker"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )
    assert done.returncode == 5, done
    assert f"cannot serve the worker's metrics on 127.0.0.1:{METRICS_PORT}: Address already in use" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_a_poison_row_refused_by_clickhouse_is_isolated_then_replayed_after_the_fix(hostile: tuple[Settings, WorkerProcess]) -> None:
    settings, worker = hostile
    client = connect(settings.clickhouse)
    client.command("ALTER TABLE usage_events ADD CONSTRAINT no_poison CHECK NOT startsWith(event_id, 'poison-')")
    try:
        offsets = asyncio.run(
            _send(
                settings, settings.topics.inference_usage, [USAGE.encode(usage(i)) for i in ("before-poison", "poison-1", "after-poison")]
            )
        )
        wait_until(
            lambda: (
                client.query("SELECT count() FROM ledger FINAL WHERE event_id IN ('before-poison', 'after-poison')").result_rows[0][0] == 2
            ),
            60,
            "the events around the poison row",
            worker,
        )
        letter = wait_until(
            lambda: [d for d in _letters(settings) if d.origin_offset == offsets[1] and d.stage == "store"],
            30,
            "the poison row dead-lettered",
        )[0]
        assert "ClickHouse refused the usage_events row" in letter.reason and "VIOLATED_CONSTRAINT" in letter.reason
        assert _metric("gpuledger_worker_poison_rows_total", table="usage_events") >= 1
    finally:
        client.command("ALTER TABLE usage_events DROP CONSTRAINT no_poison")

    env = {**os.environ, **settings_env(settings, ROOT / ".gpuledger")}
    cli = [sys.executable, "-m", "gpuledger.commands.cli", "dead-letters"]
    listed = subprocess.run([*cli, "list", "--stage", "store"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert listed.returncode == 0 and "VIOLATED_CONSTRAINT" in listed.stdout and f"@{offsets[1]}" in listed.stdout, listed
    shown = subprocess.run([*cli, "show", str(letter.offset)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert shown.returncode == 0 and '"event_id": "poison-1"' in shown.stdout and '"prompt_tokens": 1000000' in shown.stdout, shown
    for _ in range(2):  # twice: a replay is harmless to repeat
        replayed = subprocess.run(
            [*cli, "replay", "--reason", "VIOLATED_CONSTRAINT"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
        )
        assert replayed.returncode == 0 and "replayed 1 dead letter(s)" in replayed.stdout, replayed
    wait_until(
        lambda: client.query("SELECT sum(cost) FROM ledger FINAL WHERE event_id = 'poison-1'").result_rows[0][0] == Decimal("0.75"),
        60,
        "the replayed event priced once",
        worker,
    )


def test_sigterm_stops_a_worker_stuck_retrying_a_store_within_its_grace_period(hostile: tuple[Settings, WorkerProcess]) -> None:
    """Last in this module: it stops the shared worker. The table is renamed away, so every insert fails transiently."""
    settings, worker = hostile
    client = connect(settings.clickhouse)
    client.command("RENAME TABLE usage_events TO usage_events_away")
    try:
        asyncio.run(_send(settings, settings.topics.inference_usage, [USAGE.encode(usage("stuck"))]))
        wait_until(lambda: "clickhouse insert failed; retrying" in worker.log.read_text(), 30, "the worker retrying the insert", worker)
        assert worker.proc is not None
        started = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        code = worker.proc.wait(settings.worker.shutdown_grace_seconds + 6)
        assert time.monotonic() - started <= settings.worker.shutdown_grace_seconds + 5
        assert code in (0, 6), code
        # Nothing committed past the event that was never stored: it is read again by the next worker.
        assert asyncio.run(consumer_lag(settings, [settings.topics.inference_usage])) >= 1
    finally:
        client.command("RENAME TABLE usage_events_away TO usage_events")
