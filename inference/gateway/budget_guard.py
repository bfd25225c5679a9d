"""Hard budgets at the gateway: follow the worker's budget standings and refuse exhausted scopes.

The worker publishes each budget's standing to a compacted topic whenever it changes
(``streams.budgets.evaluator``). The guard reads that topic from the beginning and keeps
the exhausted hard budgets in memory, so the check on each request is a dict scan with
no I/O. A block ends when the worker says so (budget raised, deleted, or the new
period's standing arrives) or, without waiting for anyone, when its period has ended.
If Kafka cannot be reached at start the guard blocks nothing and keeps retrying: an
outage of the metering path must not take every application down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import structlog

from gpuledger.kafka import CompactedView
from gpuledger.settings import KafkaSettings
from schemas import BudgetStatus, DecodeError, codec_for

log = structlog.get_logger()


class BudgetGuard:
    """Which exhausted hard budget, if any, covers a caller's org/team/project and model."""

    def __init__(self, kafka: KafkaSettings, topic: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock
        self._blocked: dict[str, BudgetStatus] = {}
        self._codec = codec_for(BudgetStatus)
        self.view = CompactedView(kafka, topic, on_change=self._changed)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.view.run())

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
            if (
                s.period_end > now
                and s.org == org
                and s.team in ("", team)
                and s.project in ("", project)
                and (s.model is None or s.model in wanted)
            ):
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
                log.warning(
                    "hard budget exhausted: refusing its scope",
                    budget_id=status.budget_id,
                    org=status.org,
                    team=status.team,
                    project=status.project,
                )
            self._blocked[status.budget_id] = status
        elif self._blocked.pop(status.budget_id, None) is not None:
            log.info("hard budget no longer exhausted: accepting its scope again", budget_id=status.budget_id)

    def _changed(self, changes: dict[bytes, bytes | None]) -> None:
        for key, value in changes.items():
            self.apply(key, value)
