"""One batch of Kafka records to ClickHouse rows: every event ends stored or dead-lettered.

Steps, each of which can refuse an event with a precise reason (``stage``):
``decode`` (not a record of this topic), ``invalid`` (out of the ranges the ledger holds,
``streams.validation``), ``pricing`` (joining or pricing raised), ``store`` (ClickHouse
refused its row for its content). Refused events go to the dead-letter topic with
their origin; the others are stored. Only failures that waiting can fix (ClickHouse or
Kafka away) escape as exceptions, and the batcher retries the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from gpuledger.kafka import AckedSender
from schemas import DecodeError
from streams import metrics
from streams.sink import ClickHouseSink

log = structlog.get_logger()

Rows = dict[str, list[list[Any]]]  # table -> the rows one event writes there
Message = Any  # a Kafka record: ``topic``, ``partition``, ``offset``, ``key``, ``value`` (aiokafka's ConsumerRecord)


@dataclass(frozen=True)
class Prepared:
    """A batch turned into rows, ready to store (and to store again if storing fails): ``refused`` holds (event, stage, reason)."""

    ready: list[tuple[Message, Rows]]
    refused: list[tuple[Message, str, str]]


@dataclass
class Ingest:
    """Decode, validate, prepare and store a batch; ``tables`` gives the write order and columns.

    Two steps, so the batcher can prepare a batch while the one before it is being stored:
    ``rows`` (CPU only: decode, check, price) and ``store`` (ClickHouse, then the dead letters).
    ``begin`` runs once per batch (e.g. builds the price book); its result is ``prepare``'s third argument.
    """

    decode: Callable[[bytes | None], Any]
    check: Callable[[Any], str | None]
    prepare: Callable[[Message, Any, Any], Rows]
    tables: Sequence[tuple[str, Sequence[str]]]
    sink: ClickHouseSink
    refuse: DeadLetters
    begin: Callable[[], Any] = lambda: None

    async def __call__(self, events: list[Message]) -> None:
        await self.store(self.rows(events))

    def rows(self, events: list[Message]) -> Prepared:
        """Every event's rows, or why it is refused before storage."""
        ready: list[tuple[Message, Rows]] = []
        refused: list[tuple[Message, str, str]] = []
        context = self.begin()
        for event in events:
            rows_or_reason = self._prepared(event, context)
            if isinstance(rows_or_reason, tuple):
                refused.append((event, *rows_or_reason))
            else:
                ready.append((event, rows_or_reason))
        return Prepared(ready, refused)

    async def store(self, prepared: Prepared) -> None:
        """Store the rows table by table, then dead-letter what was refused; raises only what waiting can fix."""
        self.refuse.reset()  # a retried batch refuses its events afresh
        for refusal in prepared.refused:
            self.refuse(*refusal)
        ready = prepared.ready
        for table, columns in self.tables:  # an event refused by one table writes nothing to the later ones
            owners: list[int] = []  # the index in ``ready`` of each row's event
            table_rows: list[list[Any]] = []
            for i, (_, rows) in enumerate(ready):
                for row in rows.get(table, ()):
                    owners.append(i)
                    table_rows.append(row)
            refused = await self.sink.store(table, columns, table_rows)
            if refused:
                dead = {owners[index]: error for index, error in refused.items()}
                for i, error in sorted(dead.items()):
                    self.refuse(ready[i][0], "store", f"ClickHouse refused the {table} row: {error}")
                ready = [item for i, item in enumerate(ready) if i not in dead]
        await self.refuse.settle()  # acked by Kafka before the batch is: a refused event is never just gone

    def _prepared(self, event: Message, context: Any) -> Rows | tuple[str, str]:
        """The event's rows, or (stage, reason) when it is refused before storage."""
        try:
            record = self.decode(event.value)
        except DecodeError as exc:
            return "decode", exc.reason
        problem = self.check(record)
        if problem:
            return "invalid", problem
        try:
            return self.prepare(event, record, context)
        except Exception as exc:  # defensive: a price that passed import must not stop the partition
            log.exception(
                "pricing failed; dead-lettering the event", event_id=getattr(record, "event_id", None) or getattr(record, "sample_id", None)
            )
            return "pricing", f"{type(exc).__name__}: {exc}"


MAX_DEAD_LETTER_VALUE = 900_000  # below the broker's default message.max.bytes (1 MiB), headers included


class DeadLetters:
    """Refused messages to the dead-letter topic, unchanged, with why and where from.

    ``__call__`` / ``add`` queue; ``settle`` sends and waits for Kafka's acks (raising when
    Kafka is away, so the batch is retried; a retried batch may dead-letter an event twice,
    which a replay absorbs: event ids make storage idempotent). A value too large to
    re-publish is left out (header ``x-value-omitted``); it stays readable at its origin offset.
    """

    def __init__(self, sender: AckedSender, topic: str) -> None:
        self.sender, self.topic = sender, topic
        self._queued: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self._counts: list[tuple[str, str]] = []

    def reset(self) -> None:
        """Forget what is queued and not yet sent."""
        self._queued, self._counts = [], []

    def __call__(self, message: Message, stage: str, reason: str) -> None:
        self.add(message.topic, message.partition, message.offset, message.key, message.value, stage, reason)

    def add(
        self, topic: str, partition: int | None, offset: int | None, key: bytes | None, value: bytes | None, stage: str, reason: str
    ) -> None:
        log.warning("message sent to dead-letter topic", topic=topic, partition=partition, offset=offset, stage=stage, reason=reason[:500])
        headers = [("x-reason", f"{stage}: {reason}".encode()), ("x-stage", stage.encode()), ("x-origin-topic", topic.encode())]
        if partition is not None and offset is not None:
            headers += [("x-origin-partition", str(partition).encode()), ("x-origin-offset", str(offset).encode())]
        if value is not None and len(value) > MAX_DEAD_LETTER_VALUE:
            headers.append(("x-value-omitted", f"{len(value)} bytes; read it at its origin offset".encode()))
            value = None
        self._queued.append((self.topic, key if key is not None or value is not None else b"", value, headers))
        self._counts.append((topic, stage))

    async def settle(self) -> None:
        """Send what is queued and wait for Kafka's acks; on failure the queue is kept for the next try."""
        if not self._queued:
            return
        # Take the queue before awaiting: records added while Kafka acks (reference rejects come from another
        # task) wait for the next settle instead of being cleared unsent.
        queued, counts = self._queued, self._counts
        self._queued, self._counts = [], []
        try:
            await self.sender.send_with_headers(queued)
        except BaseException:
            self._queued, self._counts = queued + self._queued, counts + self._counts
            raise
        for topic, stage in counts:
            metrics.DEAD_LETTERS.labels(topic, stage).inc()
