"""``gpuledger outcomes import FILE``: outcomes from a CSV or JSON Lines file, validated in full, published acked.

All or nothing, like ``prices import``: every row is checked (``gpuledger.outcome_input.OutcomeIn``,
the gateway's own rules) before anything is sent, and every bad row is listed with its row and line
number and what to fix. ``occurred_at`` is required here (a file is history, "now" would be wrong).
CSV: ``request_ids`` holds ids separated by spaces; ``success`` is true/false (or 1/0).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gpuledger.commands.reference_import import ReferenceFileError, _text, all_or_nothing, row_problems
from gpuledger.kafka import ensure_topics, publish_acked
from gpuledger.outcome_input import OutcomeIn, outcome_key
from gpuledger.settings import Settings
from schemas import OutcomeEvent, codec_for

BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def _csv_rows(text: str) -> list[tuple[int, Any]]:
    reader = csv.DictReader(text.splitlines(keepends=True))
    rows = []
    for row in reader:
        entry: dict[str, Any] = {k if k is not None else "fields beyond the header": v for k, v in row.items() if v not in ("", None)}
        if isinstance(entry.get("request_ids"), str):
            entry["request_ids"] = entry["request_ids"].split()
        if isinstance(entry.get("success"), str):
            entry["success"] = BOOLEANS.get(entry["success"].strip().lower(), entry["success"])
        rows.append((reader.line_num, entry))
    return rows


def _jsonl_rows(text: str, path: Path) -> tuple[list[tuple[int, Any]], list[str]]:
    rows, problems = [], []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            rows.append((line, json.loads(raw)))
        except ValueError as exc:
            problems.append(f"{path} line {line}: not valid JSON ({exc})")
    return rows, problems


def parse_outcomes(path: Path) -> list[OutcomeEvent]:
    """Every row as an ``OutcomeEvent``, or ``ReferenceFileError`` listing every bad row."""
    text = _text(path)
    if path.suffix.lower() == ".csv":
        rows, problems = _csv_rows(text), list[str]()
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        rows, problems = _jsonl_rows(text, path)
    else:
        raise ReferenceFileError(f"{path}: unknown file type {path.suffix or '(none)'}; use .csv or .jsonl (one JSON object per line)")
    records: list[OutcomeEvent] = []
    first: dict[str, int] = {}
    for number, (line, row) in enumerate(rows, start=1):
        where = f"{path} row {number} (line {line})"
        if not isinstance(row, dict):
            problems.append(f"{where}: expected a JSON object")
            continue
        outcome_id = str(row.get("outcome_id", "")).strip()
        if outcome_id and outcome_id in first:
            problems.append(f"{where}: duplicate outcome_id {outcome_id!r} (already on line {first[outcome_id]}); keep one")
        first.setdefault(outcome_id, line)
        if "occurred_at" not in row:
            problems.append(f"{where}: occurred_at: required in a file (when did it happen? e.g. 2026-11-29T10:00:00Z)")
            continue
        try:
            record = OutcomeIn.model_validate(row).record()
        except ValidationError as exc:
            problems += row_problems(where, exc)
            continue
        if not record.org:
            problems.append(f"{where}: org: required (which org the outcome belongs to)")
        records.append(record)
    return all_or_nothing(path, records, problems, "outcomes")


async def import_outcomes(settings: Settings, path: Path) -> list[OutcomeEvent]:
    """Validate the whole file, then publish every outcome and wait for Kafka's acks."""
    outcomes = parse_outcomes(path)
    await ensure_topics(settings)
    encode = codec_for(OutcomeEvent).encode
    await publish_acked(settings.kafka, [(settings.topics.outcomes, outcome_key(o.outcome_id), encode(o), []) for o in outcomes])
    return outcomes
