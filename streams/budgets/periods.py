"""Budget periods (day, week, month) in the budget's own time zone, as UTC instants.

A Berlin monthly budget runs from local midnight on the 1st to local midnight on the
next 1st; computing bounds on the local calendar and converting keeps DST days right
(a day may be 23 or 25 hours long).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

PERIODS = ("day", "week", "month")


def _first_day(period: str, day: date) -> date:
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    if period == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown budget period {period!r}; use one of {', '.join(PERIODS)}")


def _next_first_day(period: str, first: date) -> date:
    if period == "day":
        return first + timedelta(days=1)
    if period == "week":
        return first + timedelta(days=7)
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def period_bounds(period: str, timezone: str, at: datetime) -> tuple[datetime, datetime]:
    """The ``[start, end)`` of the period containing ``at``, in UTC."""
    zone = ZoneInfo(timezone)
    first = _first_day(period, at.astimezone(zone).date())
    return _midnight(first, zone), _midnight(_next_first_day(period, first), zone)


def previous_period(period: str, timezone: str, start: datetime) -> tuple[datetime, datetime]:
    """The period just before the one starting at ``start``."""
    return period_bounds(period, timezone, start - timedelta(microseconds=1))
