"""Kafka connections built from settings, and topic creation owned by gpuledger.

Brokers run with ``auto.create.topics.enable=false`` so a typo fails loudly; every
topic the project uses is declared here with its partitions and cleanup policy.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    NodeNotReadyError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
)

from gpuledger.settings import KafkaSettings, Settings
from schemas import DecodeError, codec_for

log = structlog.get_logger()
R = TypeVar("R")


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for bootstrap, TLS and SASL."""
    options: dict[str, Any] = {"bootstrap_servers": kafka.bootstrap_servers, "security_protocol": kafka.security_protocol}
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
        if kafka.ssl_certfile:
            context.load_cert_chain(str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None)
        options["ssl_context"] = context
    if kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
    return options


def new_producer(kafka: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent, acks=all, compressed producer: nothing lost, nothing duplicated by retries."""
    options = {
        **client_options(kafka),
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": "lz4",
        "linger_ms": 20,
        "max_batch_size": 256 * 1024,
    }
    return AIOKafkaProducer(**{**options, **overrides})


class AckedSender:
    """Sends messages and returns once Kafka acknowledged all of them; the producer starts on first use.

    Created lazily because aiokafka binds a producer to the event loop it was built in.
    """

    def __init__(self, kafka: KafkaSettings) -> None:
        self._kafka = kafka
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def send_all(self, topic: str, items: list[tuple[bytes, bytes | None]]) -> None:
        """Send (key, value) pairs in order; ``value=None`` writes a tombstone (deletes ``key`` from a compacted topic)."""
        await self.send_with_headers([(topic, key, value, []) for key, value in items])

    async def send_with_headers(self, items: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]]) -> None:
        """Send (topic, key, value, headers) messages in order and wait for every ack."""
        if not items:
            return
        async with self._starting:
            if self._producer is None:
                producer = new_producer(self._kafka, linger_ms=0)
                await producer.start()
                self._producer = producer
        acks = [await self._producer.send(topic, value, key=key, headers=headers or None) for topic, key, value, headers in items]
        await asyncio.gather(*acks)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


def table_topic(settings: Settings, table: str) -> str:
    """Faust names a table's changelog ``<app_id>-<table>-changelog``; the directory and price list live there."""
    return f"{settings.worker.app_id}-{table}-changelog"


def declared_topics(settings: Settings) -> list[NewTopic]:
    """Every topic gpuledger reads or writes, with its layout."""
    t = settings.topics
    compact = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
    return [
        NewTopic(t.gpu_samples, t.partitions, t.replication_factor),
        NewTopic(t.inference_usage, t.partitions, t.replication_factor),
        NewTopic(t.outcomes, t.partitions, t.replication_factor),
        NewTopic(t.dead_letter, 1, t.replication_factor, topic_configs={"retention.ms": str(30 * 24 * 3600 * 1000)}),
        NewTopic(table_topic(settings, "orgs"), 1, t.replication_factor, topic_configs=compact),
        NewTopic(table_topic(settings, "prices"), 1, t.replication_factor, topic_configs=compact),
        NewTopic(table_topic(settings, "equivalents"), 1, t.replication_factor, topic_configs=compact),
        NewTopic(table_topic(settings, "budgets"), 1, t.replication_factor, topic_configs=compact),
        NewTopic(t.budget_alerts, 1, t.replication_factor),
        NewTopic(t.budget_status, 1, t.replication_factor, topic_configs=compact),
    ]


async def ensure_topics(settings: Settings, attempts: int = 5) -> list[str]:
    """Create missing topics (idempotent); returns the names created now.

    On a cluster the admin client asks a random known broker, which may be one that is down:
    the request is tried again (on another) a few times before giving up.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await _ensure_topics(settings)
        except (NodeNotReadyError, KafkaConnectionError, RequestTimedOutError) as exc:
            if attempt == attempts:
                raise
            log.warning("a broker did not answer while creating topics; trying again", error=str(exc), attempt=attempt)
            await asyncio.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


async def _ensure_topics(settings: Settings) -> list[str]:
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [topic for topic in declared_topics(settings) if topic.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another process created them between our list and create
        return [topic.name for topic in missing]
    finally:
        await admin.close()


async def read_records(kafka: KafkaSettings, topic: str, record_type: type[R]) -> list[R]:
    """Every live record of a compacted topic; one that cannot be decoded is skipped with a warning (the worker dead-letters it)."""
    codec, found = codec_for(record_type), []
    for key, value in (await read_compacted(kafka, topic)).items():
        try:
            found.append(codec.decode(value))
        except DecodeError as exc:
            log.warning("undecodable record skipped", topic=topic, key=key.decode(errors="replace")[:200], reason=exc.reason)
    return found


async def read_compacted(kafka: KafkaSettings, topic: str) -> dict[bytes, bytes]:
    """The latest value of every live key of a compacted topic, read from the start to its current end.

    Tombstones (null values) remove their key, as compaction eventually would.
    """
    consumer = _reader(kafka)
    await consumer.start()
    try:
        return await _read_to_end(consumer, topic)
    finally:
        await consumer.stop()


async def read_all(kafka: KafkaSettings, topic: str) -> list[Any]:
    """Every message of ``topic`` from its start to its current end, in partition then offset order (aiokafka ConsumerRecords)."""
    consumer = _reader(kafka)
    await consumer.start()
    try:
        ends = await assign_from_beginning(consumer, topic)
        found: list[Any] = []
        while not all([await consumer.position(tp) >= end for tp, end in ends.items()]):
            found += [m for messages in (await consumer.getmany(timeout_ms=500)).values() for m in messages]
        return sorted(found, key=lambda m: (m.partition, m.offset))
    finally:
        await consumer.stop()


class CompactedView:
    """The latest value of every key of a compacted topic, kept current for as long as ``run`` runs.

    Why not a Faust table: a Faust table stops reading its changelog once recovered on the
    worker that owns the partition, so reference data that the CLI writes while a worker
    runs would stay unseen until a restart. Each (re)connect reads the topic from its
    beginning into a fresh dict that replaces ``latest`` only once caught up, so readers
    never see a half-loaded set; ``on_change`` gets every batch's changes (None: deleted).
    """

    def __init__(self, kafka: KafkaSettings, topic: str, on_change: Callable[[dict[bytes, bytes | None]], None] | None = None) -> None:
        self.kafka, self.topic, self._on_change = kafka, topic, on_change
        self.latest: dict[bytes, bytes] = {}
        self.caught_up = asyncio.Event()  # set once the topic was first read to its end
        self._reached_end = False  # this connection read the topic to its end

    async def run(self) -> None:
        """Follow the topic until cancelled; a broken connection is retried with backoff."""
        delay = 1.0
        while True:
            self._reached_end = False
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker down, topic missing: keep the last view, retry
                if self._reached_end:  # this connection worked: a new outage starts the backoff over
                    delay = 1.0
                log.warning("compacted topic unavailable; retrying", topic=self.topic, error=str(exc)[:200], retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _follow(self) -> None:
        consumer = _reader(self.kafka)
        await consumer.start()
        try:
            fresh = await _read_to_end(consumer, self.topic)
            changes = {k: fresh.get(k) for k in self.latest.keys() | fresh.keys() if fresh.get(k) != self.latest.get(k)}
            self.latest = fresh
            self._changed(changes)
            self.caught_up.set()
            self._reached_end = True
            while True:
                self._changed(_apply(self.latest, await _next_batch(consumer)))
        finally:
            await consumer.stop()

    def _changed(self, changes: dict[bytes, bytes | None]) -> None:
        if changes and self._on_change is not None:
            try:
                self._on_change(changes)
            except Exception:  # a reader's bug must not stall the view (it would reconnect and fail forever)
                log.exception("compacted view listener failed; keys skipped", topic=self.topic, keys=len(changes))


async def _next_batch(consumer: AIOKafkaConsumer) -> list[tuple[bytes, bytes | None]]:
    return [(m.key or b"", m.value) for messages in (await consumer.getmany(timeout_ms=500)).values() for m in messages]


def _reader(kafka: KafkaSettings) -> AIOKafkaConsumer:
    """A group-less consumer that sees only committed messages."""
    return AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False, isolation_level="read_committed")


async def _read_to_end(consumer: AIOKafkaConsumer, topic: str) -> dict[bytes, bytes]:
    """Every live key's latest value, from the topic's start to its end as of now; the consumer stays there."""
    ends = await assign_from_beginning(consumer, topic)
    latest: dict[bytes, bytes] = {}
    while not all([await consumer.position(tp) >= end for tp, end in ends.items()]):
        _apply(latest, await _next_batch(consumer))
    return latest


def _apply(latest: dict[bytes, bytes], batch: list[tuple[bytes, bytes | None]]) -> dict[bytes, bytes | None]:
    """Apply messages in order (a tombstone removes its key); returns each touched key's final value."""
    changes: dict[bytes, bytes | None] = {}
    for key, value in batch:
        if value is None:
            latest.pop(key, None)
        else:
            latest[key] = value
        changes[key] = value
    return changes


async def assign_from_beginning(consumer: AIOKafkaConsumer, topic: str) -> dict[TopicPartition, int]:
    """Assign every partition of ``topic`` (no consumer group), rewind to the start; returns the end offsets now."""
    await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public metadata refresh
    found = consumer.partitions_for_topic(topic)
    if not found:
        raise LookupError(f"Kafka topic {topic!r} does not exist; run `gpuledger topics` (or start the worker) first")
    partitions = [TopicPartition(topic, p) for p in sorted(found)]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    return await consumer.end_offsets(partitions)
