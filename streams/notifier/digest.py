"""The weekly Slack digest per team: when it is due, what it says, and sending it exactly once per team and week.

A digest covers the team's last full week, Monday 00:00 to Monday 00:00 in its time zone, and is due from its
configured weekday and time of the following week. Its id (``digest/<org>/<team>/<ISO week of that Monday>``)
goes through the notifier's sqlite delivery ledger like an alert's: a week already delivered (or refused for
good) is never posted again, whatever restarts; the same honest gap as alerts applies (a crash between Slack's
200 and the ledger write reposts it once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import structlog
from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from gpuledger.clickhouse import connect
from gpuledger.kafka import read_records
from gpuledger.sections.notifier import WEEKDAYS, DigestSchedule, NotifierSettings
from gpuledger.settings import Settings
from schemas import BudgetStatus
from streams.notifier.routing import route_for
from streams.notifier.slack import (
    TENTH,
    RetryPolicy,
    Sleep,
    _cut,
    escape,
    money,
    period_text,
    post_with_retry,
)
from streams.notifier.state import DeliveryState
from streams.store.digest import TeamWeek, team_week

log = structlog.get_logger("gpuledger.notifier")


@dataclass(frozen=True)
class Week:
    """The week a digest covers, as exact instants, and the id it is delivered under."""

    scope: str
    start: datetime
    end: datetime
    timezone: str

    @property
    def digest_id(self) -> str:
        year, week, _ = self.start.astimezone(ZoneInfo(self.timezone)).date().isocalendar()  # the local Monday's week
        return f"digest/{self.scope}/{year}-W{week:02d}"


def due_week(schedule: DigestSchedule, now: datetime) -> Week:
    """The latest week whose digest is due at ``now``: sent from ``weekday`` ``at`` (local) of the week after it."""
    zone = ZoneInfo(schedule.timezone)
    local = now.astimezone(zone)
    monday = local.date() - timedelta(days=local.weekday())
    send_at = datetime.combine(monday + timedelta(days=WEEKDAYS.index(schedule.weekday)), schedule.at, zone)
    if local < send_at:  # this week's is not due yet: the last one is
        monday -= timedelta(days=7)
    return Week(schedule.scope.strip("/"), _midnight(monday - timedelta(days=7), zone), _midnight(monday, zone), schedule.timezone)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, datetime.min.time(), zone).astimezone(UTC)


def digest_message(week: Week, figures: TeamWeek, standings: list[BudgetStatus], currency: str) -> dict[str, Any]:
    """Block Kit, built with slack_sdk's models so Slack's limits (lengths, field counts) are checked before sending."""
    spend = ", ".join(money(a.amount, a.currency) for a in figures.spend) or money(Decimal(0), currency)
    saved = figures.savings
    title = f"Weekly AI spend for {week.scope}: {spend}"
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=_cut(f"Weekly AI spend: {week.scope}", 150))),
        SectionBlock(
            fields=[
                _md(f"*Week*\n{escape(period_text(week.start, week.end, week.timezone))}"),
                _md(f"*Spend*\n{escape(spend)}"),
            ]
        ),
        _lines("Top models", [f"{escape(a.name)}: {escape(money(a.amount, a.currency))}" for a in figures.top_models], "no model spend"),
        _lines(
            "Routing savings",
            [
                f"{escape(money(saved.savings, currency))} saved: {escape(money(saved.actual_cost, currency))} actual vs "
                f"{escape(money(saved.counterfactual_cost, currency))} at the baseline models, over {saved.requests:,} routed requests"
                + (f" ({saved.unpriced_requests:,} not priced)" if saved.unpriced_requests else "")
            ]
            if saved.requests
            else [],
            "no routed requests",
        ),
    ]
    if figures.cost_per_success is not None:  # only where the outcomes views exist
        blocks.append(
            _lines(
                "Cost per successful outcome",
                [f"{escape(a.name)}: {escape(money(a.amount, a.currency or currency))}" for a in figures.cost_per_success],
                "no outcomes",
            )
        )
    blocks.append(_lines("Budgets", [_standing(s) for s in standings], "no budgets"))
    blocks += [DividerBlock(), ContextBlock(elements=[_md(f"digest `{escape(week.digest_id)}`")])]
    return {"text": _cut(escape(title), 3000), "blocks": [b.to_dict() for b in blocks]}


def _md(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=_cut(text, 2000))


def _lines(title: str, lines: list[str], empty: str) -> SectionBlock:
    return SectionBlock(text=_md(f"*{title}*\n" + ("\n".join(lines) if lines else f"_{empty}_")))


def _standing(status: BudgetStatus) -> str:
    pct = f" ({(status.spend * 100 / status.amount).quantize(TENTH, ROUND_HALF_UP)}%)" if status.amount else ""
    flag = " :no_entry: exhausted" if status.exhausted else ""
    where = "/".join(p for p in (status.org, status.team, status.project) if p) + (f" model={status.model}" if status.model else "")
    return (
        escape(f"{status.budget_id} ({where}): {money(status.spend, status.currency)} of {money(status.amount, status.currency)}{pct}")
        + flag
    )


Figures = Callable[[Week], Awaitable[tuple[TeamWeek, list[BudgetStatus]]]]


async def read_figures(settings: Settings, outcomes_view: str, week: Week) -> tuple[TeamWeek, list[BudgetStatus]]:
    """The team's week from ClickHouse and its budgets' latest standings from the compacted status topic."""
    org, team = week.scope.split("/")
    ch = settings.clickhouse

    def read() -> TeamWeek:
        return team_week(connect(ch), ch.database, org, team, week.start, week.end, outcomes_view)

    statuses = await read_records(settings.kafka, settings.topics.budget_status, BudgetStatus)
    mine = sorted((s for s in statuses if s.org == org and s.team == team), key=lambda s: s.budget_id)
    return await asyncio.to_thread(read), mine


class DigestSender:
    """Posts each team's due digest once, recording it in the notifier's delivery ledger."""

    def __init__(
        self,
        settings: Settings,
        ns: NotifierSettings,
        state: DeliveryState,
        client: httpx.AsyncClient,
        sleep: Sleep,
        figures: Figures | None = None,
    ) -> None:
        """``sleep(s)`` waits and returns True when the notifier is stopping (the runner's ``wait_or_stop``)."""
        self.settings, self.ns, self.state, self.client, self.sleep = settings, ns, state, client, sleep
        self.figures = figures or (lambda week: read_figures(settings, ns.digest_outcomes_view, week))
        self.policy = RetryPolicy(ns.max_attempts, ns.backoff_base_s, ns.backoff_max_s, ns.max_retry_after_s)

    async def send_due(self, now: datetime) -> list[str]:
        """Send every digest due at ``now`` and not yet settled; returns the ids delivered now."""
        sent = []
        for schedule in self.ns.digests:
            week = due_week(schedule, now)
            if self.state.is_final(week.digest_id):
                continue
            if await self._send(week) == "delivered":
                sent.append(week.digest_id)
        return sent

    async def _send(self, week: Week) -> str:
        bound = log.bind(digest_id=week.digest_id)
        target = route_for(week.scope, self.ns)
        if target is None or target.format != "slack":
            self.state.finish(week.digest_id, "failed", target.name if target else "-", "no Slack route for this team")
            bound.error("no Slack route for the digest; recorded as failed")
            return "failed"
        figures, standings = await self.figures(week)
        payload = digest_message(week, figures, standings, self.settings.currency)
        self.state.begin(week.digest_id, target.name)
        outcome = await post_with_retry(
            self.client,
            target.url.get_secret_value(),
            payload,
            self.policy,
            sleep=self.sleep,
            on_attempt=lambda status, detail: self.state.attempt(week.digest_id, status, detail),
        )
        if outcome.status in ("delivered", "failed"):  # exhausted or interrupted: tried again at the next check
            self.state.finish(week.digest_id, outcome.status, target.name, outcome.detail)
        bound.info(f"digest {outcome.status}", route=target.name, attempts=outcome.attempts, http_status=outcome.http_status)
        return outcome.status

    async def run(self) -> None:
        """Check every ``digest_check_s`` until stopped; a failure (ClickHouse down) is logged and retried at the next check."""
        while True:
            try:
                await self.send_due(datetime.now(UTC))
            except Exception as exc:  # noqa: BLE001 - the alert loop must keep running; the digest is tried again
                log.error("digest check failed; retrying at the next check", error=f"{type(exc).__name__}: {str(exc)[:200]}")
            if await self.sleep(self.ns.digest_check_s):
                return
