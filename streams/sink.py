"""Batched, idempotent writes into ClickHouse.

Rows are keyed by event or line id in ReplacingMergeTree tables, so writing a batch
again (a retry, a replay after a crash) replaces rows instead of adding to totals.
A transient failure (network, server down or overloaded) is retried until the insert
succeeds: the worker only acknowledges Kafka offsets after its batch is stored, so giving
up would lose events. Rows ClickHouse refuses for their content are isolated by
bisection and handed back with the error, so one poison row never blocks a partition.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from operator import attrgetter
from typing import Any

import structlog
from clickhouse_connect.driver.client import Client

from gpuledger.retry import Backoff
from schemas import GpuSample, LedgerLine
from streams import metrics
from streams.enrich import PricedUsage
from streams.store.tables import LEDGER_LINE_COLUMNS

log = structlog.get_logger()
_LEDGER_LINE_VALUES = attrgetter(*LEDGER_LINE_COLUMNS)  # a row's values straight from the column names: one list, no drift


def usage_row(p: PricedUsage, partition: int, offset: int) -> list[Any]:
    u = p.usage
    return [
        u.event_id,
        u.request_start,
        u.request_end,
        u.key_id,
        u.model,
        u.backend,
        u.deployment,
        u.endpoint,
        u.node or "",
        u.gpu_uuids,
        u.prompt_tokens,
        u.cached_prompt_tokens,
        u.completion_tokens,
        u.usage_estimated,
        u.ttft_ms,
        u.latency_ms,
        u.status,
        p.payer.org,
        p.payer.team,
        p.payer.project,
        p.payer.cost_centre,
        p.priced_as,
        p.price_id,
        p.cost,
        p.api_equivalent_cost,
        p.api_equivalent_price_id,
        u.requested_model,
        u.route_rule,
        u.baseline_model,
        u.client_request_id,
        u.trace_id,
        u.session_id,
        partition,
        offset,
        p.baseline_cost,
        p.baseline_price_id,
    ]


def sample_row(s: GpuSample, owner_org: str, partition: int, offset: int) -> list[Any]:
    processes = json.dumps([asdict(p) for p in s.processes], separators=(",", ":"))
    return [
        s.sample_id,
        s.node,
        s.gpu_uuid,
        s.gpu_index,
        s.gpu_model,
        s.mig_instance,
        s.mig_parent_uuid or "",
        s.mig_profile or "",
        s.mig_slices,
        s.mig_parent_slices,
        s.interval_start,
        s.interval_end,
        s.utilization_pct,
        s.memory_utilization_pct,
        s.memory_used_bytes,
        s.memory_total_bytes,
        s.power_watts,
        s.energy_joules,
        s.sm_clock_mhz,
        s.temperature_c,
        s.xid_errors,
        s.ecc_errors_corrected,
        s.ecc_errors_uncorrected,
        processes,
        owner_org,
        partition,
        offset,
    ]


def ledger_row(line: LedgerLine, version: int, deleted: bool = False) -> list[Any]:
    """``line`` as a ``ledger`` row: its fields in ``LEDGER_COLUMNS`` order, then the version and tombstone flag."""
    return [*_LEDGER_LINE_VALUES(line), version, int(deleted)]


def version_now() -> int:
    """Row version for ReplacingMergeTree: microseconds since the epoch, so a newer write wins."""
    return time.time_ns() // 1000


class PoisonRows(RuntimeError):
    """Rows ClickHouse refused for their content; ``refused`` maps each row's index to the error."""

    def __init__(self, table: str, refused: dict[int, str]) -> None:
        super().__init__(f"{len(refused)} row(s) refused by {table}: {next(iter(refused.values()), '')}")
        self.refused = refused


class ClickHouseSink:
    """Inserts batches into the ledger database: transient failures are retried (``gpuledger.retry``) until
    stored; rows refused for their content are isolated by bisection and reported, never retried."""

    def __init__(self, client: Client, database: str, max_backoff: float = 10.0) -> None:
        self.client = client
        self.database = database
        self.policy = Backoff(first_s=0.2, max_s=max_backoff)  # no attempt limit: giving up would lose events

    async def insert(self, table: str, columns: Sequence[str], rows: list[list[Any]]) -> None:
        """Store every row or raise ``PoisonRows`` (after storing all the others)."""
        refused = await self.store(table, columns, rows)
        if refused:
            raise PoisonRows(table, refused)

    async def store(self, table: str, columns: Sequence[str], rows: list[list[Any]]) -> dict[int, str]:
        """Store ``rows``; returns the index and error text of each row refused for its content."""
        refused: dict[int, str] = {}
        pending = [(0, len(rows))] if rows else []
        while pending:  # bisect: a refused range is split until each refused row stands alone
            start, end = pending.pop()
            error = await self._insert_retrying(table, columns, rows[start:end])
            if error is None:
                continue
            if end - start == 1:
                refused[start] = error
                metrics.POISON_ROWS.labels(table).inc()
                log.error("clickhouse refused a row; isolating it", table=table, row=start, error=error)
            else:
                middle = (start + end) // 2
                pending += [(middle, end), (start, middle)]
        return refused

    async def _insert_retrying(self, table: str, columns: Sequence[str], rows: list[list[Any]]) -> str | None:
        """Insert once it works (transient errors waited out); the error text when the rows themselves are refused."""

        def retried(exc: BaseException, wait: float) -> None:
            metrics.INSERT_RETRIES.labels(table).inc()
            log.warning("clickhouse insert failed; retrying", table=table, rows=len(rows), error=str(exc)[:300], retry_in=round(wait, 2))

        async def attempt() -> None:
            started = time.perf_counter()
            await asyncio.to_thread(self.client.insert, f"{self.database}.{table}", rows, column_names=list(columns))
            metrics.INSERT_SECONDS.labels(table).observe(time.perf_counter() - started)

        try:
            await self.policy.call(attempt, on_retry=retried)
        except Exception as exc:  # the policy re-raises only what gpuledger.retry.is_transient calls permanent
            return f"{type(exc).__name__}: {str(exc)[:500]}"
        metrics.ROWS_INSERTED.labels(table).inc(len(rows))  # counted here: refused rows are never counted as stored
        return None
