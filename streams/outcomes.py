"""Outcome events from Kafka to the ClickHouse ``outcomes`` table (the cost joins happen in views, at read time).

Storing outcomes as they are and joining at read time is what lets outcomes and requests
arrive in any order: an outcome sent before its requests simply has no cost yet, and gains
it when they are stored. ``outcomes`` is a ReplacingMergeTree by ``outcome_id``, so a replay
or a resend replaces the row (a resend with other fields wins by ingestion time).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gpuledger.limits import MAX_TEXT, money_problem
from schemas import OutcomeEvent
from streams.validation import TimeWindow

OUTCOME_COLUMNS = (
    "outcome_id",
    "kind",
    "org",
    "team",
    "project",
    "occurred_at",
    "success",
    "value",
    "currency",
    "request_ids",
    "trace_id",
    "session_id",
    "key_id",
    "source_partition",
    "source_offset",
)


def outcome_row(o: OutcomeEvent, partition: int, offset: int) -> list[Any]:
    return [
        o.outcome_id,
        o.kind,
        o.org,
        o.team,
        o.project,
        o.occurred_at,
        o.success,
        o.value,
        o.currency,
        list(dict.fromkeys(o.request_ids)),
        o.trace_id,
        o.session_id,
        o.key_id,
        partition,
        offset,
    ]


def outcome_problem(o: OutcomeEvent, now: datetime, times: TimeWindow) -> str | None:
    """Why an outcome cannot be stored, or None (any producer can write the topic: the importer's checks are not enough)."""
    for name in ("outcome_id", "kind", "org"):
        if not getattr(o, name).strip():
            return f"{name} is empty"
    for name in ("outcome_id", "kind", "org", "team", "project", "currency", "trace_id", "session_id", "key_id"):
        if len(getattr(o, name)) > MAX_TEXT:
            return f"{name} is {len(getattr(o, name)):,} characters long (at most {MAX_TEXT:,})"
    if any(not r.strip() or len(r) > MAX_TEXT for r in o.request_ids):
        return f"request_ids holds an empty id or one longer than {MAX_TEXT:,} characters"
    if o.value is not None and (problem := money_problem(o.value)):
        return f"value: {problem}"
    return times.problem("occurred_at", o.occurred_at, now)


class OutcomeRows:
    """An outcome as its ``outcomes`` row, traceable to its Kafka offset."""

    def __call__(self, origin: Any, record: OutcomeEvent, _: Any = None) -> dict[str, list[list[Any]]]:
        return {"outcomes": [outcome_row(record, origin.partition, origin.offset)]}
