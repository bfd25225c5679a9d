"""Kafka connections built from settings, and topic creation owned by gpuledger.

Brokers run with ``auto.create.topics.enable=false`` so a typo fails loudly; every
topic the project uses is declared here with its partitions and cleanup policy.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from gpuledger.retry import Backoff, is_transient
from gpuledger.settings import KafkaSettings, Settings
from schemas import DecodeError, codec_for

log = structlog.get_logger()
R = TypeVar("R", bound=Hashable)  # as schemas.codec.R: codec_for caches on the record type
VIEW_BACKOFF = Backoff(first_s=1.0, max_s=30.0)  # a compacted view reconnects until cancelled
# Topic creation outlasts a dead broker that the cluster still lists: KRaft fences it only after
# broker.session.timeout.ms (9 s) and a controller election, and until then an admin request may go to it.
# 12 attempts wait about 18-35 s in all; a refusal (bad replication factor, no permission) is not retried.
TOPICS_BACKOFF = Backoff(first_s=0.5, max_s=4.0, attempts=12)
ADMIN_TIMEOUT_MS = 10_000


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


Message = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]  # (topic, key, value or None: a tombstone, headers)


class PublishRefused(RuntimeError):
    """Kafka did not acknowledge every record: which topic(s), how many, and the first refusal.

    aiokafka's ``flush()`` does not raise per-record errors, so a producer that only flushes reports success
    over records the broker refused (too large for the topic's ``max.message.bytes``, a topic that does not
    exist, no permission). Everything published through ``AckedSender`` awaits each record's acknowledgement.
    """

    def __init__(self, refused: list[tuple[str, bytes | None, BaseException]], total: int) -> None:
        _, key, error = refused[0]
        topics = sorted({t for t, _, _ in refused})
        shown_key = key.decode(errors="replace")[:80] if key is not None else None
        super().__init__(
            f"Kafka refused {len(refused)} of {total} record(s) for topic {', '.join(repr(t) for t in topics)}; first: key {shown_key!r}: "
            f"{type(error).__name__}: {str(error)[:300] or 'no detail'}; {total - len(refused)} acknowledged (a refused record's batch "
            f"is refused whole). Fix the cause (a record over the topic's max.message.bytes, a missing topic, an ACL) and run it again: "
            f"records are keyed, so sending again is safe"
        )
        self.refused = refused


class AckedSender:
    """Sends messages and returns once Kafka acknowledged all of them, or raises ``PublishRefused``.

    The one acknowledged publish: every producer of reference data, budgets, simulations and dead letters
    uses it (``async with AckedSender(kafka) as sender``, or ``publish_acked``). The producer starts on first
    use, because aiokafka binds a producer to the event loop it was built in.
    """

    def __init__(self, kafka: KafkaSettings, **producer_options: Any) -> None:
        self._kafka = kafka
        self._options = {"linger_ms": 0, **producer_options}
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def __aenter__(self) -> AckedSender:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def send_all(self, topic: str, items: list[tuple[bytes, bytes | None]]) -> None:
        """Send (key, value) pairs in order; ``value=None`` writes a tombstone (deletes ``key`` from a compacted topic)."""
        await self.send_with_headers([(topic, key, value, []) for key, value in items])

    async def send_with_headers(self, items: list[Message]) -> None:
        """Send (topic, key, value, headers) messages in order and wait for every ack; ``PublishRefused`` names what was not."""
        if not items:
            return
        async with self._starting:
            if self._producer is None:
                producer = new_producer(self._kafka, **self._options)
                await producer.start()
                self._producer = producer
        pending: list[tuple[str, bytes | None, asyncio.Future[Any]]] = []
        refused: list[tuple[str, bytes | None, BaseException]] = []
        for topic, key, value, headers in items:
            try:  # send() itself raises for what the client refuses up front (larger than max_request_size, unknown topic)
                pending.append((topic, key, await self._producer.send(topic, value, key=key, headers=headers or None)))
            except KafkaError as exc:
                refused.append((topic, key, exc))
        results = await asyncio.gather(*(ack for _, _, ack in pending), return_exceptions=True)
        refused += [
            (topic, key, result) for (topic, key, _), result in zip(pending, results, strict=True) if isinstance(result, BaseException)
        ]
        if refused:
            raise PublishRefused(refused, len(items))

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


async def publish_acked(kafka: KafkaSettings, items: list[Message]) -> None:
    """Send ``items`` with a producer of their own and return once Kafka acknowledged every one (or raise ``PublishRefused``)."""
    async with AckedSender(kafka) as sender:
        await sender.send_with_headers(items)


def table_topic(settings: Settings, table: str) -> str:
    """The compacted topic of a reference table (orgs, prices, equivalents, budgets), as named in ``topics``."""
    return str(getattr(settings.topics, table))


def leader_topic(settings: Settings) -> str:
    """The worker group's leader-election topic, named as Faust's ``LeaderAssignor`` names it (``<app_id>-__assignor-__leader``).

    Created here with the others because the worker tells Faust not to create topics (see ``streams.app``).
    """
    return f"{settings.worker.app_id}-__assignor-__leader"


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
        NewTopic(leader_topic(settings), 1, t.replication_factor),
    ]


async def ensure_topics(settings: Settings, policy: Backoff = TOPICS_BACKOFF) -> list[str]:
    """Create every declared topic that is missing (idempotent); returns the names created now."""
    return await create_missing_topics(settings.kafka, declared_topics(settings), policy)


async def create_missing_topics(kafka: KafkaSettings, topics: list[NewTopic], policy: Backoff = TOPICS_BACKOFF) -> list[str]:
    """Create those of ``topics`` that do not exist; returns the names created now.

    The admin client asks a random known broker (and the broker the metadata calls controller), which on a
    cluster may be one that is down but not yet fenced: whatever ``is_transient`` calls transient (no answer,
    a node not ready, a timeout) is tried again under ``policy``, each time with fresh metadata.
    """

    def retried(exc: BaseException, wait: float) -> None:
        log.warning(
            "Kafka did not answer while creating topics; trying again", error=f"{type(exc).__name__}: {exc}"[:300], retry_in=round(wait, 2)
        )

    return await policy.call(lambda: _create_missing(kafka, topics), retry_if=is_transient, on_retry=retried)


async def _create_missing(kafka: KafkaSettings, topics: list[NewTopic]) -> list[str]:
    # A short request timeout: aiokafka's admin waits up to that long for a chosen node to become ready,
    # and a dead broker never does (the default 40 s per attempt would stall a worker's start).
    admin = AIOKafkaAdminClient(**client_options(kafka), request_timeout_ms=ADMIN_TIMEOUT_MS)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [topic for topic in topics if topic.name not in existing]
        if missing:
            _raise_refusals((await admin.create_topics(missing)).topic_errors)
        return [topic.name for topic in missing]
    finally:
        await admin.close()


def _raise_refusals(topic_errors: list[tuple[Any, ...]]) -> None:
    """Raise the first per-topic error of a CreateTopics response (aiokafka's admin returns them, it does not raise).

    "Already exists" is fine: another process created the topic between our list and create.
    """
    for name, code, *detail in topic_errors:
        if code not in (0, TopicAlreadyExistsError.errno):
            error = for_code(code)
            raise error(f"Kafka refused to create topic {name!r}: {error.__name__} ({detail[0] if detail and detail[0] else 'no detail'})")


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
        failures = 0
        while True:
            self._reached_end = False
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker down, topic missing: keep the last view, retry
                failures = 1 if self._reached_end else failures + 1  # this connection worked: a new outage starts over
                delay = VIEW_BACKOFF.delay(failures)
                log.warning("compacted topic unavailable; retrying", topic=self.topic, error=str(exc)[:200], retry_in=round(delay, 2))
                await asyncio.sleep(delay)

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
