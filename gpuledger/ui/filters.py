"""A page's time range and filters, read from its URL and written back into links (shareable URLs).

A filter that is absent does not filter; a filter that is present but empty selects the empty
value (a line without a team has ``team = ''``), so every row of a drill-down can be opened.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import date, timedelta
from typing import Any, Literal, cast
from urllib.parse import urlencode

DIMENSIONS = ("org", "team", "project", "model", "key_id")  # the drill-down path
LINE_FILTERS = ("kind", "basis", "node", "gpu_uuid")  # only the ledger itself has these


class BadFilter(ValueError):
    """A URL parameter that cannot be read; the message says which and what is expected."""


@dataclass(frozen=True)
class Filters:
    since: date
    until: date
    period: Literal["month", "week"] = "month"
    at: date | None = None
    org: str | None = None
    team: str | None = None
    project: str | None = None
    model: str | None = None
    key_id: str | None = None
    kind: str | None = None
    basis: str | None = None
    node: str | None = None
    gpu_uuid: str | None = None

    @classmethod
    def parse(cls, params: Mapping[str, str], today: date) -> Filters:
        """Filters from query parameters; by default this month so far (UTC days, ``until`` exclusive)."""
        since = _day(params, "since") or today.replace(day=1)
        until = _day(params, "until") or today + timedelta(days=1)
        if since >= until:
            raise BadFilter(f"since={since} is not before until={until}; give a range of at least one day")
        period = params.get("period", "month")
        if period not in ("month", "week"):
            raise BadFilter(f"period={period!r}: use month or week")
        values = {name: params.get(name) for name in (*DIMENSIONS, *LINE_FILTERS)}
        values["org"] = values["org"] or None  # the picker's "all"; no line has an empty org
        return cls(since=since, until=until, period=period, at=_day(params, "at"), **values)  # type: ignore[arg-type]

    def url(self, path: str, **changes: str | None) -> str:
        """``path`` with these filters (and ``changes``) as its query string."""
        target = replace(self, **cast(dict[str, Any], changes)) if changes else self  # changes name str-valued filters only
        query = {f.name: getattr(target, f.name) for f in fields(target)}
        query = {k: v.isoformat() if isinstance(v, date) else v for k, v in query.items() if v is not None}
        if query.get("period") == "month":
            del query["period"]
        return f"{path}?{urlencode(query)}"

    def set_dimensions(self) -> dict[str, str]:
        return {d: v for d in (*DIMENSIONS, *LINE_FILTERS) if (v := getattr(self, d)) is not None}


def _day(params: Mapping[str, str], name: str) -> date | None:
    text = params.get(name)
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadFilter(f"{name}={text!r} is not a date; use YYYY-MM-DD") from None


def period_bounds(period: str, at: date) -> tuple[date, date, date]:
    """(previous start, this start, this end) of the calendar month or Monday week containing ``at``."""
    if period == "week":
        start = at - timedelta(days=at.weekday())
        return start - timedelta(days=7), start, start + timedelta(days=7)
    start = at.replace(day=1)
    previous = (start - timedelta(days=1)).replace(day=1)
    return previous, start, (start + timedelta(days=32)).replace(day=1)
