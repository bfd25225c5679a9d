"""Avro codec with a small in-repo schema registry.

Wire format (Confluent-compatible framing, so a real Schema Registry can replace the
table below): one magic byte ``0``, a 4-byte big-endian schema id, then the Avro
body. The reader always decodes into the *current* schema of the record, resolving
from whichever registered version wrote it; that is what keeps old and new producers
and consumers interoperable.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Hashable
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any, Generic, TypeVar, cast

import fastavro

from schemas import records

MAGIC = 0
HEADER = struct.Struct(">bI")

# Schema ids are forever: never reuse or renumber one; add new versions at the end.
REGISTRY: dict[int, str] = {
    1: "gpu_sample.v1",
    2: "inference_usage.v1",
    3: "inference_usage.v2",
    4: "org_directory.v1",
    5: "price.v1",
    6: "ledger_line.v1",
    7: "budget_alert.v1",
    8: "budget.v1",
    9: "budget_alert.v2",
    10: "budget_status.v1",
    11: "inference_usage.v3",
    12: "gpu_sample.v2",
    13: "ledger_line.v2",
    14: "model_equivalent.v1",
    15: "budget_alert.v3",
    16: "inference_usage.v4",
    17: "outcome_event.v1",
    18: "budget.v2",
}

# The version each typed record is read as and written with.
CURRENT: dict[type, int] = {
    records.GpuSample: 12,
    records.InferenceUsage: 16,
    records.OrgDirectory: 4,
    records.Price: 5,
    records.LedgerLine: 13,
    records.BudgetAlert: 15,
    records.Budget: 18,
    records.BudgetStatus: 10,
    records.ModelEquivalent: 14,
    records.OutcomeEvent: 17,
}

R = TypeVar("R", bound=Hashable)  # records are frozen dataclasses; the bound also lets mypy see type[R] as hashable for @cache


class DecodeError(ValueError):
    """A message that cannot become a record; ``reason`` says why, for the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@cache
def parsed_schema(schema_id: int) -> dict[str, Any]:
    """The parsed Avro schema registered under ``schema_id``."""
    name = REGISTRY[schema_id]
    text = resources.files("schemas").joinpath("avro", f"{name}.avsc").read_text()
    return cast(dict[str, Any], fastavro.parse_schema(json.loads(text), _write_hint=False))  # a record schema parses to a dict


def _to_avro(value: Any) -> Any:
    if is_dataclass(value):
        return {f.name: _to_avro(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, list):
        return [_to_avro(v) for v in value]
    return value


@dataclass(frozen=True)
class Codec(Generic[R]):
    """Encodes one record type with its current schema; decodes any registered version of it."""

    record_type: type[R]
    writer_id: int

    def encode(self, record: R, *, schema_id: int | None = None) -> bytes:
        """Serialize ``record``; ``schema_id`` writes an older registered version (tests, old producers)."""
        sid = schema_id or self.writer_id
        buf = io.BytesIO()
        buf.write(HEADER.pack(MAGIC, sid))
        fastavro.schemaless_writer(buf, parsed_schema(sid), _to_avro(record))
        return buf.getvalue()

    def encode_dict(self, data: dict[str, Any], *, schema_id: int) -> bytes:
        """Serialize a plain dict with a given registered schema (for producers on old versions)."""
        buf = io.BytesIO()
        buf.write(HEADER.pack(MAGIC, schema_id))
        fastavro.schemaless_writer(buf, parsed_schema(schema_id), data)
        return buf.getvalue()

    def decode(self, data: bytes | None) -> R:
        """Parse a framed message into the current record, or raise ``DecodeError``."""
        fast = _fast_reader(self.record_type, self.writer_id)
        if fast is not None and data and data[: HEADER.size] == fast.header:
            record = fast.read(data)
            if record is not None:
                return record
        return self.record_type(**self.decode_dict(data))

    def decode_dict(self, data: bytes | None, *, reader_id: int | None = None) -> dict[str, Any]:
        """Parse a framed message into a dict shaped by ``reader_id`` (default: the current version)."""
        if not data or len(data) < HEADER.size:
            raise DecodeError(f"message too short for the 5-byte header ({len(data or b'')} bytes)")
        magic, sid = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise DecodeError(f"unknown magic byte {magic}; expected {MAGIC} (is this an Avro gpuledger message?)")
        if sid not in REGISTRY:
            raise DecodeError(f"unknown schema id {sid}; this reader knows {sorted(REGISTRY)}")
        reader = reader_id or self.writer_id
        if REGISTRY[sid].split(".")[0] != REGISTRY[reader].split(".")[0]:
            raise DecodeError(f"schema id {sid} is {REGISTRY[sid]}, not a {REGISTRY[reader]} record")
        try:
            body = io.BytesIO(data)
            body.seek(HEADER.size)
            value = fastavro.schemaless_reader(body, parsed_schema(sid), parsed_schema(reader))
        except Exception as exc:  # fastavro raises many types for corrupt bodies
            raise DecodeError(f"corrupt Avro body for {REGISTRY[sid]}: {type(exc).__name__}: {exc}") from exc
        if body.tell() != len(data):
            raise DecodeError(f"{len(data) - body.tell()} trailing bytes after the {REGISTRY[sid]} body")
        return _nested(self.record_type, value)  # type: ignore[arg-type]


def _nested(record_type: type, value: dict[str, Any]) -> dict[str, Any]:
    if record_type is records.GpuSample and value.get("processes"):
        value["processes"] = [records.GpuProcess(**p) for p in value["processes"]]
    if record_type is records.BudgetAlert:
        for name in ("top_models", "top_keys"):
            value[name] = [records.SpendShare(**s) for s in value.get(name) or []]
    return value


@cache
def codec_for(record_type: type[R]) -> Codec[R]:
    """The codec for ``record_type`` writing its current schema version."""
    return Codec(record_type, CURRENT[record_type])


# -- The hot path: decoding the current version without fastavro's per-field logical conversion --
#
# The worker decodes every usage event and GPU sample. fastavro converts each ``timestamp-micros``
# field through a Python-level logical reader, and a frozen dataclass's ``__init__`` sets each field
# through ``object.__setattr__``; together about two thirds of the decode. For messages written with
# the record's current schema, ``Codec.decode`` reads with a copy of that schema whose top-level
# timestamps are plain longs, converts those once (exact integer microseconds, as fastavro does), and
# fills the record's slots directly (what ``__init__`` does; these records have no ``__post_init__``).
# Anything else (an older writer, a corrupt body) takes the general path, which raises the same errors.

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROS = "timestamp-micros"


def _is_timestamp(avro_type: Any) -> bool:
    return isinstance(avro_type, dict) and avro_type.get("logicalType") == _MICROS


def _without_timestamps(schema: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]] | None:
    """The schema with its top-level timestamp-micros fields as plain longs, and their names; None if a nested one exists."""
    fields_out, names = [], []
    for field in schema["fields"]:
        ftype = field["type"]
        branches = ftype if isinstance(ftype, list) else [ftype]
        if any(_is_timestamp(b) for b in branches):
            branches = [{"type": "long"} if _is_timestamp(b) else b for b in branches]
            field = {**field, "type": branches if isinstance(ftype, list) else branches[0]}
            names.append(field["name"])
        elif _MICROS in json.dumps(ftype):
            return None
        fields_out.append(field)
    return {**schema, "fields": fields_out}, tuple(names)


@dataclass(frozen=True)
class _FastReader:
    header: bytes
    schema: dict[str, Any]
    timestamps: tuple[str, ...]
    record_type: type
    slots: tuple[tuple[str, Any], ...]

    def read(self, data: bytes) -> Any:
        """The record, or None when the general path must decide (it raises the precise ``DecodeError``)."""
        try:
            body = io.BytesIO(data)
            body.seek(HEADER.size)
            value = cast(dict[str, Any], fastavro.schemaless_reader(body, self.schema, None))  # a record reads as a dict
        except Exception:
            return None
        if body.tell() != len(data):
            return None
        for name in self.timestamps:
            micros = value[name]
            if micros is not None:
                value[name] = _EPOCH + timedelta(microseconds=micros)
        value = _nested(self.record_type, value)
        record: Any = object.__new__(self.record_type)
        for name, set_slot in self.slots:
            set_slot(record, value[name])
        return record


@cache
def _fast_reader(record_type: type, schema_id: int) -> _FastReader | None:
    """The hot-path reader for ``record_type`` written with ``schema_id``, where its shape allows one."""
    text = resources.files("schemas").joinpath("avro", f"{REGISTRY[schema_id]}.avsc").read_text()
    stripped = _without_timestamps(json.loads(text))
    names = [f.name for f in fields(record_type)]
    if stripped is None or not hasattr(record_type, "__slots__") or "__post_init__" in vars(record_type):
        return None
    schema, timestamps = stripped
    if [f["name"] for f in schema["fields"]] != names and sorted(f["name"] for f in schema["fields"]) != sorted(names):
        return None
    slots = tuple((name, getattr(record_type, name).__set__) for name in names)
    return _FastReader(HEADER.pack(MAGIC, schema_id), cast(dict[str, Any], fastavro.parse_schema(schema)), timestamps, record_type, slots)
