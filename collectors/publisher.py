"""Gets samples to Kafka without ever blocking the sampler, and without losing them when Kafka is away.

``publish`` only queues. A sender task ships the memory queue (idempotent, acks=all, lz4,
keyed by GPU uuid). Whatever Kafka does not acknowledge goes to the on-disk spool, and
while the spool holds anything, new records go there too, so per-GPU order is kept;
the sender replays the spool oldest first once Kafka answers again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from collectors.spool import Record, Spool
from gpuledger.kafka import new_producer
from gpuledger.retry import Backoff
from gpuledger.settings import KafkaSettings
from schemas import GpuSample, codec_for

log = structlog.get_logger()


class _KafkaAway(Exception):
    """A send cycle left records unsent (now in the spool): wait, then replay."""


@dataclass
class PublisherStats:
    published: int = 0
    spooled: int = 0
    send_failures: int = 0
    unencodable: int = 0  # samples that could not be Avro-encoded (logged with their id, skipped)
    spool_failures: int = 0  # records lost because the spool could not be written (disk full, read-only)
    last_contact: float = 0.0  # wall time of the last acknowledgement from Kafka
    last_publish: float = 0.0


def encode_samples(samples: list[GpuSample], stats: PublisherStats) -> list[Record]:
    """Avro-encode, keyed by GPU uuid (one GPU's samples stay in one partition, in order).

    A sample that cannot be encoded (a value outside its Avro type, e.g. an index beyond
    int32) is logged with its id, counted in ``stats.unencodable`` and skipped: the others go on.
    """
    codec = codec_for(GpuSample)
    records = []
    for s in samples:
        try:
            records.append(Record(s.gpu_uuid.encode(), codec.encode(s)))
        except Exception as exc:  # fastavro raises ValueError, OverflowError, TypeError, struct.error...
            stats.unencodable += 1
            log.error("sample cannot be encoded; skipped", sample_id=s.sample_id, error=f"{type(exc).__name__}: {exc}"[:300])
    return records


class Publisher:
    """Memory queue -> Kafka, with the spool as the fallback and the ordering barrier."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        spool: Spool,
        *,
        request_timeout_ms: int = 5000,
        send_timeout: float = 10.0,
        retry_seconds: float = 1.0,
        max_retry_seconds: float = 15.0,
        max_queue: int = 10_000,
        producer_factory: Callable[[], AIOKafkaProducer] | None = None,
    ) -> None:
        self.topic = topic
        self.spool = spool
        self.send_timeout = send_timeout
        self.policy = Backoff(first_s=retry_seconds, max_s=max(max_retry_seconds, retry_seconds))  # until Kafka answers
        self.max_queue = max_queue
        self.stats = PublisherStats()
        self._factory = producer_factory or (lambda: new_producer(kafka, request_timeout_ms=request_timeout_ms, linger_ms=50))
        self._producer: AIOKafkaProducer | None = None
        self._queue: list[Record] = []
        self._inflight: list[Record] = []  # taken from the queue, not yet acknowledged
        self._healthy = True
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- API ----------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="collector-publisher")
        if not self.spool.empty():
            self._healthy = False  # replay what a previous run left before anything new
            log.info("spool holds records from before; replaying first", records=len(self.spool))

    def publish(self, records: list[Record]) -> None:
        """Queue records (never blocks on Kafka); straight to the spool while Kafka is away."""
        if not (self._healthy and self.spool.empty()):
            self._to_spool(records)  # behind what is already waiting there
        elif len(self._queue) + len(records) > self.max_queue and not self._inflight:
            self._healthy = False  # Kafka too slow: move the whole queue to disk, order intact
            self._to_spool(self._queue + records)
            self._queue = []
        else:  # (a batch in flight can only fail into the spool ahead of these if they stay queued)
            self._queue.extend(records)
        self._wake.set()

    def pending(self) -> int:
        """Records not yet acknowledged by Kafka (memory queue and spool)."""
        return len(self._inflight) + len(self._queue) + len(self.spool)

    async def drain(self, timeout: float) -> bool:
        """Wait until everything queued and spooled is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.pending() and time.monotonic() < deadline:
            self._wake.set()
            await asyncio.sleep(0.05)
        return not self.pending()

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what we have: to Kafka if it answers within ``timeout``, to the fsync'd spool otherwise."""
        await self.drain(timeout)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        unacked = self._inflight + self._queue  # cancelled mid-send: keep them (at-least-once, ids dedupe)
        if unacked:
            self._to_spool(unacked)
        self._inflight, self._queue = [], []
        await self._drop_producer()
        log.info("publisher closed", published=self.stats.published, left_in_spool=len(self.spool))

    # -- internals ----------------------------------------------------------------------------
    def _to_spool(self, records: list[Record]) -> None:
        try:
            self.spool.append(records)
        except OSError as exc:  # disk full, directory gone or read-only: count the loss, never stop publishing
            self.stats.spool_failures += len(records)
            log.error("spool write failed; records lost", records=len(records), spool=str(self.spool.directory), error=str(exc))
            return
        self.stats.spooled += len(records)

    async def _run(self) -> None:
        """Each wake-up ships everything; while Kafka is away, cycles repeat under the backoff (publish() keeps spooling)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.policy.call(self._cycle_or_raise, retry_if=lambda exc: isinstance(exc, _KafkaAway))

    async def _cycle_or_raise(self) -> None:
        try:
            ok = await self._cycle()
        except Exception as exc:  # never let the sender die, never lose what it held
            log.exception("publisher cycle failed", error=repr(exc))
            if self._inflight or self._queue:
                self._healthy = False
                self._to_spool(self._inflight + self._queue)
                self._inflight, self._queue = [], []
            await self._drop_producer(abandon=True)
            ok = False
        if not ok:
            raise _KafkaAway

    async def _cycle(self) -> bool:
        """Replay the spool, then the memory queue; True when everything went out."""
        if not self.spool.empty() and await self._producer_or_none() is None:
            self.stats.send_failures += 1
            return False  # leave the spool's segments alone until Kafka answers
        while not self.spool.empty():
            oldest = self.spool.oldest()
            if oldest is None:
                break
            segment, records = oldest
            failed = await self._send(records)
            self.spool.done(segment, failed)
            if failed:
                return False
            log.info("spool segment replayed", segment=segment.name, records=len(records))
        self._healthy = True
        while self._queue:
            self._inflight, self._queue = self._queue, []
            failed = await self._send(self._inflight)
            self._inflight = []
            if failed:
                self._healthy = False
                self._to_spool(failed + self._queue)  # keep order: failed first, then what queued meanwhile
                self._queue = []
                return False
        return True

    async def _producer_or_none(self) -> AIOKafkaProducer | None:
        if self._producer is None:
            producer = self._factory()
            try:
                await producer.start()
            except Exception as exc:
                log.warning("kafka unreachable; spooling", error=str(exc))
                await _stop_quietly(producer)
                return None
            self._producer = producer
        return self._producer

    async def _send(self, records: list[Record]) -> list[Record]:
        """Send in order; returns the records Kafka did not acknowledge within ``send_timeout`` (in order)."""
        producer = await self._producer_or_none()
        if producer is None:
            self.stats.send_failures += 1
            return records
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self.send_timeout):
                for record in records:
                    futures.append(await producer.send(self.topic, record.value, key=record.key))
                await asyncio.wait(futures)
        except TimeoutError:
            log.warning("kafka did not answer in time", timeout_s=self.send_timeout)
        except Exception as exc:
            log.warning("kafka send failed", error=str(exc))
        acked_flags = [f.done() and not f.cancelled() and f.exception() is None for f in futures]
        acked_flags += [False] * (len(records) - len(futures))
        failed = [r for r, ok in zip(records, acked_flags, strict=True) if not ok]
        acked = len(records) - len(failed)
        if acked:
            self.stats.published += acked
            self.stats.last_contact = self.stats.last_publish = time.time()
        if failed:
            self.stats.send_failures += 1
            log.warning("kafka did not acknowledge records; spooling them", failed=len(failed), acked=acked)
            await self._drop_producer(abandon=True)  # it must never deliver them late: they are in the spool now
        return failed

    async def _drop_producer(self, *, abandon: bool = False) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        if not abandon:
            try:
                await asyncio.wait_for(asyncio.shield(producer.stop()), timeout=self.send_timeout)
                return
            except Exception:
                pass
        await _abandon(producer)


async def _abandon(producer: AIOKafkaProducer) -> None:
    """Close a producer without flushing: idempotent aiokafka retries unacknowledged batches forever,
    so a plain ``stop()`` would hang while Kafka is away and a leaked sender could deliver them late
    (duplicating what we spooled). Uses aiokafka internals; pinned by the outage test."""
    producer._closed = True  # noqa: SLF001
    sender = producer._sender  # noqa: SLF001
    try:
        if sender is not None:
            await sender.close()  # cancels the retry loop: nothing of it is sent later
    except Exception as exc:
        log.debug("abandoned producer's sender ended with an error", error=repr(exc))
    try:
        await producer.client.close()
    except Exception as exc:
        log.debug("abandoned producer's client ended with an error", error=repr(exc))


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), timeout=10.0)
    except Exception:
        pass
