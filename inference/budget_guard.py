"""Hard budgets at the gateway: follow the worker's budget standings and refuse exhausted scopes.

The worker publishes each budget's standing to a compacted topic whenever it changes
(``streams.budgets.evaluator``). The guard reads that topic from the beginning and keeps
the exhausted hard budgets in memory, so the check on each request is a dict scan with
no I/O. A block ends when the worker says so (budget raised, deleted, or the new
period's standing arrives) or, without waiting for anyone, when its period has ended.
If Kafka cannot be reached the guard blocks nothing and keeps retrying: an outage of
the metering path must not take every application down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaConsumer

from gpuledger.kafka import assign_from_beginning, client_options
from gpuledger.settings import KafkaSettings
from schemas import BudgetStatus, DecodeError, codec_for

log = structlog.get_logger()


class BudgetGuard:
    """Which exhausted hard budget, if any, covers a caller's org/team/project and model."""

    def __init__(self, kafka: KafkaSettings, topic: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._kafka, self._topic, self._clock = kafka, topic, clock
        self._blocked: dict[str, BudgetStatus] = {}
        self._task: asyncio.Task[None] | None = None
        self._codec = codec_for(BudgetStatus)
        self.caught_up = asyncio.Event()  # set once the topic was read to its end at start

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._follow_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def blocking(self, org: str, team: str, project: str, models: Iterable[str]) -> BudgetStatus | None:
        """The exhausted hard budget that refuses this request, or None."""
        if not self._blocked:
            return None
        now, wanted = self._clock(), set(models)
        for s in self._blocked.values():
            if s.period_end > now and s.org == org and s.team in ("", team) and s.project in ("", project) and (s.model is None or s.model in wanted):
                return s
        return None

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One message of the status topic: a standing, or a tombstone for a deleted budget."""
        budget_id = (key or b"").decode()
        if value is None:
            self._blocked.pop(budget_id, None)
            return
        try:
            status = self._codec.decode(value)
        except DecodeError as exc:
            log.error("undecodable budget status skipped", reason=exc.reason)
            return
        if status.mode == "hard" and status.exhausted:
            if status.budget_id not in self._blocked:
                log.warning("hard budget exhausted: refusing its scope", budget_id=status.budget_id, org=status.org, team=status.team, project=status.project)
            self._blocked[status.budget_id] = status
        elif self._blocked.pop(status.budget_id, None) is not None:
            log.info("hard budget no longer exhausted: accepting its scope again", budget_id=status.budget_id)

    async def _follow_forever(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker down, topic missing: enforce nothing new, retry
                log.warning("budget status topic unavailable; retrying", topic=self._topic, error=str(exc)[:200], retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(**client_options(self._kafka), enable_auto_commit=False, isolation_level="read_committed")
        await consumer.start()
        try:
            ends = await assign_from_beginning(consumer, self._topic)
            self._blocked.clear()  # rebuilt from the start of the topic
            while True:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    for message in messages:
                        self.apply(message.key, message.value)
                if not self.caught_up.is_set() and all([await consumer.position(tp) >= end for tp, end in ends.items()]):
                    self.caught_up.set()
        finally:
            await consumer.stop()
