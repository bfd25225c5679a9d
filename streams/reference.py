"""Reference data the worker joins against: the org directory, the price list, API equivalents and the budgets.

Each lives in a compacted topic (``<app_id>-orgs-changelog``, ``-prices-changelog``,
``-equivalents-changelog``, ``-budgets-changelog``; the names Faust tables used to have). ``gpuledger orgs import``,
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
from typing import Any

import structlog

from gpuledger.kafka import CompactedView, table_topic
from gpuledger.settings import Settings
from schemas import Budget, DecodeError, ModelEquivalent, OrgDirectory, Price, codec_for
from schemas.keys import org_key, price_key
from streams import metrics
from streams.validation import budget_record_problem, equivalent_record_problem, org_record_problem, price_record_problem

__all__ = ["budget_table", "equivalent_table", "org_key", "org_table", "price_key", "price_table"]
log = structlog.get_logger()
Reject = Callable[[str, bytes, bytes, str], None]  # topic, key, value, reason


class ReferenceTable:
    """A compacted topic of Avro records, followed live and kept decoded (only records that passed ``check``)."""

    def __init__(self, settings: Settings, name: str, record_type: type, check: Callable[[Any], str | None],
                 on_reject: Reject | None = None) -> None:
        self.name = name
        self.view = CompactedView(settings.kafka, table_topic(settings, name), on_change=self._changed)
        self._decode, self._check, self._on_reject = codec_for(record_type).decode, check, on_reject
        self._records: dict[bytes, Any] = {}

    def get(self, key: bytes) -> Any:
        return self._records.get(key)

    def values(self) -> list[Any]:
        return list(self._records.values())

    def _changed(self, changes: dict[bytes, bytes | None]) -> None:
        for key, raw in changes.items():
            if raw is None:
                self._records.pop(key, None)
                continue
            try:
                record = self._decode(raw)
                problem = self._check(record)
            except DecodeError as exc:
                problem = f"undecodable: {exc.reason}"
            if problem is None:
                self._records[key] = record
                continue
            metrics.REFERENCE_REJECTED.labels(self.name).inc()
            log.error("reference record skipped", table=self.name, key=key.decode(errors="replace")[:200], reason=problem,
                      kept_previous=key in self._records)
            if self._on_reject is not None:
                self._on_reject(self.view.topic, key, raw, problem)


def org_table(settings: Settings, on_reject: Reject | None = None) -> ReferenceTable:
    return ReferenceTable(settings, "orgs", OrgDirectory, org_record_problem, on_reject)


def price_table(settings: Settings, on_reject: Reject | None = None) -> ReferenceTable:
    return ReferenceTable(settings, "prices", Price, price_record_problem, on_reject)


def equivalent_table(settings: Settings, on_reject: Reject | None = None) -> ReferenceTable:
    return ReferenceTable(settings, "equivalents", ModelEquivalent, equivalent_record_problem, on_reject)


def budget_table(settings: Settings, on_reject: Reject | None = None) -> ReferenceTable:
    return ReferenceTable(settings, "budgets", Budget, budget_record_problem, on_reject)
