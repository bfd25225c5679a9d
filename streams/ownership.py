"""Which GPU windows this worker allocates: those of the GPUs whose sample partitions it consumes.

GPU samples are keyed by GPU uuid, so Kafka's default partitioner (murmur2 of the key, the
Java client's and aiokafka's) puts every sample of a GPU in one partition of the samples
topic. A unit (a whole GPU, or a MIG parent allocated with its instances) is owned by the
worker that consumes ``partition_of(unit)`` of that topic: each unit has exactly one owner
once the consumer group is settled, and no leader is needed.

Handover is exact because allocation reads only ClickHouse and its line ids are
deterministic: a worker that gains a partition re-scans everything ingested within the
restatement horizon for it (``Watermarks``), and a window both the old and the new owner
derive during a rebalance is written twice with the same line ids (ReplacingMergeTree keeps
the newer version, which also saw the newer data).
"""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka.partitioner import murmur2


def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` among ``partitions``."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class OwnedPartitions:
    """The samples partitions this worker consumes now, and where a GPU's samples go (None: topic unknown yet)."""

    owned: frozenset[int]
    partition_of: Callable[[str], int | None] = field(compare=False)

    def owns(self, unit: str) -> bool:
        return self.partition_of(unit) in self.owned


def _everything() -> OwnedPartitions:
    return OwnedPartitions(frozenset({0}), lambda unit: 0)


EVERYTHING: Callable[[], OwnedPartitions | None] = _everything
"""Ownership of a lone allocator (tools, tests, a single worker without a consumer group)."""


def consumer_ownership(
    assignment: Callable[[], Set[tuple[str, int]]], key_partition: Callable[[str, bytes], int | None], topic: str
) -> Callable[[], OwnedPartitions | None]:
    """Ownership read from a consumer's live assignment of ``topic`` (None while it has none).

    ``key_partition`` is the consumer's own partitioner over its cluster metadata (Faust's
    ``Consumer.key_partition``), so every member agrees with the producers on where a key goes.
    """

    def current() -> OwnedPartitions | None:
        owned = frozenset(p for t, p in assignment() if t == topic)
        return OwnedPartitions(owned, lambda unit: key_partition(topic, unit.encode())) if owned else None

    return current


@dataclass
class Watermarks:
    """Per samples partition: the start of this worker's last successful pass over it.

    A partition this worker has never allocated has no watermark, so its first pass looks back
    over the whole restatement horizon: whatever its previous owner had not allocated yet is
    found again. A watermark survives a revocation (everything ingested after it is re-read on
    the next pass anyway). Watermarks live in memory: a restarted worker looks back again.
    """

    passed: dict[int, datetime] = field(default_factory=dict)

    def since(self, view: OwnedPartitions, horizon: datetime) -> datetime:
        """The earliest ingestion time the next pass over ``view`` must look at."""
        return min((self.passed.get(p, horizon) for p in view.owned), default=horizon)

    def advance(self, view: OwnedPartitions, moment: datetime) -> None:
        """Record a successful pass over ``view`` that started at ``moment``."""
        self.passed.update(dict.fromkeys(view.owned, moment))
