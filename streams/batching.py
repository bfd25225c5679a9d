"""Batching that acknowledges Kafka offsets only after a batch is stored.

Replaces Faust's ``take_events``, which was seen to stall for good after its first
batch under load. Events are collected by size or age, handed to ``store``, and only
then acked, so a crash at any point replays them (storage is idempotent).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from faust.types import EventT, StreamT

Store = Callable[[list[EventT]], Awaitable[None]]


class EventBatcher:
    """Collects a stream's events and stores them in batches, then acks them."""

    def __init__(self, stream: StreamT, store: Store, *, size: int, seconds: float) -> None:
        stream.enable_acks = False  # we ack after storing, not when the next event is read
        self.stream, self.store, self.size, self.seconds = stream, store, size, seconds
        self.pending: list[EventT] = []
        self.oldest = 0.0
        self.lock = asyncio.Lock()
        self.ticker: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> EventBatcher:
        self.ticker = asyncio.create_task(self._tick())
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
        while True:
            await asyncio.sleep(self.seconds / 2)
            if self.pending and time.monotonic() - self.oldest >= self.seconds:
                await self.flush()

    async def flush(self) -> None:
        async with self.lock:
            batch, self.pending = self.pending, []
            if not batch:
                return
            await self.store(batch)
            for event in batch:
                await self.stream.ack(event)
