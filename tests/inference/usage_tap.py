"""Reading usage events back from the real Kafka topic, from offsets captured before a test acted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from gpuledger.kafka import client_options
from gpuledger.settings import Settings
from schemas import InferenceUsage, codec_for

CODEC = codec_for(InferenceUsage)


class UsageTap:
    """Events on the usage topic written after ``start()``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topics.inference_usage
        self.consumer: AIOKafkaConsumer | None = None
        self.start_offsets: dict[TopicPartition, int] = {}
        self.raw: list[bytes] = []

    async def start(self) -> UsageTap:
        self.consumer = AIOKafkaConsumer(**client_options(self.settings.kafka), enable_auto_commit=False, group_id=None)
        await self.consumer.start()
        partitions = [TopicPartition(self.topic, p) for p in await self._partition_ids()]
        if not partitions:
            await self.consumer.stop()
            raise RuntimeError(f"topic {self.topic} has no partitions (was it created?)")
        self.consumer.assign(partitions)
        self.start_offsets = await self.consumer.end_offsets(partitions)
        for tp, offset in self.start_offsets.items():
            self.consumer.seek(tp, offset)
        return self

    async def _partition_ids(self) -> list[int]:
        admin = AIOKafkaAdminClient(**client_options(self.settings.kafka))
        await admin.start()
        try:
            [described] = await admin.describe_topics([self.topic])
            return [p["partition"] for p in described.get("partitions", [])]
        finally:
            await admin.close()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def events(self, match: Callable[[InferenceUsage], bool], count: int, timeout: float = 15.0) -> list[InferenceUsage]:
        """Wait for ``count`` matching events (fails on timeout); then wait briefly to catch any extra ones."""
        assert self.consumer is not None
        found: list[InferenceUsage] = []
        deadline = asyncio.get_running_loop().time() + timeout
        settle: float | None = None
        while True:
            now = asyncio.get_running_loop().time()
            if len(found) >= count and settle is None:
                settle = now + 0.5
            if (settle is not None and now >= settle) or now >= deadline:
                break
            batches = await self.consumer.getmany(timeout_ms=100)
            for records in batches.values():
                for record in records:
                    event = CODEC.decode(record.value)
                    if match(event):
                        found.append(event)
                        self.raw.append(record.value or b"")
        assert len(found) == count, f"expected {count} usage events, got {len(found)}: {found}"
        return found

    async def events_through(
        self, match: Callable[[InferenceUsage], bool], sentinel: Callable[[InferenceUsage], bool], timeout: float = 15.0
    ) -> list[InferenceUsage]:
        """Events matching ``match``, read until the first ``sentinel`` event and on to the topic's end as of then.

        The publisher sends events in the order requests finished, so once the event of a request made
        after others has arrived (and every partition is read to its end), theirs would have too: unlike
        a fixed wait, this cannot pass just because Kafka was slow. Fails when no sentinel event arrives.
        """
        assert self.consumer is not None
        consumer = self.consumer
        found: list[InferenceUsage] = []
        seen = False
        deadline = asyncio.get_running_loop().time() + timeout

        async def read() -> None:
            nonlocal seen
            assert asyncio.get_running_loop().time() < deadline, (
                f"no sentinel event within {timeout}s" if not seen else "topic end not reached"
            )
            for records in (await consumer.getmany(timeout_ms=100)).values():
                for record in records:
                    event = CODEC.decode(record.value)
                    if match(event):
                        found.append(event)
                        self.raw.append(record.value or b"")
                    seen = seen or sentinel(event)

        while not seen:
            await read()
        ends = await consumer.end_offsets(list(self.start_offsets))
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            await read()
        return found
