"""Publishing usage events to Kafka off the request path.

A response must never wait for Kafka: ``submit`` is a non-blocking put into a bounded queue
drained by one background task. When the queue is full (Kafka slow or down) the event is
dropped and counted, so overload shows on ``/metrics`` instead of in request latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import math

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from gpuledger.kafka import new_producer
from gpuledger.retry import Backoff
from gpuledger.settings import KafkaSettings
from inference.metering.events import MAX_MODEL_CHARS
from inference.metering.metrics import EVENTS_DROPPED, EVENTS_PUBLISHED, EVENTS_REPLACED
from inference.metering.openai_usage import token_count
from schemas import InferenceUsage, codec_for

log = structlog.get_logger()
CODEC = codec_for(InferenceUsage)
MAX_BATCH = 500
# Gather events this long before building a record batch: one Kafka produce request per request
# cost ~100 µs of the gateway's CPU each (measured); a few ms of delay is nothing to a ledger.
LINGER_S = 0.005
START_BACKOFF = Backoff(first_s=0.5, max_s=30.0)  # until Kafka answers: the gateway keeps serving meanwhile


class UsagePublisher:
    """One bounded queue and one producer task, started lazily on the loop that first submits."""

    def __init__(self, kafka: KafkaSettings, topic: str, *, component: str, queue_size: int = 10_000) -> None:
        self._kafka, self._topic, self._component = kafka, topic, component
        self._queue: asyncio.Queue[InferenceUsage] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self._start_failed = False
        self._dropped_full = EVENTS_DROPPED.labels(component, "queue_full")
        self._dropped_kafka = EVENTS_DROPPED.labels(component, "kafka_error")
        self._dropped_unencodable = EVENTS_DROPPED.labels(component, "unencodable")
        self._replaced = EVENTS_REPLACED.labels(component)
        self._published = EVENTS_PUBLISHED.labels(component)

    def submit(self, event: InferenceUsage) -> None:
        """Queue an event; never blocks, never raises."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"usage-publisher-{self._component}")
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._dropped_full.inc()

    async def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout``), then stop the producer."""
        if self._task is None:
            return
        deadline = asyncio.get_running_loop().time() + timeout
        drained = asyncio.ensure_future(self._queue.join())
        # Wait while delivery can progress; give up at once if Kafka has already refused a connection.
        while not drained.done() and not self._start_failed and asyncio.get_running_loop().time() < deadline:
            await asyncio.wait({drained}, timeout=0.05)
        drained.cancel()
        if self._queue.qsize():
            self._dropped_kafka.inc(self._queue.qsize())
            log.warning("usage_events_lost_at_shutdown", count=self._queue.qsize())
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        producer = new_producer(self._kafka, linger_ms=20)
        await self._start(producer)
        partitions = sorted(await producer.partitions_for(self._topic))
        turn = itertools.count()
        try:
            while True:
                events = [await self._queue.get()]
                await asyncio.sleep(LINGER_S)
                while len(events) < MAX_BATCH and not self._queue.empty():
                    events.append(self._queue.get_nowait())
                try:
                    await self._send(producer, events, partitions[next(turn) % len(partitions)])
                except KafkaError as exc:
                    self._dropped_kafka.inc(len(events))
                    log.warning("usage_events_not_sent", count=len(events), error=type(exc).__name__, topic=self._topic)
                except Exception as exc:  # noqa: BLE001 - the publisher must outlive any one batch
                    self._dropped_kafka.inc(len(events))
                    log.error("usage_events_not_sent", count=len(events), error=type(exc).__name__, topic=self._topic)
                finally:
                    for _ in events:
                        self._queue.task_done()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(producer.stop())  # flushes what is in flight

    async def _send(self, producer: AIOKafkaProducer, events: list[InferenceUsage], partition: int) -> None:
        """Whatever queued up goes as one record batch: aiokafka's per-message ``send`` costs more CPU than a request."""
        batch = producer.create_batch()
        count = 0
        for event in events:
            value = self._encode(event)
            if value is None:
                continue
            if batch.append(key=event.event_id.encode(), value=value, timestamp=None) is None:
                self._ship(await producer.send_batch(batch, self._topic, partition=partition), count)
                batch, count = producer.create_batch(), 0
                batch.append(key=event.event_id.encode(), value=value, timestamp=None)
            count += 1
        self._ship(await producer.send_batch(batch, self._topic, partition=partition), count)

    def _encode(self, event: InferenceUsage) -> bytes | None:
        """The event's Avro bytes; if it cannot be encoded, a flagged replacement's; None (dropped, counted) if neither can."""
        try:
            return CODEC.encode(event)
        except Exception as exc:  # noqa: BLE001 - a value out of the schema's range must not stop the publisher
            log.error("usage_event_unencodable", event_id=event.event_id, error=type(exc).__name__, detail=str(exc)[:200])
        try:
            value = CODEC.encode(flagged(event))
        except Exception as exc:  # noqa: BLE001
            self._dropped_unencodable.inc()
            log.error("usage_event_dropped", event_id=event.event_id, error=type(exc).__name__)
            return None
        self._replaced.inc()
        return value

    def _ship(self, future: asyncio.Future[object], count: int) -> None:
        future.add_done_callback(lambda f: self._delivered(f, count))

    async def _start(self, producer: AIOKafkaProducer) -> None:
        """Start the producer, waiting out Kafka being away (events queue, then drop and count, meanwhile)."""

        def unavailable(exc: BaseException, wait: float) -> None:
            self._start_failed = True
            log.warning("usage_publisher_kafka_unavailable", error=type(exc).__name__, retry_in_s=round(wait, 2))

        await START_BACKOFF.call(producer.start, retry_if=lambda exc: isinstance(exc, KafkaError), on_retry=unavailable)
        self._start_failed = False
        log.info("usage_publisher_started", topic=self._topic, component=self._component)

    def _delivered(self, future: asyncio.Future[object], count: int) -> None:
        if future.cancelled() or future.exception() is not None:
            self._dropped_kafka.inc(count)
        else:
            self._published.inc(count)


def flagged(event: InferenceUsage) -> InferenceUsage:
    """The event with every number forced into range and ``usage_estimated`` set: what the ledger can still price."""

    def finite(ms: float | None) -> float | None:
        return ms if isinstance(ms, float) and math.isfinite(ms) else None

    return dataclasses.replace(
        event,
        prompt_tokens=token_count(event.prompt_tokens)[0],
        completion_tokens=token_count(event.completion_tokens)[0],
        cached_prompt_tokens=token_count(event.cached_prompt_tokens)[0],
        latency_ms=finite(event.latency_ms) or 0.0,
        ttft_ms=finite(event.ttft_ms),
        key_id=str(event.key_id)[:MAX_MODEL_CHARS],
        model=str(event.model)[:MAX_MODEL_CHARS],
        usage_estimated=True,
    )
