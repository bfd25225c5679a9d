"""Turning a ``BudgetAlert`` into a Slack Block Kit message (or plain JSON) and posting it with retries.

Response classes follow Slack incoming webhooks: 2xx is delivered; 429 waits
``Retry-After`` seconds; 5xx, 408 and network errors back off exponentially; every
other 4xx (``invalid_payload``, ``no_service``, ``channel_is_archived``...) is a
permanent failure that retrying cannot fix. URLs never appear in an ``Outcome``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from gpuledger.retry import Backoff, transient_http_status
from schemas import BudgetAlert

KIND_LABEL = {"threshold": "threshold reached", "forecast": "forecast to exceed", "spike": "spend spike"}
KIND_EMOJI = {"threshold": ":warning:", "forecast": ":crystal_ball:", "spike": ":chart_with_upwards_trend:"}
CENT = Decimal("0.01")
TENTH = Decimal("0.1")


def percent_of_budget(alert: BudgetAlert) -> Decimal | None:
    """Spend as a percentage of the budget, to one decimal; ``None`` for a zero budget."""
    if not alert.budget_amount:
        return None
    return (alert.spend * 100 / alert.budget_amount).quantize(TENTH, rounding=ROUND_HALF_UP)


def money(amount: Decimal, currency: str) -> str:
    return f"{amount.quantize(CENT, rounding=ROUND_HALF_UP):,} {currency}"


def escape(text: str) -> str:
    """Slack's mrkdwn escaping: ``&``, ``<`` and ``>`` (so a model named ``<!channel>`` mentions no one)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _day(value: date) -> str:
    return f"{value.day} {value:%b %Y}"


def period_text(start: datetime, end: datetime, timezone: str) -> str:
    """The period in the budget's zone with an inclusive last day: ``1–30 Nov 2026 (Europe/Berlin)``.

    ``end`` is exclusive (the next period's start), so the last day is the one before it, locally.
    """
    zone = _zone(timezone)
    first, last = start.astimezone(zone).date(), (end.astimezone(zone) - timedelta(microseconds=1)).date()
    if first >= last:
        days = _day(first)
    elif (first.year, first.month) == (last.year, last.month):
        days = f"{first.day}–{last.day} {last:%b %Y}"
    elif first.year == last.year:
        days = f"{first.day} {first:%b} – {last.day} {last:%b %Y}"
    else:
        days = f"{_day(first)} – {_day(last)}"
    return f"{days} ({zone.key})"


def headline(alert: BudgetAlert) -> str:
    """Unescaped: for plain_text blocks; mrkdwn callers escape it."""
    pct = percent_of_budget(alert)
    label = KIND_LABEL.get(alert.kind, alert.kind)
    figure = f"{pct}% of budget" if pct is not None else money(alert.spend, alert.currency)
    if alert.kind == "threshold" and alert.threshold_pct:
        label = f"{alert.threshold_pct}% threshold reached"
    return f"Budget {label}: {alert.scope} at {figure}"


def slack_message(alert: BudgetAlert) -> dict[str, Any]:
    """Block Kit payload with a plain ``text`` fallback (what notifications and screen readers show).

    Every string that comes from users (scope, budget id, model and key names, the message,
    the currency) is mrkdwn-escaped; the header is plain_text, which Slack never parses.
    """
    pct = percent_of_budget(alert)
    fields = [
        f"*Scope*\n{escape(alert.scope)}",
        f"*Budget*\n{escape(alert.budget_id)}",
        f"*Spend*\n{escape(money(alert.spend, alert.currency))}",
        f"*Budget amount*\n{escape(money(alert.budget_amount, alert.currency))}",
        f"*Percent of budget*\n{pct}%" if pct is not None else "*Percent of budget*\nn/a (zero budget)",
        f"*Kind*\n{escape(alert.kind)}" + (f" ({alert.threshold_pct}%)" if alert.threshold_pct else ""),
        f"*Period*\n{escape(period_text(alert.period_start, alert.period_end, alert.timezone))}",
    ]
    if alert.projected_breach is not None:
        fields.append(f"*Forecast breach*\n{_day(alert.projected_breach.astimezone(_zone(alert.timezone)).date())}")
    title = f"{KIND_EMOJI.get(alert.kind, ':bell:')} {escape(headline(alert))}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(headline(alert), 150), "emoji": True}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _cut(f, 2000)} for f in fields[:10]]},  # Slack allows 10 fields
    ]
    if alert.message:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(escape(alert.message), 3000)}})
    drivers = [
        f"*Top {label}*\n" + "\n".join(f"{escape(s.name)}: {escape(money(s.spend, alert.currency))}" for s in shares)
        for label, shares in (("models", alert.top_models), ("keys", alert.top_keys))
        if shares
    ]
    if drivers:
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": _cut(d, 2000)} for d in drivers]})
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": _cut(f"alert `{escape(alert.alert_id)}` raised {alert.raised_at.isoformat()}", 3000)}],
        }
    )
    return {"text": _cut(title, 3000), "blocks": blocks}


def _cut(text: str, limit: int) -> str:
    """At most ``limit`` characters (Slack refuses longer texts), never ending inside an escape like ``&amp;``."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def json_payload(alert: BudgetAlert) -> dict[str, Any]:
    """The alert as JSON for generic webhooks: Decimals as strings (never floats), times as ISO 8601."""
    out: dict[str, Any] = {}
    for name in BudgetAlert.__dataclass_fields__:
        value = getattr(alert, name)
        if isinstance(value, Decimal):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        elif name in ("top_models", "top_keys"):
            value = [{"name": s.name, "spend": str(s.spend)} for s in value]
        out[name] = value
    pct = percent_of_budget(alert)
    out["percent_of_budget"] = str(pct) if pct is not None else None
    return out


@dataclass(frozen=True)
class RetryPolicy:
    """The notifier's settings for ``gpuledger.retry``: attempts per round, backoff, and the cap on a Retry-After."""

    max_attempts: int = 8
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 300.0

    @property
    def backoff(self) -> Backoff:
        return Backoff(first_s=self.backoff_base_s, max_s=self.backoff_max_s, attempts=self.max_attempts)


@dataclass(frozen=True)
class Outcome:
    """``delivered`` and ``failed`` are final; ``exhausted`` means transient failures used every attempt;
    ``interrupted`` means the stop event fired while waiting to retry."""

    status: Literal["delivered", "failed", "exhausted", "interrupted"]
    attempts: int
    http_status: int | None = None
    detail: str = ""


def retry_after_seconds(response: httpx.Response, cap: float) -> float | None:
    """The wait a 429's Retry-After asks for (at most ``cap``); None when it names none (the backoff applies)."""
    try:
        return max(0.0, min(float(response.headers.get("Retry-After", "")), cap))
    except ValueError:
        return None


Sleep = Callable[[float], Awaitable[bool]]  # returns True when the wait was cut short by a stop


async def _plain_sleep(seconds: float) -> bool:
    await asyncio.sleep(seconds)
    return False


class _Undelivered(Exception):
    """One attempt failed in a way a later one may not (network, 408, 429, 5xx)."""

    def __init__(self, status: int | None, detail: str, retry_after: float | None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.retry_after = status, detail, retry_after


class _Interrupted(Exception):
    """The stop event fired while waiting to retry."""


async def post_with_retry(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    policy: RetryPolicy,
    *,
    sleep: Sleep = _plain_sleep,
    on_attempt: Callable[[int | None, str], None] | None = None,
) -> Outcome:
    """POST ``payload`` as JSON until delivered, permanently refused, or ``policy.max_attempts`` are spent (``gpuledger.retry``)."""
    attempts: list[tuple[int | None, str]] = []

    async def attempt() -> Outcome:
        try:
            response = await client.post(url, json=payload)
        except httpx.TransportError as exc:  # connect/read timeouts, refused, reset
            status, detail, retry_after = None, f"network: {type(exc).__name__}", None
        else:
            status, detail = response.status_code, response.text[:200]
            retry_after = retry_after_seconds(response, policy.max_retry_after_s) if status == 429 else None
        attempts.append((status, detail))
        if on_attempt:
            on_attempt(status, detail)
        if status is not None and 200 <= status < 300:
            return Outcome("delivered", len(attempts), status, detail)
        if status is not None and not transient_http_status(status):
            return Outcome("failed", len(attempts), status, detail)
        raise _Undelivered(status, detail, retry_after)

    async def wait(seconds: float) -> None:
        if await sleep(seconds):
            raise _Interrupted

    retrying = policy.backoff.retrying(
        retry_if=lambda exc: isinstance(exc, _Undelivered), sleep=wait, asked_wait=lambda exc: getattr(exc, "retry_after", None)
    )
    try:
        return await retrying(attempt)
    except _Interrupted:
        return Outcome("interrupted", len(attempts), *attempts[-1])
    except _Undelivered as exc:
        return Outcome("exhausted", len(attempts), exc.status, exc.detail)
