"""The budget evaluator: on every tick (leader worker only) measure each budget, raise new alerts, publish standings.

Each tick:
1. mirror the budget set into ClickHouse when it changed (analysts query ``budgets``);
2. measure every budget's current period (and the previous one during the late-event
   grace, so a late line still counts where it belongs) in one ledger scan;
3. raise each threshold, forecast and spike alert not raised before: publish it to the
   alerts topic and wait for Kafka's ack, *then* record it in ``budget_alerts``. A crash
   between the two re-raises the same ``alert_id`` on the next tick, which the notifier
   and ``budget_alerts`` both absorb; the reverse order could lose an alert;
4. publish each budget's standing to the compacted status topic when it changes, which
   the gateway reads to enforce hard budgets.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import structlog
from clickhouse_connect.driver.client import Client

from gpuledger.settings import BudgetSettings
from schemas import Budget, BudgetAlert, BudgetStatus, SpendShare, codec_for
from schemas.keys import budget_key
from streams.budgets.periods import period_bounds, previous_period
from streams.budgets.rules import (
    Figures,
    crossed,
    forecast_alert_id,
    is_spike,
    projected_breach,
    spike_alert_id,
    threshold_alert_id,
)
from streams.budgets.spend import Probe, measure, top_spenders
from streams.budgets.unit import measure_all, measure_units, unit_message
from streams.sink import ClickHouseSink, version_now
from streams.store import budgets as store
from streams.store.tables import ALERT_COLUMNS, BUDGET_COLUMNS

log = structlog.get_logger()
Publish = Callable[[str, list[tuple[bytes, bytes | None]]], Awaitable[None]]  # topic, [(key, value or None: tombstone)]; returns once acked
CENT = Decimal("0.01")
STATUS_REFRESH = timedelta(seconds=10)


@dataclass(frozen=True, slots=True)
class Topics:
    alerts: str
    status: str


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount.quantize(CENT, rounding=ROUND_HALF_UP):,} {currency}"


def _shares_json(shares: list[SpendShare]) -> str:
    return json.dumps([{"name": s.name, "spend": str(s.spend)} for s in shares])


def _budget_row(b: Budget, version: int) -> list[Any]:
    return [
        b.budget_id,
        b.org,
        b.team,
        b.project,
        b.model,
        b.period,
        b.timezone,
        b.amount,
        b.currency,
        b.thresholds,
        b.mode,
        b.updated_at,
        version,
        0,
    ]


def _alert_row(a: BudgetAlert) -> list[Any]:
    return [
        a.alert_id,
        a.budget_id,
        a.scope,
        a.kind,
        a.threshold_pct,
        a.mode,
        a.period_start,
        a.period_end,
        a.spend,
        a.budget_amount,
        a.currency,
        a.raised_at,
        a.projected_breach,
        _shares_json(a.top_models),
        _shares_json(a.top_keys),
        a.message,
    ]


class BudgetEvaluator:
    """Holds what was mirrored and published; everything else is re-read from ClickHouse each tick."""

    def __init__(
        self,
        client: Client,
        database: str,
        budgets: Callable[[], list[Budget]],
        publish: Publish,
        topics: Topics,
        settings: BudgetSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client, self.database, self.budgets, self.publish, self.topics = client, database, budgets, publish, topics
        self.settings, self.clock = settings, clock
        self.sink = ClickHouseSink(client, database)
        self._mirrored: dict[str, datetime] | None = None  # budget_id -> updated_at as mirrored
        self._published: dict[str, tuple[BudgetStatus, datetime]] = {}
        self._alert_codec = codec_for(BudgetAlert)
        self._status_codec = codec_for(BudgetStatus)

    async def run_once(self) -> list[BudgetAlert]:
        """One evaluation of every budget; returns the alerts raised now."""
        started = time.perf_counter()
        now = self.clock()
        budgets = [b for b in self.budgets() if b.amount > 0]
        await self._mirror(budgets)
        probes = self._probes(budgets, now)
        s = self.settings
        figures = await asyncio.to_thread(
            measure_all,
            probes,
            lambda spending: measure(
                self.client,
                self.database,
                spending,
                now,
                forecast_window=timedelta(minutes=s.forecast_window_minutes),
                baseline_hours=s.spike_baseline_hours,
            ),
            lambda units: measure_units(self.client, self.database, units),
        )
        raised = await asyncio.to_thread(self._raised_since, min((p.period_start for p in probes), default=now))
        due = [
            (probe, f, *d) for probe, f in zip(probes, figures, strict=True) for d in self._due(probe.budget, f, now) if d[0] not in raised
        ]
        alerts = await self._raise(due, now)
        await self.publish(self.topics.status, self._status_changes(probes, figures, now, alerted={a.budget_id for a in alerts}))
        if alerts:
            log.info("budget alerts raised", alerts=[a.alert_id for a in alerts], seconds=round(time.perf_counter() - started, 3))
        return alerts

    def _probes(self, budgets: list[Budget], now: datetime) -> list[Probe]:
        grace = timedelta(hours=self.settings.late_grace_hours)
        probes = []
        for b in budgets:
            start, end = period_bounds(b.period, b.timezone, now)
            probes.append(Probe(b, start, end))
            if now - start <= grace:
                probes.append(Probe(b, *previous_period(b.period, b.timezone, start)))
        return probes

    def _due(self, b: Budget, f: Figures, now: datetime) -> list[tuple[str, str, int, datetime | None]]:
        """(alert_id, kind, threshold_pct, projected breach) of every alert the figures call for."""
        due: list[tuple[str, str, int, datetime | None]] = [
            (threshold_alert_id(b, f.period_start, pct), "threshold", pct, None) for pct in crossed(b, f.spend)
        ]
        if f.period_end <= now:
            return due  # a past period only settles thresholds; forecasts and spikes are about now
        s = self.settings
        breach = projected_breach(b, f, now, timedelta(minutes=s.forecast_window_minutes), s.forecast_min_pct)
        if breach is not None:
            due.append((forecast_alert_id(b, f.period_start), "forecast", 0, breach))
        if is_spike(b, f, s.spike_baseline_hours, s.spike_factor, s.spike_min_pct):
            due.append((spike_alert_id(b, f.period_start, now), "spike", 0, None))
        return due

    def _raised_since(self, earliest: datetime) -> set[str]:
        return {row[0] for row in self.client.query(store.raised_since(self.database), parameters={"earliest": earliest}).result_rows}

    async def _raise(self, due: list[tuple[Probe, Figures, str, str, int, datetime | None]], now: datetime) -> list[BudgetAlert]:
        """Build, publish (acked) and then record the due alerts, all in one batch."""
        if not due:
            return []
        probes, n = [d[0] for d in due], self.settings.top_n
        top_models, top_keys = await asyncio.gather(
            asyncio.to_thread(top_spenders, self.client, self.database, probes, "model", n, now),
            asyncio.to_thread(top_spenders, self.client, self.database, probes, "key_id", n, now),
        )
        alerts = [
            BudgetAlert(
                alert_id=alert_id,
                budget_id=p.budget.budget_id,
                scope=p.budget.scope,
                kind=kind,
                threshold_pct=pct,
                period_start=f.period_start,
                period_end=f.period_end,
                spend=f.spend,
                budget_amount=p.budget.amount,
                currency=p.budget.currency,
                raised_at=now,
                projected_breach=breach,
                message=self._message(p.budget, f, kind, breach),
                top_models=models,
                top_keys=keys,
                mode=p.budget.mode,
                timezone=p.budget.timezone,
            )
            for (p, f, alert_id, kind, pct, breach), models, keys in zip(due, top_models, top_keys, strict=True)
        ]
        await self.publish(self.topics.alerts, [(budget_key(a.budget_id), self._alert_codec.encode(a)) for a in alerts])
        await self.sink.insert("budget_alerts", ALERT_COLUMNS, [_alert_row(a) for a in alerts])
        return alerts

    def _message(self, b: Budget, f: Figures, kind: str, breach: datetime | None) -> str:
        s = self.settings
        if b.outcome_kind:
            return unit_message(b, f)
        if kind == "forecast" and breach is not None:
            hourly = f.recent / Decimal(s.forecast_window_minutes) * 60
            return (
                f"At the last {s.forecast_window_minutes} min's run rate ({_money(hourly, b.currency)}/h), {b.scope} "
                f"will exhaust its {_money(b.amount, b.currency)} {b.period} budget around {breach:%Y-%m-%d %H:%M} UTC, "
                f"before the period ends {f.period_end:%Y-%m-%d %H:%M} UTC."
            )
        if kind == "spike":
            hourly = f.baseline / s.spike_baseline_hours
            ratio = (f.last_hour / hourly).quantize(Decimal("0.1")) if hourly else Decimal(0)
            return (
                f"{b.scope} spent {_money(f.last_hour, b.currency)} in the last hour: {ratio}x its average of "
                f"{_money(hourly, b.currency)}/h over the {s.spike_baseline_hours} h before."
            )
        action = (
            " Its requests through the gateway are refused until the period ends or the budget is raised."
            if b.mode == "hard" and f.spend >= b.amount
            else ""
        )
        return f"{b.scope} has spent {_money(f.spend, b.currency)} of its {_money(b.amount, b.currency)} {b.period} budget.{action}"

    async def _mirror(self, budgets: list[Budget]) -> None:
        """Write changed budgets, and tombstones for deleted ones, into ClickHouse; withdraw deleted budgets' status."""
        if self._mirrored is None:
            result = await asyncio.to_thread(self.client.query, store.mirrored(self.database))
            self._mirrored = {bid: at.replace(tzinfo=UTC) for bid, at in result.result_rows}
        mirrored = self._mirrored
        version = version_now()
        rows = [_budget_row(b, version) for b in budgets if mirrored.get(b.budget_id) != b.updated_at]
        gone = mirrored.keys() - {b.budget_id for b in budgets}
        rows += [[bid, "", "", "", None, "", "", Decimal(0), "", [], "", datetime.now(UTC), version, 1] for bid in gone]
        await self.sink.insert("budgets", BUDGET_COLUMNS, rows)
        await self.publish(self.topics.status, [(budget_key(bid), None) for bid in gone])
        for bid in gone:
            self._published.pop(bid, None)
            log.info("budget removed", budget_id=bid)
        self._mirrored = {b.budget_id: b.updated_at for b in budgets}

    def _status_changes(
        self, probes: list[Probe], figures: list[Figures], now: datetime, alerted: set[str]
    ) -> list[tuple[bytes, bytes | None]]:
        """Standings of the current periods that changed, or whose spend moved and were last sent a while
        ago or just raised an alert (so `budgets list` agrees with the alert)."""
        changes: list[tuple[bytes, bytes | None]] = []
        for probe, f in zip(probes, figures, strict=True):
            b = probe.budget
            if probe.period_end <= now:
                continue
            status = BudgetStatus(
                budget_id=b.budget_id,
                org=b.org,
                team=b.team,
                project=b.project,
                model=b.model,
                mode=b.mode,
                period_start=f.period_start,
                period_end=f.period_end,
                spend=f.spend,
                amount=b.amount,
                currency=b.currency,
                exhausted=f.spend >= b.amount,
                evaluated_at=now,
            )
            last = self._published.get(b.budget_id)
            if last is not None:
                before, at = last
                if _same_standing(before, status) and (
                    before.spend == status.spend or (now - at < STATUS_REFRESH and b.budget_id not in alerted)
                ):
                    continue
            if status.exhausted and b.mode == "hard" and (last is None or not last[0].exhausted):
                log.warning("hard budget exhausted", budget_id=b.budget_id, scope=b.scope, spend=str(f.spend), amount=str(b.amount))
            self._published[b.budget_id] = (status, now)
            changes.append((budget_key(b.budget_id), self._status_codec.encode(status)))
        return changes


def _same_standing(a: BudgetStatus, b: BudgetStatus) -> bool:
    """Everything the gateway acts on is unchanged (spend aside)."""
    fields = ("period_start", "exhausted", "amount", "mode", "org", "team", "project", "model")
    return all(getattr(a, name) == getattr(b, name) for name in fields)
