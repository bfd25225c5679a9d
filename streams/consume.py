"""Batch consumption inside Faust: Faust keeps the consumer group, the worker gets whole fetches.

Faust hands a worker's records to its agents one by one: for every message its fetch loop
builds a ``Message``, starts a ``wait_first`` race against a flow-control event, runs the
conductor (flow control, decode into an ``Event``, a queue put) and the stream's iterator and
ack. Profiled while draining a backlog, that per-message machinery was 55-60 % of the worker's
Python time, more than decoding, pricing and the ClickHouse insert together.

``BatchingConsumer`` is Faust's own aiokafka consumer with one change: its fetch loop gives
the records of the topics that have a ``RecordBatcher`` to it as whole lists (one per partition
and fetch), and everything else (Faust's own topics) to Faust's conductor as before. Faust still
owns everything else: group membership, partition assignment and rebalances (so each partition
has one worker), leader election for the timers, seeking to committed offsets, the commit loop.
A batch's offsets are added to Faust's acknowledged set only after the batch is stored or
dead-lettered, with Faust's own rules (offsets read before Faust's committed position are ignored,
holes in a partition's offsets are recorded as gaps); Faust commits them every
``broker_commit_every`` acknowledgements, every ``broker_commit_interval`` and on rebalance or
shutdown. A record of a partition revoked meanwhile is stored but not acknowledged: its new owner
reads it again, and storage is idempotent.

Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` (hard-coded). aiokafka keeps one fetch
request in flight per broker, for the partitions with nothing buffered; when that request names only
partitions that just went quiet, the broker holds it for the whole wait while the other partitions' new
records queue behind it. Measured at 5,000 events/s on one broker, that wait was most of the worker's
freshness (p50 1.4 s, p99 2.8 s from Kafka to ClickHouse); ``fetch_wait_seconds`` (``worker.fetch_wait_seconds``,
0.1 s by default) bounds it. An idle worker then polls each broker ten times a second, which costs nothing.

Faust internals this relies on (faust-streaming 0.15; pinned in pyproject): ``Consumer._drain_messages``,
``_wait_next_records``, ``_read_offset``, ``_committed_offset``, ``_acked``, ``_acked_index``,
``_n_acked``, ``_add_gap``, ``perform_seek``, ``_new_consumer_thread``, ``AIOKafkaConsumerThread._create_worker_consumer``
(and aiokafka's ``AIOKafkaConsumer._fetch_max_wait_ms``, read when the consumer starts); ``tests/test_pipeline.py`` and ``tests/hostile``
exercise them end to end (restarts, rebalances, Kafka and ClickHouse outages).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, ClassVar, cast

import aiokafka
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from faust.types import TP
from mode import Service

from streams.batching import RecordBatcher


class _ConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, with the broker's fetch wait set by the worker instead of Faust's 1.5 s."""

    fetch_wait_ms: ClassVar[int] = 1500

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_wait_ms  # read by start(), which creates the fetcher
        return consumer


class BatchingConsumer(Consumer):
    """Faust's aiokafka consumer, delivering the batched topics' records a fetch at a time."""

    batchers: ClassVar[Mapping[str, RecordBatcher]] = {}
    max_wait: ClassVar[float] = 1.0  # longest fetch wait when nothing is pending (Faust's own)
    consumer_thread: ClassVar[type[_ConsumerThread]] = _ConsumerThread

    @classmethod
    def serving(cls, batchers: Mapping[str, RecordBatcher], fetch_wait_seconds: float = 1.5) -> type[BatchingConsumer]:
        """This consumer class with ``batchers`` (topic name -> batcher) and the broker's fetch wait; set as ``app.transport.Consumer``."""
        thread = type(_ConsumerThread.__name__, (_ConsumerThread,), {"fetch_wait_ms": max(1, round(fetch_wait_seconds * 1000))})
        return cast(type[BatchingConsumer], type(cls.__name__, (cls,), {"batchers": dict(batchers), "consumer_thread": thread}))

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return self.consumer_thread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - run by Faust's Fetcher; tested end to end
        if not self.batchers:
            await super()._drain_messages(fetcher)
            return
        stopped: tuple[type[BaseException], ...] = (
            *self.consumer_stopped_errors,
            asyncio.CancelledError,
        )  # mypy joins the unpacked tuple to type
        try:
            await self._drain_batches(fetcher)
        except stopped:
            if self.transport.app.should_stop:
                return
            raise
        finally:  # a batch still being stored is not acknowledged: read again after the restart or seek that follows
            for batcher in self.batchers.values():
                if batcher.storing is not None:
                    batcher.storing.cancel()
                    batcher.storing = None

    async def _drain_batches(self, fetcher: Service) -> None:
        stopped, fetcher_stopped = cast(Service, self)._stopped.is_set, fetcher._stopped.is_set
        while not (stopped() or fetcher_stopped()):
            waits = [w for b in self.batchers.values() if (w := b.wait_seconds()) is not None]
            records, active = await self._wait_next_records(min([self.max_wait, *waits]))
            if self.should_stop:
                return
            if records and not self.flow_active:  # a rebalance began: Faust drops the fetch and seeks back
                await self.perform_seek()
                continue
            for tp, batch in (records or {}).items():
                if active is None or tp in active or tp in self._buffered_partitions:
                    await self._take(tp, batch)
            due = [b for b in self.batchers.values() if b.due()]
            if due:
                await asyncio.gather(*(b.flush(self.acknowledge) for b in due))

    async def _take(self, tp: TP, records: list[Any]) -> None:
        """Hand a partition's fetched records to its batcher, skipping what was read already and noting gaps (as Faust's loop does)."""
        self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
        batcher = self.batchers.get(tp.topic)
        if batcher is None:  # Faust's own topics: its conductor, message by message
            for record in records:
                await self._deliver_one(tp, record)
            return
        read = self._read_offset[tp]
        fresh = records if read is None else [r for r in records if r.offset >= read]
        if not fresh:
            return
        if read and fresh[0].offset - read > 1:
            await self._add_gap(tp, read + 1, fresh[0].offset)
        for before, after in zip(fresh, fresh[1:], strict=False):  # compaction or transaction markers leave holes
            if after.offset - before.offset > 1:
                await self._add_gap(tp, before.offset + 1, after.offset)
        self._read_offset[tp] = fresh[-1].offset
        batcher.add(fresh)

    async def _deliver_one(self, tp: TP, record: Any) -> None:
        read = self._read_offset[tp]
        if read is None or record.offset >= read:
            await self.wait_first(self.callback(self._to_message(tp, record)), self.suspend_flow.wait())
            self._read_offset[tp] = record.offset

    async def acknowledge(self, records: list[Any]) -> None:
        """Mark a stored batch's offsets as acknowledged, by Faust's rules; commit every ``broker_commit_every``."""
        offsets: dict[TP, list[int]] = defaultdict(list)
        for record in records:
            offsets[self._new_topicpartition(record.topic, record.partition)].append(record.offset)
        assignment = self.assignment()
        for tp, taken in offsets.items():
            if tp not in assignment:  # revoked while it was being stored: its new owner reads it again
                continue
            committed = self._committed_offset[tp]
            index, acked = self._acked_index[tp], self._acked[tp]
            fresh = [o for o in taken if (committed is None or o >= committed) and o not in index]
            index.update(fresh)
            acked.extend(fresh)
            self._n_acked += len(fresh)
        commit_every = self._commit_every
        if commit_every is not None and self._n_acked >= commit_every:
            self._n_acked = 0
            await self.commit()
