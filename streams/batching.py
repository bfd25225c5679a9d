"""Batching that acknowledges Kafka offsets only after a batch is stored.

Replaces Faust's ``take_events``, which was seen to stall for good after its first
batch under load. Events are collected by size or age, handed to ``store``, and only
then acked, so a crash at any point replays them (storage is idempotent).

``store`` settles every event it is given: stored, or sent to the dead-letter topic
with its reason. If it raises anyway (Kafka away for the dead letters, a bug), the same
batch is retried with backoff and nothing is acked meanwhile: Faust commits past offsets
that were never acked, so dropping a batch would lose it for good.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import structlog
from faust.types import EventT, StreamT

from gpuledger.retry import Backoff, OnRetry
from streams import metrics

Store = Callable[[list[EventT]], Awaitable[None]]
log = structlog.get_logger()


class EventBatcher:
    """Collects a stream's events and stores them in batches, then acks them."""

    def __init__(self, stream: StreamT, store: Store, *, size: int, seconds: float, name: str = "batch",
                 max_backoff: float = 10.0) -> None:
        stream.enable_acks = False  # we ack after storing, not when the next event is read
        self.stream, self.store, self.size, self.seconds = stream, store, size, seconds
        self.name = name
        self.policy = Backoff(first_s=0.2, max_s=max_backoff)  # any error, no limit: dropping a batch would lose it
        self.pending: list[EventT] = []
        self.oldest = 0.0
        self.lock = asyncio.Lock()
        self.ticker: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> EventBatcher:
        self.ticker = asyncio.create_task(self._tick(), name=f"{self.name}-age-flush")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.ticker:
            self.ticker.cancel()
        if exc_type is None:
            await self.flush()

    async def add(self, event: EventT) -> None:
        if not self.pending:
            self.oldest = time.monotonic()
        self.pending.append(event)
        if len(self.pending) >= self.size:
            await self.flush()

    async def _tick(self) -> None:
        """Flush batches that waited ``seconds``; flush never raises, and this loop outlives any surprise."""
        while True:
            await asyncio.sleep(self.seconds / 2)
            try:
                if self.pending and time.monotonic() - self.oldest >= self.seconds:
                    await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # pragma: no cover - flush settles or retries; kept so the ticker can never die
                log.exception("age-based flush failed; will try again", batcher=self.name)

    async def flush(self) -> None:
        """Store the pending batch (retrying until ``store`` settles it), then ack it."""
        async with self.lock:
            batch, self.pending = self.pending, []
            if not batch:
                return
            await self.policy.call(lambda: self.store(batch), retry_if=lambda exc: True, on_retry=self._retrying(len(batch)))
            for event in batch:
                await self.stream.ack(event)

    def _retrying(self, events: int) -> OnRetry:
        def retried(exc: BaseException, wait: float) -> None:
            metrics.BATCH_RETRIES.labels(self.name).inc()
            log.error("batch could not be settled; retrying it (nothing acked)", batcher=self.name, events=events,
                      retry_in=round(wait, 2), exc_info=exc)
        return retried
