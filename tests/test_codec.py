"""Avro contracts: round trips, schema evolution in both directions, and decode errors."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from schemas import (
    Budget,
    BudgetAlert,
    BudgetStatus,
    DecodeError,
    GpuProcess,
    GpuSample,
    InferenceUsage,
    LedgerLine,
    OrgDirectory,
    Price,
    SpendShare,
    codec_for,
)
from schemas.codec import CURRENT, HEADER, REGISTRY, parsed_schema

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 1, 12, 0, 5, 250_000, tzinfo=UTC)

EXAMPLES = [
    GpuSample(
        sample_id="n1/GPU-1/1",
        node="n1",
        gpu_uuid="GPU-1",
        gpu_index=0,
        gpu_model="NVIDIA H100 80GB HBM3",
        interval_start=T0,
        interval_end=T1,
        utilization_pct=63.5,
        memory_used_bytes=10,
        memory_total_bytes=20,
        power_watts=300.5,
        mig_instance="MIG-1",
        energy_counter_mj=123_456_789,
        energy_joules=1500.25,
        processes=[GpuProcess(pid=7, container_id="abc", pod="p", namespace="ns", labels={"team": "t"}, gpu_memory_bytes=5)],
    ),
    InferenceUsage(
        event_id="e1",
        request_start=T0,
        request_end=T1,
        key_id="k1",
        model="m",
        backend="vllm",
        prompt_tokens=10,
        completion_tokens=5,
        latency_ms=12.5,
        status="ok",
        gpu_uuids=["GPU-1"],
        cached_prompt_tokens=4,
        ttft_ms=3.25,
        endpoint="chat.completions",
    ),
    OrgDirectory(kind="api_key", key="k1", org="o", team="t", project="p", cost_centre="cc"),
    Price(sku="m", kind="token", currency="USD", effective_from=T0, input_per_mtok=Decimal("0.15"), output_per_mtok=Decimal("0.6")),
    LedgerLine(
        line_id="api:e1",
        kind="api",
        event_time=T1,
        org="o",
        team="t",
        project="p",
        cost_centre="cc",
        model="m",
        price_id="m@x",
        gpu_seconds=Decimal("0"),
        cost=Decimal("0.000001234"),
        currency="USD",
    ),
    BudgetAlert(
        alert_id="a",
        budget_id="b",
        scope="o",
        kind="threshold",
        period_start=T0,
        period_end=T1,
        spend=Decimal("80.5"),
        budget_amount=Decimal("100"),
        currency="USD",
        raised_at=T1,
        threshold_pct=80,
        top_models=[SpendShare(name="m", spend=Decimal("80.5"))],
        top_keys=[SpendShare(name="k1", spend=Decimal("80.5"))],
        mode="hard",
    ),
    Budget(
        budget_id="b",
        org="o",
        team="t",
        model="m",
        period="week",
        timezone="Europe/Berlin",
        amount=Decimal("100"),
        currency="USD",
        thresholds=[25, 100],
        mode="hard",
        updated_at=T1,
    ),
    BudgetStatus(
        budget_id="b",
        org="o",
        team="t",
        mode="hard",
        period_start=T0,
        period_end=T1,
        spend=Decimal("101"),
        amount=Decimal("100"),
        currency="USD",
        exhausted=True,
        evaluated_at=T1,
    ),
]


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: type(r).__name__)
def test_round_trip_is_lossless(record: object) -> None:
    codec = codec_for(type(record))
    assert codec.decode(codec.encode(record)) == record


def test_every_registered_schema_parses() -> None:
    assert {parsed_schema(sid)["name"] for sid in REGISTRY} >= {"dev.gpuledger.v1.InferenceUsage", "dev.gpuledger.v1.Price"}
    assert set(CURRENT.values()) <= set(REGISTRY)


def test_old_producer_v1_is_read_by_new_reader_with_defaults() -> None:
    codec = codec_for(InferenceUsage)
    old = {
        "event_id": "e-old",
        "request_start": T0,
        "request_end": T1,
        "key_id": "k",
        "model": "m",
        "backend": "vllm",
        "deployment": "",
        "node": None,
        "gpu_uuids": [],
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "latency_ms": 1.0,
        "status": "ok",
    }
    record = codec.decode(codec.encode_dict(old, schema_id=2))
    assert record.event_id == "e-old" and record.prompt_tokens == 3
    assert (record.cached_prompt_tokens, record.ttft_ms, record.endpoint) == (0, None, "")


def test_new_producer_v2_is_read_by_old_reader() -> None:
    codec = codec_for(InferenceUsage)
    new = EXAMPLES[1]
    as_v1 = codec.decode_dict(codec.encode(new), reader_id=2)
    assert as_v1["event_id"] == "e1" and as_v1["completion_tokens"] == 5
    assert "cached_prompt_tokens" not in as_v1 and "ttft_ms" not in as_v1


def test_inference_usage_v2_and_v3_read_each_other() -> None:
    """v3 adds usage_estimated: a v2 producer's events read as reported counts; a v2 reader ignores the flag."""
    codec = codec_for(InferenceUsage)
    estimated = replace(EXAMPLES[1], usage_estimated=True)
    as_v2 = codec.decode_dict(codec.encode(estimated), reader_id=3)
    assert "usage_estimated" not in as_v2 and as_v2["ttft_ms"] == 3.25
    from_v2 = codec.decode(codec.encode(estimated, schema_id=3))
    assert from_v2.usage_estimated is False and replace(from_v2, usage_estimated=True) == estimated


def test_budget_alert_v1_from_an_old_producer_reads_with_empty_drivers() -> None:
    codec = codec_for(BudgetAlert)
    v2 = EXAMPLES[5]
    record = codec.decode(codec.encode(v2, schema_id=7))
    assert (record.top_models, record.top_keys, record.mode) == ([], [], "soft")
    assert (record.alert_id, record.spend, record.threshold_pct) == (v2.alert_id, v2.spend, 80)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "too short"),
        (b"\x01\x00\x00\x00\x03abc", "magic byte"),
        (HEADER.pack(0, 999) + b"x", "unknown schema id 999"),
        (HEADER.pack(0, 4) + b"x", "not a inference_usage"),
        (HEADER.pack(0, 3) + b"\xff\xff\xff", "corrupt Avro body"),
    ],
)
def test_undecodable_messages_raise_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        codec_for(InferenceUsage).decode(payload)
    assert reason in err.value.reason


def test_trailing_garbage_is_rejected() -> None:
    codec = codec_for(OrgDirectory)
    with pytest.raises(DecodeError, match="trailing bytes"):
        codec.decode(codec.encode(EXAMPLES[2]) + b"zz")


def test_budget_v1_reads_as_a_spending_budget_and_v2_keeps_its_outcome_kind() -> None:
    """Budgets on the compacted topic written before unit budgets (v1, id 8) still read, as spending budgets."""
    codec = codec_for(Budget)
    old = Budget(budget_id="b", org="o", period="week", amount=Decimal("1"), currency="USD", updated_at=T0)
    assert codec.decode(codec.encode(old, schema_id=8)) == old
    unit = Budget(
        budget_id="u",
        org="o",
        team="t",
        period="week",
        amount=Decimal("0.40"),
        currency="USD",
        updated_at=T0,
        outcome_kind="ticket_resolved",
    )
    assert codec.decode(codec.encode(unit)) == unit
    assert unit.scope == "o/t per successful ticket_resolved"


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: type(r).__name__)
def test_hot_path_decode_equals_the_general_path(record: object) -> None:
    """The fast reader (timestamps read as longs, slots filled directly) gives the very record fastavro's logical path gives."""
    codec = codec_for(type(record))
    data = codec.encode(record)
    general = type(record)(**codec.decode_dict(data))
    fast = codec.decode(data)
    assert fast == general == record
    assert [type(getattr(fast, f.name)) for f in dataclasses.fields(fast)] == [
        type(getattr(general, f.name)) for f in dataclasses.fields(general)
    ]


def test_hot_records_have_a_fast_reader_with_exact_microseconds() -> None:
    from schemas.codec import _fast_reader

    for record_type in (InferenceUsage, GpuSample):
        assert _fast_reader(record_type, CURRENT[record_type]) is not None
    early = datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)  # a negative long: floor division must not round
    usage = replace(EXAMPLES[1], request_start=early, request_end=datetime(2262, 1, 1, 0, 0, 0, 1, tzinfo=UTC))
    assert codec_for(InferenceUsage).decode(codec_for(InferenceUsage).encode(usage)) == usage


def test_hot_path_leaves_bad_bodies_to_the_general_path_errors() -> None:
    codec = codec_for(InferenceUsage)
    data = codec.encode(EXAMPLES[1])
    with pytest.raises(DecodeError, match="trailing bytes"):
        codec.decode(data + b"\x00")
    with pytest.raises(DecodeError, match="corrupt Avro body"):
        codec.decode(data[:12])
