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
import re
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import structlog
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

from schemas import GpuSample, LedgerLine
from streams import metrics
from streams.enrich import PricedUsage
from streams.store.tables import LEDGER_COLUMNS, SAMPLE_COLUMNS, USAGE_COLUMNS  # noqa: F401 (declared in the store layer; imported from here too)

log = structlog.get_logger()


def usage_row(p: PricedUsage, partition: int, offset: int) -> list[Any]:
    u = p.usage
    return [
        u.event_id, u.request_start, u.request_end, u.key_id, u.model, u.backend, u.deployment, u.endpoint, u.node or "",
        u.gpu_uuids, u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens, u.usage_estimated, u.ttft_ms, u.latency_ms, u.status,
        p.payer.org, p.payer.team, p.payer.project, p.payer.cost_centre, p.priced_as, p.price_id, p.cost,
        p.api_equivalent_cost, p.api_equivalent_price_id,
        u.requested_model, u.route_rule, u.baseline_model, u.client_request_id, u.trace_id, u.session_id, partition, offset,
    ]


def sample_row(s: GpuSample, owner_org: str, partition: int, offset: int) -> list[Any]:
    processes = json.dumps([asdict(p) for p in s.processes], separators=(",", ":"))
    return [
        s.sample_id, s.node, s.gpu_uuid, s.gpu_index, s.gpu_model, s.mig_instance, s.mig_parent_uuid or "", s.mig_profile or "",
        s.mig_slices, s.mig_parent_slices, s.interval_start, s.interval_end,
        s.utilization_pct, s.memory_utilization_pct, s.memory_used_bytes, s.memory_total_bytes, s.power_watts,
        s.energy_joules, s.sm_clock_mhz, s.temperature_c, s.xid_errors, s.ecc_errors_corrected, s.ecc_errors_uncorrected,
        processes, owner_org, partition, offset,
    ]


def ledger_row(line: LedgerLine, version: int, deleted: bool = False) -> list[Any]:
    return [
        line.line_id, line.kind, line.event_time, line.window_seconds, line.org, line.team, line.project, line.cost_centre,
        line.model, line.key_id, line.event_id, line.node, line.gpu_uuid, line.price_id, line.prompt_tokens,
        line.cached_prompt_tokens, line.completion_tokens, line.window_tokens, line.share_tokens, line.gpu_seconds,
        line.utilization_pct, line.cost, line.currency, line.gpu_model, line.workload, line.basis, line.idle_policy, line.mig_profile,
        line.parent_gpu_uuid, line.adjusts_line_id, line.adjusts_window, version, int(deleted),
    ]


def version_now() -> int:
    """Row version for ReplacingMergeTree: microseconds since the epoch, so a newer write wins."""
    return time.time_ns() // 1000


# ClickHouse error codes that mean "this data cannot be stored" (retrying cannot help); every other
# server error (unknown table, auth, memory, too many parts, timeouts, ...) is retried.
DATA_ERROR_CODES = frozenset({
    6, 26, 27, 38, 41, 53, 69, 70, 72, 117, 131, 321, 349, 407, 469,
    # CANNOT_PARSE_TEXT, _QUOTED_STRING, _INPUT_ASSERTION_FAILED, _DATE, _DATETIME, TYPE_MISMATCH,
    # ARGUMENT_OUT_OF_BOUND, CANNOT_CONVERT_TYPE, CANNOT_PARSE_NUMBER, INCORRECT_DATA, TOO_LARGE_STRING_SIZE,
    # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE, CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN, DECIMAL_OVERFLOW, VIOLATED_CONSTRAINT
})


def is_transient(exc: BaseException) -> bool:
    """True when an insert failed for a reason that waiting can fix (network, server down or overloaded).

    Permanent: the client could not serialize a value (clickhouse-connect's DataError, or the
    OverflowError / ValueError / TypeError of a value out of the column's range), or the
    server refused the data itself (``DATA_ERROR_CODES``). Everything else is retried,
    because dead-lettering good rows over a broken deployment would be worse than waiting.
    """
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DataError | OverflowError | ValueError | TypeError):
        return False
    if isinstance(exc, DatabaseError):
        return _error_code(exc) not in DATA_ERROR_CODES
    return True


def _error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    found = re.search(r"Code: (\d+)", str(exc))
    return int(found[1]) if found else None


class PoisonRows(RuntimeError):
    """Rows ClickHouse refused for their content; ``refused`` maps each row's index to the error."""

    def __init__(self, table: str, refused: dict[int, str]) -> None:
        super().__init__(f"{len(refused)} row(s) refused by {table}: {next(iter(refused.values()), '')}")
        self.refused = refused


class ClickHouseSink:
    """Inserts batches into the ledger database: transient failures are retried with backoff until
    stored; rows refused for their content are isolated by bisection and reported, never retried."""

    def __init__(self, client: Client, database: str, max_backoff: float = 10.0) -> None:
        self.client = client
        self.database = database
        self.max_backoff = max_backoff

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
        """Insert once it works; the error text when the rows themselves are refused."""
        delay = 0.2
        while True:
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self.client.insert, f"{self.database}.{table}", rows, column_names=list(columns))
            except Exception as exc:
                if not is_transient(exc):
                    return f"{type(exc).__name__}: {str(exc)[:500]}"
                metrics.INSERT_RETRIES.labels(table).inc()
                log.warning("clickhouse insert failed; retrying", table=table, rows=len(rows), error=str(exc)[:300], retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
            else:  # counted here, where every write of the worker passes: refused rows are never counted as stored
                metrics.INSERT_SECONDS.labels(table).observe(time.perf_counter() - started)
                metrics.ROWS_INSERTED.labels(table).inc(len(rows))
                return None
