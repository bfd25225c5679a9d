"""`gpuledger topics` (create, tail) and `gpuledger stack kafka-tool` as real processes against the real Kafka."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from gpuledger.kafka import client_options, new_producer
from gpuledger.settings import Settings
from schemas import BudgetAlert, InferenceUsage, codec_for
from schemas.codec import REGISTRY
from tests.support import ROOT

T0 = datetime(2026, 11, 1, tzinfo=UTC)

pytestmark = pytest.mark.engines


def gpuledger(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GPULEDGER_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers, "GPULEDGER_LOG_LEVEL": "warning"}
    env.pop("GPULEDGER_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "gpuledger.commands.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


async def fill(settings: Settings, topic: str) -> InferenceUsage:
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    usage = InferenceUsage(
        event_id="tail-1",
        request_start=T0,
        request_end=T0,
        key_id="k",
        model="m",
        backend="vllm",
        prompt_tokens=7,
        completion_tokens=3,
        latency_ms=1.5,
        status="ok",
    )
    alert = BudgetAlert(
        alert_id="a/1",
        budget_id="a",
        scope="acme",
        kind="threshold",
        period_start=T0,
        period_end=T0,
        spend=Decimal("12.345"),
        budget_amount=Decimal("10"),
        currency="USD",
        raised_at=T0,
    )
    producer = new_producer(settings.kafka)
    await producer.start()
    try:
        await producer.send_and_wait(topic, codec_for(InferenceUsage).encode(usage), key=b"k1", partition=0)
        await producer.send_and_wait(
            topic,
            b"\x00\x00\x00\x03\xe7garbage",
            key=b"k2",
            partition=0,
            headers=[
                ("x-reason", b"unknown schema id 999"),
                ("x-origin-topic", b"gpuledger.inference-usage.v1"),
                ("x-origin-offset", b"41"),
            ],
        )
        await producer.send_and_wait(topic, codec_for(BudgetAlert).encode(alert, schema_id=9), key=b"k3", partition=1)  # an older version
    finally:
        await producer.stop()
    return usage


def test_tail_decodes_avro_and_shows_dead_letter_headers(stack_settings: Settings) -> None:
    topic = f"tail-{uuid.uuid4().hex[:8]}"
    asyncio.run(fill(stack_settings, topic))
    result = gpuledger(stack_settings, "topics", "tail", topic, "--from-beginning", "--max-messages", "3", "--idle-timeout", "20")
    assert result.returncode == 0, result.stderr
    lines = {json.loads(line)["key"]: json.loads(line) for line in result.stdout.splitlines()}
    assert set(lines) == {"k1", "k2", "k3"}
    assert (
        lines["k1"]["schema"] == REGISTRY[codec_for(InferenceUsage).writer_id]
        and lines["k1"]["value"]["prompt_tokens"] == 7
        and lines["k1"]["value"]["request_start"] == T0.isoformat()
    )
    assert lines["k2"]["headers"] == {
        "x-reason": "unknown schema id 999",
        "x-origin-topic": "gpuledger.inference-usage.v1",
        "x-origin-offset": "41",
    }
    assert lines["k2"]["error"].startswith("unknown schema id 999") and lines["k2"]["raw_hex"].startswith("00000003e7")
    assert (
        lines["k3"]["schema"] == "budget_alert.v2"
        and lines["k3"]["value"]["spend"] == "12.345000000"
        and lines["k3"]["value"]["timezone"] == "UTC"
    )
    console = gpuledger(
        stack_settings,
        "stack",
        "kafka-tool",
        "console-consumer",
        "--topic",
        topic,
        "--from-beginning",
        "--max-messages",
        "3",
        "--timeout-ms",
        "20000",
        "--property",
        "print.key=true",
        "--property",
        "print.value=false",
    )
    assert console.returncode == 0 and {line.split("\t")[0] for line in console.stdout.splitlines()} == {"k1", "k2", "k3"}, console.stderr
    missing = gpuledger(stack_settings, "topics", "tail", f"no-such-{topic}", "--idle-timeout", "1")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_topics_create_and_kafkas_own_tools_run(stack_settings: Settings) -> None:
    plain, create = gpuledger(stack_settings, "topics"), gpuledger(stack_settings, "topics", "create")
    assert plain.returncode == create.returncode == 0 and plain.stdout.startswith("created: ") and create.stdout.startswith("created: ")
    listed = gpuledger(stack_settings, "stack", "kafka-tool", "topics", "--list")
    assert listed.returncode == 0 and stack_settings.topics.inference_usage in listed.stdout.split(), listed.stdout + listed.stderr
    groups = gpuledger(stack_settings, "stack", "kafka-tool", "consumer-groups", "--list")
    assert groups.returncode == 0, groups.stderr
    unknown = gpuledger(stack_settings, "stack", "kafka-tool", "nope")
    assert unknown.returncode == 1 and "consumer-groups" in unknown.stdout
