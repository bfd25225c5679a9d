"""Reference data the worker joins against: the org directory, the price list, API equivalents and the budgets.

Each lives in a compacted topic (``<app_id>-orgs-changelog``, ``-prices-changelog``,
``-equivalents-changelog``, ``-budgets-changelog``; the names Faust tables used to have). ``gpuledger orgs import``,
``prices import`` and ``budgets set`` publish straight into them; every worker follows
them live (``gpuledger.kafka.CompactedView``), so it holds the full, current set and a
restarted worker reads it back from Kafka before it handles any event.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from gpuledger.kafka import CompactedView, table_topic
from gpuledger.settings import Settings
from schemas import Budget, ModelEquivalent, OrgDirectory, Price, codec_for
from schemas.keys import org_key, price_key

__all__ = ["budget_table", "equivalent_table", "org_key", "org_table", "price_key", "price_table"]


class ReferenceTable:
    """A compacted topic of Avro records, followed live; values decoded on read (memoized: reference data changes rarely)."""

    def __init__(self, settings: Settings, name: str, record_type: type) -> None:
        self.view = CompactedView(settings.kafka, table_topic(settings, name))
        self._decode = lru_cache(maxsize=65536)(codec_for(record_type).decode)

    def get(self, key: bytes) -> Any:
        raw = self.view.latest.get(key)
        return None if raw is None else self._decode(raw)

    def values(self) -> list[Any]:
        return [self._decode(raw) for raw in self.view.latest.values()]


def org_table(settings: Settings) -> ReferenceTable:
    return ReferenceTable(settings, "orgs", OrgDirectory)


def price_table(settings: Settings) -> ReferenceTable:
    return ReferenceTable(settings, "prices", Price)


def equivalent_table(settings: Settings) -> ReferenceTable:
    return ReferenceTable(settings, "equivalents", ModelEquivalent)


def budget_table(settings: Settings) -> ReferenceTable:
    return ReferenceTable(settings, "budgets", Budget)
