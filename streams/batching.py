"""Batches of Kafka records stored before their offsets are acknowledged.

The worker's consumer (``streams.consume``) hands every fetch of a topic's records to that
topic's ``RecordBatcher`` as one list, with no per-message dispatch. A batch is due when it
holds ``size`` records or its oldest record waited ``seconds``; only once ``store`` returned are
its offsets acknowledged, so a crash at any point replays them (storage is idempotent).

Batches are stored and acknowledged one after another, in order. ``prepare`` (decode, check,
price: CPU only) runs for the next batch while the previous one is being stored (ClickHouse works
on its insert meanwhile), so the worker's CPU and ClickHouse's overlap instead of taking turns.

``store`` settles every record it is given: stored, or sent to the dead-letter topic with its
reason. If ``prepare`` or ``store`` raises anyway (Kafka away for the dead letters, a bug), the
same batch is retried with backoff and nothing is acknowledged meanwhile; the batches after it wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog

from gpuledger.retry import Backoff, OnRetry
from streams import metrics

Acknowledge = Callable[[list[Any]], Awaitable[None]]
log = structlog.get_logger()


async def _as_is(batch: list[Any]) -> Any:
    return batch


class RecordBatcher:
    """Collects one topic's records and stores them in batches of at most ``size``, oldest first.

    ``store(prepare(batch))``; without ``prepare``, ``store(batch)``.
    """

    def __init__(
        self,
        store: Callable[[Any], Awaitable[None]],
        *,
        prepare: Callable[[list[Any]], Awaitable[Any]] = _as_is,
        size: int,
        seconds: float,
        name: str = "batch",
        max_backoff: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.prepare, self.size, self.seconds, self.name = store, prepare, size, seconds, name
        self.max_backoff, self.clock = max_backoff, clock
        self.pending: list[Any] = []
        self.policy = Backoff(first_s=0.2, max_s=max_backoff)  # any error, no limit: dropping a batch would lose it
        self.oldest = 0.0
        self.storing: asyncio.Task[None] | None = None

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
        """Prepare everything pending, ``size`` at a time, and store each batch once the one before it is stored.

        Returns when the last batch is prepared and being stored (``wait`` waits for it); each batch's
        records are acknowledged right after it is stored.
        """
        while self.pending:
            batch = self.pending[: self.size]
            started = time.perf_counter()
            prepared = await self._retrying(self.prepare, batch)
            spent = time.perf_counter() - started
            await self.wait()
            del self.pending[: len(batch)]  # only now: a flush cancelled before this point leaves the batch pending
            self.storing = asyncio.create_task(self._store(batch, prepared, spent, acknowledge), name=f"{self.name}-store")
        self.oldest = self.clock()

    async def wait(self) -> None:
        """Until the batch being stored is stored and acknowledged."""
        if self.storing is not None:
            await self.storing
            self.storing = None

    async def close(self) -> None:
        """Stop storing (shutdown): what is not acknowledged is read again by whoever owns the partition next."""
        if self.storing is not None and not self.storing.done():
            self.storing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.storing
        self.storing = None

    async def _store(self, batch: list[Any], prepared: Any, prepare_seconds: float, acknowledge: Acknowledge) -> None:
        started = time.perf_counter()
        await self._retrying(self.store, prepared)
        metrics.BATCH_SECONDS.labels(self.name).observe(prepare_seconds + time.perf_counter() - started)
        await acknowledge(batch)

    async def _retrying(self, step: Callable[[Any], Awaitable[Any]], value: Any) -> Any:
        return await self.policy.call(lambda: step(value), retry_if=lambda exc: True, on_retry=self._on_retry(value))

    def _on_retry(self, value: Any) -> OnRetry:
        events = len(value) if isinstance(value, list) else None

        def retried(exc: BaseException, wait: float) -> None:
            metrics.BATCH_RETRIES.labels(self.name).inc()
            log.error(
                "batch could not be settled; retrying it (nothing acked)",
                batcher=self.name,
                events=events,
                retry_in=round(wait, 2),
                exc_info=exc,
            )

        return retried
