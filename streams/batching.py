"""Batches of Kafka records stored before their offsets are acknowledged.

The worker's consumer (``streams.consume``) hands every fetch of a topic's records to that
topic's ``RecordBatcher`` as one list, with no per-message dispatch. A batch is stored when it
holds ``size`` records or its oldest record waited ``seconds``; only once ``store`` returned are
its offsets acknowledged, so a crash at any point replays them (storage is idempotent).

``store`` settles every record it is given: stored, or sent to the dead-letter topic with its
reason. If it raises anyway (Kafka away for the dead letters, a bug), the same batch is retried
with backoff and nothing is acknowledged meanwhile; the records after it wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog

from streams import metrics

Store = Callable[[list[Any]], Awaitable[None]]
Acknowledge = Callable[[list[Any]], Awaitable[None]]
log = structlog.get_logger()


class RecordBatcher:
    """Collects one topic's records and stores them in batches of at most ``size``, oldest first."""

    def __init__(self, store: Store, *, size: int, seconds: float, name: str = "batch", max_backoff: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.size, self.seconds, self.name = store, size, seconds, name
        self.max_backoff, self.clock = max_backoff, clock
        self.pending: list[Any] = []
        self.oldest = 0.0

    def add(self, records: Iterable[Any]) -> None:
        """Queue records (in offset order per partition)."""
        if not self.pending:
            self.oldest = self.clock()
        self.pending.extend(records)

    def wait_seconds(self) -> float | None:
        """How long until the pending batch is due (0: now); None when nothing is pending."""
        if not self.pending:
            return None
        if len(self.pending) >= self.size:
            return 0.0
        return max(0.0, self.oldest + self.seconds - self.clock())

    def due(self) -> bool:
        return self.wait_seconds() == 0.0

    async def flush(self, acknowledge: Acknowledge) -> None:
        """Store everything pending, ``size`` at a time, each batch retried until settled, then acknowledged."""
        while self.pending:
            batch, self.pending = self.pending[: self.size], self.pending[self.size :]
            await self._settle(batch)
            await acknowledge(batch)
        self.oldest = self.clock()

    async def _settle(self, batch: list[Any]) -> None:
        delay = 0.2
        while True:
            try:
                with metrics.BATCH_SECONDS.labels(self.name).time():
                    await self.store(batch)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.BATCH_RETRIES.labels(self.name).inc()
                log.exception("batch could not be settled; retrying it (nothing acked)", batcher=self.name, events=len(batch), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
