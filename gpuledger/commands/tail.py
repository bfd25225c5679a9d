"""Reading a topic for people: each message as one JSON line, its Avro value decoded by gpuledger's own codec.

Any registered schema version decodes (the schema id in the message header picks the record
type); a value that does not decode is shown with the codec's reason and its first bytes in hex,
which is what a dead letter usually needs. Headers (a dead letter's ``x-reason``, origin topic,
partition and offset) are shown decoded as text.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from gpuledger.kafka import client_options
from gpuledger.settings import KafkaSettings
from schemas import DecodeError, codec_for
from schemas.codec import CURRENT, HEADER, REGISTRY

RAW_PREVIEW = 64
# Schema family ("budget_alert") -> the record type its versions decode into.
_FAMILIES = {REGISTRY[sid].split(".")[0]: record_type for record_type, sid in CURRENT.items()}


class UnknownTopic(Exception):
    """The topic does not exist (or has no partitions)."""


def decode_value(value: bytes | None) -> dict[str, Any]:
    """``{"schema": name, "value": {...}}`` or ``{"error": reason, "raw_hex": first bytes}``; tombstones are ``{"value": null}``."""
    if value is None:
        return {"value": None}
    try:
        if len(value) < HEADER.size:
            raise DecodeError(f"message too short for the 5-byte header ({len(value)} bytes)")
        _, sid = HEADER.unpack_from(value)
        family = REGISTRY.get(sid, "").split(".")[0]
        if family not in _FAMILIES:
            raise DecodeError(f"unknown schema id {sid}; this reader knows {sorted(REGISTRY)}")
        return {"schema": REGISTRY[sid], "value": codec_for(_FAMILIES[family]).decode_dict(value)}
    except DecodeError as exc:
        return {"error": exc.reason, "raw_hex": value[:RAW_PREVIEW].hex(), "raw_bytes": len(value)}


def render(record: ConsumerRecord) -> str:
    """One message as a JSON line."""
    line: dict[str, Any] = {
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": datetime.fromtimestamp(record.timestamp / 1000, UTC).isoformat(),
        "key": record.key.decode("utf-8", "replace") if record.key is not None else None,
    }
    if record.headers:
        line["headers"] = {name: value.decode("utf-8", "replace") if value is not None else None for name, value in record.headers}
    line.update(decode_value(record.value))
    return json.dumps(line, default=_plain, ensure_ascii=False)


def _plain(value: Any) -> Any:
    """Decimals as exact strings (never floats), times as ISO 8601, records as dicts."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "__dataclass_fields__"):
        return {name: getattr(value, name) for name in value.__dataclass_fields__}
    raise TypeError(f"cannot show {type(value).__name__}")


async def tail_topic(
    kafka: KafkaSettings,
    topic: str,
    *,
    from_beginning: bool,
    max_messages: int | None,
    idle_timeout: float | None,
    out: Callable[[str], None],
) -> int:
    """Print messages until ``max_messages`` or ``idle_timeout`` (or for ever); returns how many were printed."""
    consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or await _refreshed_partitions(consumer, topic)
        if not partitions:
            raise UnknownTopic(f"topic {topic!r} does not exist; `gpuledger stack kafka-tool topics --list` lists them")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await (consumer.seek_to_beginning(*assigned) if from_beginning else consumer.seek_to_end(*assigned))
        printed, idle_since = 0, asyncio.get_running_loop().time()
        while max_messages is None or printed < max_messages:
            batches = await consumer.getmany(timeout_ms=200)
            records = sorted((r for rs in batches.values() for r in rs), key=lambda r: (r.timestamp, r.partition, r.offset))
            now = asyncio.get_running_loop().time()
            if records:
                idle_since = now
            elif idle_timeout is not None and now - idle_since >= idle_timeout:
                break
            for record in records[: None if max_messages is None else max_messages - printed]:
                out(render(record))
                printed += 1
        return printed
    finally:
        await consumer.stop()


async def _refreshed_partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka exposes no public refresh
    return consumer.partitions_for_topic(topic) or set()
