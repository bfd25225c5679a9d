"""GPU window allocation: re-derives the ledger lines of every GPU window whose inputs changed.

The lines of a window are a pure function (``streams.gpu_cost``) of deduplicated raw rows in
ClickHouse and the price list, so allocation is idempotent by construction. Every few seconds
the allocator finds the windows with rows ingested since its last pass and re-derives them:

- an *open* window (younger than ``restate_hours``) is rewritten: changed lines get a newer
  version, withdrawn lines a tombstone;
- a *closed* window (older) is never rewritten, since its period may already be reported or
  invoiced: the difference between what it should be and what is booked goes into adjustment
  lines dated now, each naming the line and window it corrects. Late data is never dropped.

A MIG instance is allocated together with its siblings (the unit is the parent GPU), so the
parent's free slices can be booked as idle in the same pass.

Several workers share the work without a leader: each allocates only the units whose samples
partition it consumes (``streams.ownership``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, cast

import structlog
from clickhouse_connect.driver.client import Client
from prometheus_client import Counter

from schemas import LedgerLine, OrgDirectory
from schemas.keys import adjustment_line_id
from streams.enrich import OrgLookup
from streams.gpu_cost import (
    CallerGroup,
    IdlePolicy,
    MigSlice,
    Tokens,
    WindowFacts,
    derive_lines,
    gpu_rate,
    mig_free_line,
    window_cost,
)
from streams.ownership import EVERYTHING, OwnedPartitions, Watermarks
from streams.pricing import ZERO, PriceBook
from streams.sink import ClickHouseSink, ledger_row, version_now
from streams.store import allocator as store
from streams.store.tables import LEDGER_COLUMNS
from streams.workloads import LabelKeys, Workload, collect_workloads, resolve_payer

log = structlog.get_logger()
MICROS = Decimal(1_000_000)
UTIL_PLACES = Decimal("0.0001")
LATE_WINDOWS = Counter(
    "gpuledger_late_windows", "Closed GPU windows (older than restate_hours) that received data and were corrected by adjustment lines."
)
LATE_ADJUSTMENTS = Counter("gpuledger_late_adjustment_lines", "Adjustment lines booked in the open period for closed GPU windows.")
# Columns that make a stored GPU line different from a freshly derived one (compared by name).
COMPARED = (
    "org",
    "team",
    "project",
    "cost_centre",
    "model",
    "key_id",
    "price_id",
    "cost",
    "gpu_seconds",
    "window_tokens",
    "share_tokens",
    "prompt_tokens",
    "cached_prompt_tokens",
    "completion_tokens",
    "utilization_pct",
    "gpu_model",
    "workload",
    "basis",
    "idle_policy",
)


@dataclass
class SampleWindow:
    """Raw samples of one GPU (or MIG instance) in one window, before pricing."""

    node: str
    gpu_model: str
    mig: MigSlice | None
    samples: list[tuple[int, float, str]] = field(default_factory=list)  # (microseconds, utilization %, processes JSON)


def utilization_of(samples: list[tuple[int, float, str]]) -> Decimal:
    """Time-weighted mean of the samples' utilization, each capped to 0..100 (NaN counts as 0), 4 decimals."""
    covered = sum(micros for micros, _, _ in samples)
    if covered <= 0:
        return ZERO
    weighted = sum((Decimal(micros) * _capped(util) for micros, util, _ in samples), ZERO)
    return (weighted / covered).quantize(UTIL_PLACES, ROUND_HALF_EVEN)


def _capped(util: float) -> Decimal:
    if util != util or util in (float("inf"), float("-inf")):
        return ZERO
    return min(max(Decimal(repr(util)), ZERO), Decimal(100))


class GpuAllocator:
    """Re-derives the gpu and idle ledger lines of windows whose inputs changed."""

    def __init__(
        self,
        *,
        client: Client,
        sink: ClickHouseSink,
        database: str,
        window_seconds: int,
        restate_hours: float,
        owners: OrgLookup,
        prices: Callable[[], PriceBook],
        unassigned: str,
        idle_policy: IdlePolicy = "workload",
        label_keys: LabelKeys,
        margin_seconds: float = 15.0,
        ownership: Callable[[], OwnedPartitions | None] = EVERYTHING,
    ) -> None:
        self.client, self.sink, self.db = client, sink, database
        self.window = window_seconds
        self.restate = timedelta(hours=restate_hours)
        self.owners, self.prices, self.unassigned = owners, prices, unassigned
        self.policy: IdlePolicy = idle_policy
        self.label_keys = label_keys
        self.margin = timedelta(seconds=margin_seconds)
        self.ownership = ownership
        self.watermarks = Watermarks()
        self.owned: OwnedPartitions | None = None

    def _query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        return cast(
            list[tuple[Any, ...]], self.client.query(sql, parameters=params).result_rows
        )  # clickhouse_connect annotates Sequence[Sequence]

    def _named(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        result = self.client.query(sql, parameters=params)
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    # ----- what changed -----

    def dirty_units(self, since: datetime) -> set[tuple[str, datetime]]:
        """(unit, window start) pairs with rows ingested since ``since``; a MIG instance's unit is its parent GPU."""
        rows = self._query(store.dirty_units(self.db, self.window), since=since)
        dirty = {(unit, _utc(w)) for unit, w in rows}
        parents = dict(self._query(store.mig_parents(self.db), gpus=sorted({unit for unit, _ in dirty}))) if dirty else {}
        return {(parents.get(unit, unit), w) for unit, w in dirty}

    # ----- the inputs of the dirty windows -----

    def sample_windows(self, units: list[str], start: datetime, end: datetime) -> dict[tuple[str, datetime], SampleWindow]:
        """Samples of every GPU belonging to ``units`` (the GPUs themselves and their MIG instances) in [start, end)."""
        instances = [gpu for (gpu,) in self._query(store.mig_instances(self.db), units=units, start=start, end=end)]
        windows: dict[tuple[str, datetime], SampleWindow] = {}
        for gpu, interval_start, micros, util, processes, node, model, parent, profile, slices, parent_slices in self._query(
            store.samples(self.db),
            gpus=sorted({*units, *instances}),
            start=start,
            end=end,
        ):
            key = (gpu, self._window_of(_utc(interval_start)))
            mig = MigSlice(parent, profile, int(slices), int(parent_slices)) if parent else None
            window = windows.setdefault(key, SampleWindow(node, model, mig))
            if micros > 0:
                window.samples.append((int(micros), float(util), processes))
        return windows

    def token_groups(self, gpus: list[str], start: datetime, end: datetime) -> dict[tuple[str, datetime], dict[CallerGroup, Tokens]]:
        """Metered tokens per GPU window and caller group; request tokens counted once, on the request's first GPU."""
        groups: dict[tuple[str, datetime], dict[CallerGroup, Tokens]] = defaultdict(dict)
        for gpu, w, org, team, project, centre, model, key_id, share, prompt, cached, completion in self._query(
            store.token_groups(self.db, self.window),
            gpus=gpus,
            start=start,
            end=end,
        ):
            groups[(gpu, _utc(w))][CallerGroup(org, team, project, centre, model, key_id)] = Tokens(
                int(share), int(prompt), int(cached), int(completion)
            )
        return groups

    def booked_lines(self, gpus: list[str], start: datetime, end: datetime) -> dict[tuple[str, datetime], dict[str, dict[str, Any]]]:
        """Stored gpu and idle lines by (gpu, window), each as a row dict by column name."""
        booked: dict[tuple[str, datetime], dict[str, dict[str, Any]]] = defaultdict(dict)
        for row in self._named(store.booked_lines(self.db), gpus=gpus, start=start, end=end):
            booked[(row["gpu_uuid"], _utc(row["event_time"]))][row["line_id"]] = row
        return booked

    # ----- deriving lines -----

    def _window_of(self, moment: datetime) -> datetime:
        return datetime.fromtimestamp(int(moment.timestamp()) // self.window * self.window, UTC)

    def _node_owner(self, node: str) -> OrgDirectory:
        return self.owners("node", node) or OrgDirectory(kind="node", key=node, org=self.unassigned)

    def window_facts(self, gpu: str, window: datetime, raw: SampleWindow, groups: dict[CallerGroup, Tokens]) -> WindowFacts:
        covered = min(sum(m for m, _, _ in raw.samples), self.window * 1_000_000)
        return WindowFacts(
            gpu=gpu,
            window=window,
            window_seconds=self.window,
            node=raw.node,
            gpu_model=raw.gpu_model,
            gpu_seconds=Decimal(covered) / MICROS,
            utilization=utilization_of(raw.samples),
            groups=groups,
            workloads=collect_workloads((m, procs) for m, _, procs in raw.samples),
            mig=raw.mig,
        )

    def derive_unit(self, members: list[WindowFacts], prices: PriceBook) -> list[LedgerLine]:
        """Lines of one unit's window: each member GPU's lines, plus a MIG parent's free slices."""
        lines: list[LedgerLine] = []
        instance_costs = ZERO
        for facts in members:
            rate = gpu_rate(facts, prices.at)
            if rate is None:
                log.warning(
                    "no gpu_hour price for GPU model; window left unpriced",
                    gpu_model=facts.gpu_model,
                    mig_profile=facts.mig.profile if facts.mig else None,
                    window=facts.window.isoformat(),
                )
                continue
            owner = self._node_owner(facts.node)

            def payer_of(workload: Workload, owner: OrgDirectory = owner) -> OrgDirectory:
                return resolve_payer(workload, owner, self.owners, self.label_keys)[0]

            lines.extend(derive_lines(facts, rate, policy=self.policy, node_owner=owner, payer_of=payer_of))
            if facts.mig is not None:
                instance_costs += window_cost(rate, facts.gpu_seconds)
        migs = [f for f in members if f.mig is not None]
        if migs:
            first = migs[0]
            assert first.mig is not None
            parent_price = prices.at("gpu_hour", first.gpu_model, first.window)
            if parent_price is not None and parent_price.per_hour is not None:
                free = mig_free_line(
                    parent=first.mig.parent_uuid,
                    window=first.window,
                    window_seconds=self.window,
                    node=first.node,
                    gpu_model=first.gpu_model,
                    parent_price=parent_price,
                    parent_seconds=max(f.gpu_seconds for f in migs),
                    instance_costs=instance_costs,
                    node_owner=self._node_owner(first.node),
                )
                if free.cost == 0 and instance_costs > 0 and all(f.mig and f.mig.profile for f in migs):
                    log.warning("MIG profile prices add up to more than the parent GPU's price", parent=first.mig.parent_uuid)
                lines.append(free)
        return lines

    # ----- a pass -----

    async def run_once(self) -> int:
        """One allocation pass; returns how many ledger rows it wrote."""
        prices = self.prices()  # read the price list on the event loop (where it is updated), query ClickHouse off it
        view = self.ownership()
        if view != self.owned:
            log.info("gpu allocation ownership", partitions=sorted(view.owned) if view else [])
            self.owned = view
        if view is None:
            return 0  # no samples partition assigned (yet): every unit belongs to another worker
        now, rows = await asyncio.to_thread(self.plan, prices, view)
        await self.sink.insert("ledger", LEDGER_COLUMNS, rows)
        self.watermarks.advance(view, now - self.margin)
        if rows:
            log.info("gpu windows allocated", rows=len(rows))
        return len(rows)

    def plan(self, prices: PriceBook, view: OwnedPartitions | None = None) -> tuple[datetime, list[list[Any]]]:
        """The ledger rows that bring every changed window of the units in ``view`` up to date, and the pass's start time."""
        view = view or EVERYTHING()
        assert view is not None
        # Taken before reading: of two workers deriving one window during a handover, the later reader wins.
        version = version_now()
        now = _utc(self.client.query(store.NOW).result_rows[0][0])
        open_from = now - self.restate
        dirty = {(unit, w) for unit, w in self.dirty_units(self.watermarks.since(view, open_from)) if view.owns(unit)}
        if not dirty:
            return now, []
        units = sorted({unit for unit, _ in dirty})
        start = min(w for _, w in dirty)
        end = max(w for _, w in dirty) + timedelta(seconds=self.window)
        raw = self.sample_windows(units, start, end)
        members_of: dict[str, set[str]] = defaultdict(set)
        for (gpu, _start), sample_window in raw.items():
            members_of[sample_window.mig.parent_uuid if sample_window.mig else gpu].add(gpu)
        gpus = sorted({gpu for gpu, _ in raw} | set(units))
        tokens = self.token_groups(gpus, start, end)
        booked = self.booked_lines(gpus, start, end)
        rows: list[list[Any]] = []
        late: list[tuple[datetime, list[LedgerLine], dict[str, dict[str, Any]]]] = []
        for unit, window in sorted(dirty):
            members = [
                self.window_facts(gpu, window, raw[(gpu, window)], tokens.get((gpu, window), {}))
                for gpu in sorted(members_of.get(unit, ()))
                if (gpu, window) in raw
            ]
            if not members:
                continue  # no samples: no evidence the GPU existed in this window
            fresh = self.derive_unit(members, prices)
            if not fresh:
                continue
            stored = {lid: row for gpu in {unit, *(f.gpu for f in members)} for lid, row in booked.get((gpu, window), {}).items()}
            if window >= open_from:
                rows.extend(_rewrite(fresh, stored, version))
            else:
                late.append((window, fresh, stored))
        if late:
            rows.extend(self.adjustments(late, now, version))
        return now, rows

    def adjustments(
        self, late: list[tuple[datetime, list[LedgerLine], dict[str, dict[str, Any]]]], now: datetime, version: int
    ) -> list[list[Any]]:
        """Adjustment lines (dated ``now``) that bring closed windows to what their inputs now say."""
        targets = {line.line_id: line for _, fresh, _ in late for line in fresh}
        booked = {lid: row for _, _, stored in late for lid, row in stored.items()}
        ids = sorted(targets.keys() | booked.keys())
        prior = {lid: (int(count), Decimal(total)) for lid, count, total in self._query(store.prior_adjustments(self.db), ids=ids)}
        rows = []
        for lid in ids:
            count, adjusted = prior.get(lid, (0, ZERO))
            have = (Decimal(booked[lid]["cost"]) if lid in booked else ZERO) + adjusted
            target = targets[lid] if lid in targets else _line_from_row(booked[lid], cost=ZERO)
            delta = target.cost - have
            if delta == 0:
                continue
            rows.append(
                ledger_row(
                    replace(
                        target,
                        line_id=adjustment_line_id(lid, count + 1),
                        kind="adjustment",
                        event_time=now,
                        cost=delta,
                        adjusts_line_id=lid,
                        adjusts_window=target.event_time,
                    ),
                    version,
                )
            )
        if rows:
            LATE_WINDOWS.inc(len(late))
            LATE_ADJUSTMENTS.inc(len(rows))
            log.warning(
                "late data for closed GPU windows booked as adjustments in the open period",
                windows=len(late),
                adjustment_lines=len(rows),
                oldest=min(w for w, _, _ in late).isoformat(),
            )
        return rows


def _rewrite(fresh: list[LedgerLine], stored: dict[str, dict[str, Any]], version: int) -> list[list[Any]]:
    """New or changed lines at a newer version, and tombstones for stored lines the window no longer has."""
    rows = []
    for line in fresh:
        old = stored.get(line.line_id)
        if old is None or any(_differs(old[name], getattr(line, name)) for name in COMPARED):
            rows.append(ledger_row(line, version))
    ids = {line.line_id for line in fresh}
    rows.extend(ledger_row(_line_from_row(old, cost=ZERO), version, deleted=True) for lid, old in stored.items() if lid not in ids)
    return rows


def _differs(stored: Any, fresh: Any) -> bool:
    if isinstance(fresh, Decimal) or isinstance(stored, Decimal):
        return Decimal(stored) != Decimal(fresh)
    return bool(stored != fresh)


def _line_from_row(row: dict[str, Any], *, cost: Decimal) -> LedgerLine:
    """A stored line as a record (for tombstones and withdrawals), with ``cost`` replaced."""
    fields = {name: value for name, value in row.items() if name in LedgerLine.__dataclass_fields__}
    fields.update(cost=cost, event_time=_utc(row["event_time"]))
    if fields.get("adjusts_window") is not None:
        fields["adjusts_window"] = _utc(fields["adjusts_window"])
    return LedgerLine(**fields)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
