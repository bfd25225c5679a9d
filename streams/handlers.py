"""The worker's handlers and policies, as small objects ``streams.app.create_app`` only wires.

- ``ReferenceData``: the four reference tables and what the handlers ask of them (payer lookups,
  the price list and API equivalents as of a batch, "everything read to its end");
- ``UsageRows`` / ``SampleRows``: one decoded event to the rows it writes (``streams.ingest.Ingest``'s
  ``prepare``);
- ``ReferenceRejects``: the dead-letter policy for reference records that cannot be used;
- ``GuardedPass``: the error policy of the periodic passes (allocate, budgets, reference dead letters):
  wait for the reference data, time the pass, and log a failure instead of stopping the timer (the next
  tick retries; the inputs are still in ClickHouse or Kafka).

None of them needs the Faust app, so each is unit-tested on its own (``tests/test_handlers.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import structlog

from schemas import GpuSample, InferenceUsage, OrgDirectory, OutcomeEvent
from streams import metrics
from streams.enrich import price_usage, resolve_payer
from streams.ingest import DeadLetters, Rows
from streams.outcomes import outcome_problem
from streams.pricing import EquivalentBook, PriceBook
from streams.reference import ReferenceTable, org_key
from streams.sink import ledger_row, sample_row, usage_row, version_now
from streams.validation import TimeWindow, sample_problem, usage_problem

log = structlog.get_logger()
Books = tuple[PriceBook, EquivalentBook]
Lookup = Callable[[str, str], OrgDirectory | None]
T = TypeVar("T")
R = TypeVar("R")


class Origin(Protocol):
    """Where a Kafka record came from (an aiokafka ``ConsumerRecord`` or a Faust ``Message``)."""

    partition: int
    offset: int


@dataclass(frozen=True)
class ReferenceData:
    """The org directory, price list, budgets and API equivalents every worker follows live."""

    orgs: ReferenceTable
    prices: ReferenceTable
    budgets: ReferenceTable
    equivalents: ReferenceTable

    @property
    def tables(self) -> tuple[ReferenceTable, ...]:
        return self.orgs, self.prices, self.budgets, self.equivalents

    async def loaded(self) -> None:
        """Nothing is joined or evaluated against a half-read directory, price list or budget set."""
        for table in self.tables:
            await table.view.caught_up.wait()

    def lookup(self, kind: str, key: str) -> OrgDirectory | None:
        return self.orgs.get(org_key(kind, key))

    def price_book(self) -> PriceBook:
        return self.prices.derived(PriceBook)

    def books(self) -> Books:
        """The price list and the API equivalents, as of this batch (rebuilt only after a change)."""
        return self.price_book(), self.equivalents.derived(EquivalentBook)


@dataclass(frozen=True)
class UsageRows:
    """A usage event joined with its payer and priced: its ``usage_events`` row and, for API models, its ledger line."""

    lookup: Lookup
    unassigned: str

    def __call__(self, origin: Origin, record: InferenceUsage, books: Books) -> Rows:
        priced = price_usage(record, resolve_payer(record, self.lookup, self.unassigned), *books)
        rows: Rows = {"usage_events": [usage_row(priced, origin.partition, origin.offset)]}
        if priced.line is not None:
            rows["ledger"] = [ledger_row(priced.line, version_now())]
        return rows


@dataclass(frozen=True)
class SampleRows:
    """A GPU sample with its node's owner (or the unassigned org)."""

    lookup: Lookup
    unassigned: str

    def __call__(self, origin: Origin, record: GpuSample, _: Any = None) -> Rows:
        owner = self.lookup("node", record.node)
        return {"gpu_samples": [sample_row(record, owner.org if owner else self.unassigned, origin.partition, origin.offset)]}


@dataclass(frozen=True)
class EventChecks:
    """The per-event range checks of ``streams.validation`` against the clock at check time."""

    times: TimeWindow
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def usage(self, record: InferenceUsage) -> str | None:
        return usage_problem(record, self.clock(), self.times)

    def sample(self, record: GpuSample) -> str | None:
        return sample_problem(record, self.clock(), self.times)

    def outcome(self, record: OutcomeEvent) -> str | None:
        return outcome_problem(record, self.clock(), self.times)


class ReferenceRejects:
    """Dead-letter policy for reference records the worker skips: queued as they are met, sent by a timer.

    A reference table reports a rejected record from inside its view's update (no awaiting there), so
    the record is queued (stage ``reference``, no origin offset: compaction may remove it) and
    ``settle`` sends the queue; when Kafka is away the queue is kept for the next tick.
    """

    def __init__(self, letters: DeadLetters) -> None:
        self.letters = letters

    def __call__(self, topic: str, key: bytes, value: bytes, reason: str) -> None:
        self.letters.add(topic, None, None, key, value, "reference", reason)

    async def settle(self) -> None:
        try:
            await self.letters.settle()
        except Exception:  # Kafka away: kept queued for the next tick
            log.exception("could not dead-letter skipped reference records; will retry")


@dataclass(frozen=True)
class GuardedPass:
    """A periodic pass (timer) that never stops its timer: waits for ``ready`` (if any), is timed, and a failure is logged and counted.

    ``__call__`` returns whether the pass succeeded (for tests and logs; the timer ignores it).
    """

    name: str
    run: Callable[[], Awaitable[Any]]
    ready: Callable[[], Awaitable[None]] | None = None

    async def __call__(self) -> bool:
        try:
            if self.ready is not None:
                await self.ready()
            with metrics.timed(metrics.PASS_SECONDS, metrics.PASS_FAILURES, self.name):
                await self.run()
            return True
        except Exception:  # retried on the next tick; the pass's inputs are still in ClickHouse / Kafka
            log.exception("periodic pass failed; retried on the next tick", task=self.name)
            return False


def settled_after(ready: Callable[[], Awaitable[None]], step: Callable[[T], R]) -> Callable[[T], Awaitable[R]]:
    """``step`` that first waits for ``ready`` (the reference data): no event is priced against a half-read price list."""

    async def wrapped(batch: T) -> R:
        await ready()
        return step(batch)

    return wrapped
