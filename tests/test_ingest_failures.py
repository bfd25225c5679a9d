"""Failures injected at each step of a batch (whole batch, pricing, storing): every event ends stored or dead-lettered.

Runs the worker's own batcher, ingest step and ClickHouse sink in-process against the real
ClickHouse and the real Kafka (dead letters). The consumer's acknowledgement is replaced by a
small recorder of acks (Faust's offset bookkeeping is not under test here, and not an engine):
it shows that no event is acknowledged before it is stored or dead-lettered. Failures are injected by
wrapping the real clients: the first inserts raise a connection error (transient), the
dead-letter sender fails once (the whole batch is retried), pricing raises for one event,
and ClickHouse refuses one row (negative tokens) for its content.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import OperationalError
from prometheus_client import REGISTRY

from gpuledger.clickhouse import connect
from gpuledger.commands import dead_letters
from gpuledger.kafka import AckedSender
from gpuledger.settings import Settings
from schemas import InferenceUsage, OrgDirectory, Price, codec_for
from streams.batching import RecordBatcher
from streams.enrich import price_usage
from streams.handlers import settled_after
from streams.ingest import DeadLetters, Ingest, Rows
from streams.pricing import PriceBook
from streams.sink import ClickHouseSink, ledger_row, usage_row, version_now
from streams.store.tables import LEDGER_COLUMNS, USAGE_COLUMNS
from tests.support import isolated

pytestmark = pytest.mark.engines
NOW = datetime.now(UTC).replace(microsecond=0)
BOOK = PriceBook(
    [
        Price(
            sku="gpt-4o-mini",
            kind="token",
            currency="USD",
            effective_from=datetime(2026, 1, 1, tzinfo=UTC),
            input_per_mtok=Decimal("0.15"),
            output_per_mtok=Decimal("0.60"),
        )
    ]
)
PAYER = OrgDirectory(kind="api_key", key="k", org="support")


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class AckRecorder:
    """The consumer's acknowledgement of a stored batch, recorded with what was stored at that moment."""

    def __init__(self, stored: Any) -> None:
        self.acked: list[tuple[int, set[str]]] = []
        self.stored = stored

    async def __call__(self, batch: list[Message]) -> None:
        at_ack = self.stored()
        self.acked.extend((message.offset, at_ack) for message in batch)


class FlakyClient:
    """The real ClickHouse client, whose first ``failures`` inserts raise a connection error."""

    def __init__(self, real: Any, failures: int) -> None:
        self.real, self.failures = real, failures

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise OperationalError("injected: connection reset by peer")
        return self.real.insert(*args, **kwargs)


class FlakySender(AckedSender):
    """The real dead-letter sender, failing its first send (Kafka away for a moment)."""

    failed = False

    async def send_with_headers(self, items: list[Any]) -> None:
        if not self.failed:
            self.failed = True
            raise ConnectionError("injected: Kafka unreachable")
        await super().send_with_headers(items)


def _counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_event_is_stored_or_dead_lettered_whatever_fails(stack_settings: Settings) -> None:
    asyncio.run(_scenario(isolated(stack_settings, "ingestfail")))


async def _scenario(settings: Settings) -> None:
    client = connect(settings.clickhouse)
    codec = codec_for(InferenceUsage)
    base = InferenceUsage(
        event_id="x",
        request_start=NOW - timedelta(seconds=2),
        request_end=NOW - timedelta(seconds=1),
        key_id="k",
        model="gpt-4o-mini",
        backend="openai",
        prompt_tokens=1_000_000,
        completion_tokens=1_000_000,
        latency_ms=5.0,
        status="ok",
    )
    ids = [f"ev-{n}" for n in range(8)]
    events = [Message("ingestfail.usage", 0, n, None, codec.encode(replace(base, event_id=i))) for n, i in enumerate(ids)]
    events.insert(3, Message("ingestfail.usage", 0, 100, None, b"not avro"))  # decode
    events.insert(5, Message("ingestfail.usage", 0, 101, None, codec.encode(replace(base, event_id="price-me"))))  # pricing raises
    events.insert(7, Message("ingestfail.usage", 0, 102, None, codec.encode(replace(base, event_id="negative", prompt_tokens=-5))))

    def prepare(event: Message, record: InferenceUsage, book: PriceBook) -> Rows:
        if record.event_id == "price-me":
            raise ArithmeticError("injected: pricing failed")
        priced = price_usage(record, PAYER, book)
        assert priced.line is not None
        return {"usage_events": [usage_row(priced, event.partition, event.offset)], "ledger": [ledger_row(priced.line, version_now())]}

    def stored() -> set[str]:
        return {r[0] for r in client.query("SELECT event_id FROM usage_events FINAL").result_rows}

    sink = ClickHouseSink(FlakyClient(client, failures=2), settings.clickhouse.database, max_backoff=0.2)  # type: ignore[arg-type]
    sender = FlakySender(settings.kafka)
    ingest = Ingest(
        decode=codec.decode,
        check=lambda _: None,
        prepare=prepare,
        begin=lambda: BOOK,
        tables=(("usage_events", USAGE_COLUMNS), ("ledger", LEDGER_COLUMNS)),
        sink=sink,
        refuse=DeadLetters(sender, settings.topics.dead_letter),
    )
    retries = (
        _counter("gpuledger_worker_insert_retries_total", table="usage_events"),
        _counter("gpuledger_worker_batch_retries_total", agent="t"),
        _counter("gpuledger_worker_poison_rows_total", table="usage_events"),
    )

    async def ready() -> None:
        """The reference data is loaded (the book above)."""

    stream = AckRecorder(stored)
    try:
        batcher = RecordBatcher(ingest.store, prepare=settled_after(ready, ingest.rows), size=1000, seconds=0.1, name="t", max_backoff=0.2)
        batcher.add(events)  # too few for a size flush: due once the oldest waited 0.1 s
        assert not batcher.due()
        await asyncio.sleep(0.1)
        assert batcher.due()
        await batcher.flush(stream)
        await batcher.wait()
    finally:
        await sender.stop()

    # Every event acked once, and only once the batch was settled (all good events already stored).
    assert sorted(offset for offset, _ in stream.acked) == sorted(e.offset for e in events)
    assert all(at_ack == set(ids) for _, at_ack in stream.acked)
    assert stored() == set(ids)
    costs = client.query("SELECT sum(cost), count() FROM ledger FINAL").result_rows[0]
    assert costs == (Decimal("0.75") * len(ids), len(ids))  # 1M × 0.15 + 1M × 0.60 per million, each
    letters = {d.origin_offset: d for d in await dead_letters.read(settings)}
    assert {o: d.stage for o, d in letters.items()} == {100: "decode", 101: "pricing", 102: "store"}
    assert letters[100].reason.startswith("decode: unknown magic byte 110")
    assert letters[101].reason == "pricing: ArithmeticError: injected: pricing failed"
    assert letters[102].reason.startswith(
        "store: ClickHouse refused the usage_events row: DataError: Unable to create native array for column `prompt_tokens`"
    )
    assert _counter("gpuledger_worker_insert_retries_total", table="usage_events") >= retries[0] + 2
    assert _counter("gpuledger_worker_batch_retries_total", agent="t") == retries[1] + 1
    # The batch ran twice (its dead letters failed to send the first time), so the poison row was refused twice.
    assert _counter("gpuledger_worker_poison_rows_total", table="usage_events") == retries[2] + 2
