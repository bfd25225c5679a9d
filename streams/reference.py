"""Reference data the worker joins against: the org directory, the price list and the budgets.

Both live in Faust GlobalTables whose changelogs are compacted topics
(``<app_id>-orgs-changelog``, ``-prices-changelog``, ``-budgets-changelog``);
``gpuledger orgs import``, ``prices import`` and ``budgets set`` publish straight into
them, so every worker holds the full set and a restarted worker recovers it from Kafka.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import faust

from schemas import Budget, OrgDirectory, Price, codec_for
from schemas.keys import org_key, price_key

__all__ = ["budget_table", "org_key", "org_table", "price_key", "price_table"]


class ReferenceTable:
    """A GlobalTable of raw Avro values, decoded on read (memoized: reference data changes rarely)."""

    def __init__(self, app: faust.App, name: str, record_type: type) -> None:
        self.table = app.GlobalTable(name, key_type=bytes, value_type=bytes, partitions=1)
        self._decode = lru_cache(maxsize=65536)(codec_for(record_type).decode)

    def get(self, key: bytes) -> Any:
        raw = self.table.get(key)
        return None if raw is None else self._decode(raw)

    def values(self) -> list[Any]:
        return [self._decode(raw) for raw in self.table.values() if raw is not None]


def org_table(app: faust.App) -> ReferenceTable:
    return ReferenceTable(app, "orgs", OrgDirectory)


def price_table(app: faust.App) -> ReferenceTable:
    return ReferenceTable(app, "prices", Price)


def budget_table(app: faust.App) -> ReferenceTable:
    return ReferenceTable(app, "budgets", Budget)
