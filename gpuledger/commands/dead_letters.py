"""The dead-letter topic: what the worker refused, why, and where from; decoded and replayed on demand.

The worker copies every message it cannot store to ``topics.dead_letter`` unchanged, with
headers ``x-reason`` (stage and reason), ``x-stage`` (decode, invalid, pricing, store,
reference), ``x-origin-topic``, ``x-origin-partition``, ``x-origin-offset``. After the
cause is fixed (a price imported, a limit raised, a producer corrected), ``replay``
publishes the selected messages to their origin topic again. Replays are harmless:
events carry their id, and storage is keyed by it, so an event stored twice is stored once.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gpuledger.kafka import publish_acked, read_all, table_topic
from gpuledger.settings import Settings
from schemas import DecodeError, GpuSample, InferenceUsage, codec_for
from schemas.keys import REFERENCE_TABLES


@dataclass(frozen=True)
class DeadLetter:
    """One message of the dead-letter topic."""

    offset: int
    time: datetime
    stage: str
    reason: str
    origin_topic: str
    origin_partition: int | None
    origin_offset: int | None
    key: bytes | None
    value: bytes | None

    @property
    def replayable(self) -> bool:
        return self.value is not None and self.stage != "reference"


def _parse(message: Any) -> DeadLetter:
    headers = {k: v.decode(errors="replace") for k, v in (message.headers or ())}
    partition, offset = headers.get("x-origin-partition"), headers.get("x-origin-offset")
    reason = headers.get("x-reason", "")
    return DeadLetter(
        offset=message.offset,
        time=datetime.fromtimestamp(message.timestamp / 1000, UTC),
        stage=headers.get("x-stage", reason.split(":", 1)[0] if ":" in reason else "decode"),
        reason=reason,
        origin_topic=headers.get("x-origin-topic", ""),
        origin_partition=int(partition) if partition and partition.lstrip("-").isdigit() else None,
        origin_offset=int(offset) if offset and offset.lstrip("-").isdigit() else None,
        key=message.key,
        value=message.value,
    )


async def read(settings: Settings) -> list[DeadLetter]:
    """Every dead letter still retained (30 days), oldest first."""
    return [_parse(m) for m in await read_all(settings.kafka, settings.topics.dead_letter)]


def select(
    letters: Iterable[DeadLetter], *, first: int | None = None, last: int | None = None, reason: str | None = None, stage: str | None = None
) -> list[DeadLetter]:
    """Dead letters with offsets in [first, last] whose reason contains ``reason`` (case-insensitive) and whose stage is ``stage``."""
    return [
        d
        for d in letters
        if (first is None or d.offset >= first)
        and (last is None or d.offset <= last)
        and (reason is None or reason.lower() in d.reason.lower())
        and (stage is None or d.stage == stage)
    ]


def record_types(settings: Settings) -> dict[str, type]:
    """The record type of each topic the worker reads."""
    return {
        settings.topics.inference_usage: InferenceUsage,
        settings.topics.gpu_samples: GpuSample,
        **{table_topic(settings, name): record_type for name, record_type in REFERENCE_TABLES.items()},
    }


def decoded(settings: Settings, letter: DeadLetter) -> dict[str, Any]:
    """The payload as its record (JSON-ready), or why it cannot be decoded."""
    record_type = record_types(settings).get(letter.origin_topic)
    if letter.value is None:
        return {"payload": None, "note": "value left out (too large to re-publish); read it at its origin offset"}
    if record_type is None:
        return {"payload": None, "note": f"unknown origin topic {letter.origin_topic!r}", "bytes": len(letter.value)}
    try:
        record = codec_for(record_type).decode(letter.value)
    except DecodeError as exc:
        return {"payload": None, "note": f"undecodable: {exc.reason}", "bytes": len(letter.value), "head_hex": letter.value[:64].hex()}
    return {"payload": json.loads(json.dumps(dataclasses.asdict(record), default=str)), "record": record_type.__name__}


async def replay(settings: Settings, letters: list[DeadLetter]) -> int:
    """Publish each replayable dead letter (same key and value) to its origin topic; returns how many."""
    chosen = [d for d in letters if d.replayable and d.origin_topic]
    if not chosen:
        return 0
    await publish_acked(
        settings.kafka,
        [(d.origin_topic, d.key, d.value, [("x-replayed-from", f"{settings.topics.dead_letter}@{d.offset}".encode())]) for d in chosen],
    )
    return len(chosen)
