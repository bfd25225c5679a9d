"""GPU window allocation: each GPU's cost per window, split by token share, remainder to idle.

The allocator is a pure function of deduplicated raw rows in ClickHouse and the price
list, so it is idempotent by construction. Every few seconds it finds the windows
whose inputs changed (rows ingested since its last pass), re-derives their lines and
writes only what differs: changed lines get a newer version, withdrawn lines a
tombstone. Late events within ``restate_hours`` therefore correct their window;
older windows are final.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from clickhouse_connect.driver.client import Client

from schemas import LedgerLine
from streams.enrich import OrgLookup
from streams.pricing import PriceBook, allocate_window, utilization_decimal
from streams.sink import LEDGER_COLUMNS, ClickHouseSink, ledger_row, version_now

log = structlog.get_logger()
MICROS = Decimal(1_000_000)
Group = tuple[str, str, str, str, str]  # org, team, project, cost_centre, model


@dataclass
class WindowInputs:
    node: str = ""
    gpu_model: str = ""
    covered_us: int = 0
    util_weighted: float = 0.0
    groups: dict[Group, tuple[int, int, int]] | None = None  # prompt, cached, completion


class GpuAllocator:
    """Re-derives the gpu and idle ledger lines of windows whose inputs changed."""

    def __init__(
        self, *, client: Client, sink: ClickHouseSink, database: str, window_seconds: int, restate_hours: float,
        owners: OrgLookup, prices: Callable[[], PriceBook], unassigned: str, margin_seconds: float = 15.0,
    ) -> None:
        self.client, self.sink, self.db = client, sink, database
        self.window = window_seconds
        self.restate = timedelta(hours=restate_hours)
        self.owners, self.prices, self.unassigned = owners, prices, unassigned
        self.margin = timedelta(seconds=margin_seconds)
        self.last_pass: datetime | None = None

    def _query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        return self.client.query(sql, parameters=params).result_rows

    def dirty_windows(self, lookback: datetime, since: datetime) -> set[tuple[str, datetime]]:
        """(gpu, window start) pairs with rows ingested since ``since``."""
        rows = self._query(
            f"""
            SELECT gpu, w FROM (
                SELECT arrayJoin(gpu_uuids) AS gpu, toStartOfInterval(event_time, INTERVAL {self.window} SECOND) AS w
                FROM {self.db}.usage_events
                WHERE priced_as = 'gpu' AND event_time >= {{lookback:DateTime64(6)}} AND ingested_at >= {{since:DateTime64(3)}}
                UNION ALL
                SELECT gpu_uuid AS gpu, toStartOfInterval(interval_start, INTERVAL {self.window} SECOND) AS w
                FROM {self.db}.gpu_samples
                WHERE interval_start >= {{lookback:DateTime64(6)}} AND ingested_at >= {{since:DateTime64(3)}}
            ) GROUP BY gpu, w""",
            lookback=lookback, since=since,
        )
        return {(gpu, _utc(w)) for gpu, w in rows}

    def window_inputs(self, gpus: list[str], start: datetime, end: datetime) -> dict[tuple[str, datetime], WindowInputs]:
        """Samples and token sums of every window of ``gpus`` in [start, end)."""
        inputs: dict[tuple[str, datetime], WindowInputs] = {}
        for gpu, w, node, model, covered, weighted in self._query(
            f"""
            SELECT gpu_uuid, toStartOfInterval(interval_start, INTERVAL {self.window} SECOND) AS w, any(node), any(gpu_model),
                   sum(dateDiff('microsecond', interval_start, interval_end)) AS covered,
                   sum(utilization_pct * dateDiff('microsecond', interval_start, interval_end)) AS weighted
            FROM {self.db}.gpu_samples FINAL
            WHERE gpu_uuid IN {{gpus:Array(String)}} AND interval_start >= {{start:DateTime64(6)}} AND interval_start < {{end:DateTime64(6)}}
            GROUP BY gpu_uuid, w""",
            gpus=gpus, start=start, end=end,
        ):
            inputs[(gpu, _utc(w))] = WindowInputs(node, model, int(covered), float(weighted), {})
        for gpu, w, org, team, project, centre, model, prompt, cached, completion in self._query(
            f"""
            SELECT gpu, toStartOfInterval(event_time, INTERVAL {self.window} SECOND) AS w, org, team, project, cost_centre, model,
                   sum(prompt_tokens), sum(cached_prompt_tokens), sum(completion_tokens)
            FROM {self.db}.usage_events FINAL ARRAY JOIN gpu_uuids AS gpu
            WHERE priced_as = 'gpu' AND gpu IN {{gpus:Array(String)}}
              AND event_time >= {{start:DateTime64(6)}} AND event_time < {{end:DateTime64(6)}}
            GROUP BY gpu, w, org, team, project, cost_centre, model""",
            gpus=gpus, start=start, end=end,
        ):
            window = inputs.setdefault((gpu, _utc(w)), WindowInputs(groups={}))
            assert window.groups is not None
            window.groups[(org, team, project, centre, model)] = (int(prompt), int(cached), int(completion))
        return inputs

    def existing_lines(self, gpus: list[str], start: datetime, end: datetime) -> dict[str, tuple[Any, ...]]:
        rows = self._query(
            f"""
            SELECT line_id, kind, event_time, org, team, project, cost_centre, model, node, gpu_uuid, cost, window_tokens, gpu_seconds, currency
            FROM {self.db}.ledger FINAL
            WHERE kind IN ('gpu', 'idle') AND gpu_uuid IN {{gpus:Array(String)}}
              AND event_time >= {{start:DateTime64(6)}} AND event_time < {{end:DateTime64(6)}}""",
            gpus=gpus, start=start, end=end,
        )
        return {row[0]: row for row in rows}

    def derive_lines(self, gpu: str, window: datetime, inputs: WindowInputs, prices: PriceBook) -> list[LedgerLine] | None:
        """The window's lines, or None when it cannot be priced yet (no samples or no GPU price)."""
        if inputs.covered_us <= 0:
            return None
        price = prices.at("gpu_hour", inputs.gpu_model, window)
        if price is None or price.per_hour is None:
            log.warning("no gpu_hour price for GPU model; window left unpriced", gpu_model=inputs.gpu_model, window=window.isoformat())
            return None
        covered = min(inputs.covered_us, self.window * 1_000_000)
        gpu_seconds = Decimal(covered) / MICROS
        utilization = utilization_decimal(inputs.util_weighted / inputs.covered_us)
        groups = inputs.groups or {}
        tokens = {group: prompt + completion for group, (prompt, _, completion) in groups.items()}
        split = allocate_window(per_hour=price.per_hour, gpu_seconds=gpu_seconds, utilization_pct=utilization, tokens=tokens)
        stamp = int(window.timestamp())
        common = dict(
            event_time=window, window_seconds=self.window, node=inputs.node, gpu_uuid=gpu, price_id=price.price_id,
            window_tokens=sum(tokens.values()), gpu_seconds=gpu_seconds, utilization_pct=float(utilization), currency=price.currency,
        )
        lines = [
            LedgerLine(
                line_id=f"gpu:{gpu}:{stamp}:{org}/{team}/{project}/{model}", kind="gpu", org=org, team=team, project=project,
                cost_centre=centre, model=model, prompt_tokens=groups[group][0], cached_prompt_tokens=groups[group][1],
                completion_tokens=groups[group][2], cost=cost, **common,  # type: ignore[arg-type]
            )
            for group, cost in split.shares.items()
            for org, team, project, centre, model in [group]
        ]
        owner = self.owners("node", inputs.node)
        lines.append(
            LedgerLine(
                line_id=f"idle:{gpu}:{stamp}", kind="idle", org=owner.org if owner else self.unassigned,
                team=owner.team if owner else "", project=owner.project if owner else "",
                cost_centre=owner.cost_centre if owner else "", model=inputs.gpu_model, cost=split.idle, **common,  # type: ignore[arg-type]
            )
        )
        return lines

    async def run_once(self) -> int:
        """One allocation pass; returns how many ledger rows it wrote."""
        prices = self.prices()  # read the price list on the event loop (where it is updated), query ClickHouse off it
        now, rows = await asyncio.to_thread(self.plan, prices)
        await self.sink.insert("ledger", LEDGER_COLUMNS, rows)
        self.last_pass = now
        if rows:
            log.info("gpu windows allocated", rows=len(rows))
        return len(rows)

    def plan(self, prices: PriceBook) -> tuple[datetime, list[list[Any]]]:
        """The ledger rows that bring every changed window up to date, and the pass's start time."""
        now = _utc(self.client.query("SELECT now64(3)").result_rows[0][0])
        lookback = now - self.restate
        since = lookback if self.last_pass is None else self.last_pass - self.margin
        dirty = self.dirty_windows(lookback, since)
        if not dirty:
            return now, []
        gpus = sorted({gpu for gpu, _ in dirty})
        start = min(w for _, w in dirty)
        end = max(w for _, w in dirty) + timedelta(seconds=self.window)
        inputs = self.window_inputs(gpus, start, end)
        existing = self.existing_lines(gpus, start, end)
        version = version_now()
        rows: list[list[Any]] = []
        for gpu, window in sorted(dirty):
            lines = self.derive_lines(gpu, window, inputs.get((gpu, window), WindowInputs()), prices)
            if lines is None:
                continue
            fresh = {line.line_id: line for line in lines}
            for line in lines:
                old = existing.get(line.line_id)
                if old is None or (old[10], old[11], old[12]) != (line.cost, line.window_tokens, line.gpu_seconds):
                    rows.append(ledger_row(line, version))
            prefix = f"gpu:{gpu}:{int(window.timestamp())}:"
            for line_id, old in existing.items():
                if line_id.startswith(prefix) and line_id not in fresh:
                    rows.append(_tombstone(old, version))
        return now, rows


def _tombstone(old: tuple[Any, ...], version: int) -> list[Any]:
    line_id, kind, event_time, org, team, project, centre, model, node, gpu, _cost, _tokens, _seconds, currency = old
    line = LedgerLine(
        line_id=line_id, kind=kind, event_time=event_time, org=org, team=team, project=project, cost_centre=centre,
        model=model, node=node, gpu_uuid=gpu, price_id="", gpu_seconds=Decimal(0), cost=Decimal(0), currency=currency,
    )
    return ledger_row(line, version, deleted=True)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
