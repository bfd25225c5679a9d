"""Reference data the worker joins against: the org directory, the price list, API equivalents and the budgets.

Each lives in a compacted topic named in ``topics`` (``topics.orgs``, ``prices``, ``equivalents``,
``budgets``; by default ``gpuledger-orgs-changelog`` and so on, the names Faust tables used to have). ``gpuledger orgs import``,
``prices import`` and ``budgets set`` publish straight into them; every worker follows
them live (``gpuledger.kafka.CompactedView``), so it holds the full, current set and a
restarted worker reads it back from Kafka before it handles any event.

Records are decoded and checked as they arrive. One that cannot be decoded or used (a
corrupt message, a price beyond the ledger's range) is skipped, counted, and reported to
``on_reject`` (the worker dead-letters it); the key keeps its last good value, so one bad
record never stalls the load or the pricing of everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from gpuledger.kafka import CompactedView, table_topic
from gpuledger.settings import Settings
from schemas import DecodeError, codec_for
from schemas.keys import REFERENCE_TABLES, org_key, price_key
from streams import metrics
from streams.validation import budget_record_problem, equivalent_record_problem, org_record_problem, price_record_problem

__all__ = ["budget_table", "equivalent_table", "org_key", "org_table", "price_key", "price_table"]
log = structlog.get_logger()
T = TypeVar("T")
Reject = Callable[[str, bytes, bytes, str], None]  # topic, key, value, reason


class ReferenceTable:
    """A compacted topic of Avro records, followed live and kept decoded (only records that passed ``check``)."""

    def __init__(self, settings: Settings, name: str, check: Callable[[Any], str | None], on_reject: Reject | None = None) -> None:
        self.name = name
        self.view = CompactedView(settings.kafka, table_topic(settings, name), on_change=self._changed)
        self._decode, self._check, self._on_reject = codec_for(REFERENCE_TABLES[name]).decode, check, on_reject
        self._records: dict[bytes, Any] = {}
        self._version = 0
        self._derived: tuple[int, Any] | None = None

    def get(self, key: bytes) -> Any:
        return self._records.get(key)

    def values(self) -> list[Any]:
        return list(self._records.values())

    def derived(self, build: Callable[[list[Any]], T]) -> T:
        """``build(values())``, rebuilt only after the table changed: a price book per change, not per batch."""
        if self._derived is None or self._derived[0] != self._version:
            self._derived = (self._version, build(self.values()))
        return self._derived[1]

    def _changed(self, changes: dict[bytes, bytes | None]) -> None:
        self._version += 1
        for key, raw in changes.items():
            if raw is None:
                self._records.pop(key, None)
                continue
            try:
                record = self._decode(raw)
                problem = self._check(record)
            except DecodeError as exc:
                problem = f"undecodable: {exc.reason}"
            except Exception as exc:  # one bad record is skipped by itself, never the rest of the batch
                problem = f"{type(exc).__name__}: {exc}"
            if problem is None:
                self._records[key] = record
                continue
            metrics.REFERENCE_REJECTED.labels(self.name).inc()
            log.error(
                "reference record skipped",
                table=self.name,
                key=key.decode(errors="replace")[:200],
                reason=problem,
                kept_previous=key in self._records,
            )
            if self._on_reject is not None:
                self._on_reject(self.view.topic, key, raw, problem)


def org_table(settings: Settings, on_reject: Reject | None = None) -> ReferenceTable:
    return ReferenceTable(settings, "orgs", org_record_problem, on_reject)


def price_table(settings: Settings, on_reject: Reject | None = None) -> ReferenceTable:
    return ReferenceTable(settings, "prices", price_record_problem, on_reject)


def equivalent_table(settings: Settings, on_reject: Reject | None = None) -> ReferenceTable:
    return ReferenceTable(settings, "equivalents", equivalent_record_problem, on_reject)


def budget_table(settings: Settings, on_reject: Reject | None = None) -> ReferenceTable:
    return ReferenceTable(settings, "budgets", budget_record_problem, on_reject)
