"""The dashboard's reads: one function per page, each scoped to what the viewer may see.

Every query goes through ``scope()``, which always restricts an org-scoped viewer to its orgs
and refuses (``Refused``, 403) an org filter outside them, so an edited URL cannot reach
another org's figures, whatever the page or endpoint. Aggregates read rollups (``spend_daily`` and
``spend_by_org_daily`` over it; migration 0015's ``gpu_daily``, ``gpu_utilization_hourly``,
``self_hosted_vs_api_rollup``, ``serving_hours``), so a page's time does not grow with the ledger; the
ledger itself is read only for the lines page's listing (and its totals under basis / node / GPU filters). Ratios and the spend
bridge come from ``gpuledger.commands.unit_costs`` and ``gpuledger.commands.trends``, not re-derived here.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from clickhouse_connect.driver.client import Client

from gpuledger.commands import trends as tr
from gpuledger.commands import unit_costs as uc
from gpuledger.commands.budgets import current
from gpuledger.settings import Settings
from gpuledger.ui.auth import Viewer
from gpuledger.ui.filters import DIMENSIONS, LINE_FILTERS, Filters, period_bounds
from gpuledger.ui.tables import Column, Table, share
from schemas import Budget, BudgetStatus
from streams.store import dashboard as sql

LINES_SHOWN = 500
LINES_CSV = 100_000


@dataclass
class Ctx:
    settings: Settings
    client: Client
    viewer: Viewer
    filters: Filters
    state: dict[str, Any] = field(default_factory=dict)  # the app's, shared by every request (the budget standings cache)
    row_limit: int = LINES_SHOWN  # rows a long table reads: those a page shows, or LINES_CSV for a download

    @property
    def db(self) -> str:
        return self.settings.clickhouse.database


@dataclass
class Page:
    title: str
    tables: list[Table]
    charts: dict[str, Any] = field(default_factory=dict)
    crumbs: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str, str]] = field(default_factory=list)  # (anchor, heading, text): a section with no table yet

    def table(self, name: str) -> Table:
        return next(t for t in self.tables if t.name == name)


def scope(
    ctx: Ctx, time: str, dims: tuple[str, ...] = DIMENSIONS[:4], since: date | None = None, until: date | None = None
) -> tuple[str, dict[str, Any]]:
    """WHERE clause and parameters: the time range, the viewer's orgs, and the URL's filters on ``dims``."""
    f = ctx.filters
    params: dict[str, Any] = {"since": since or f.since, "until": until or f.until}
    conditions = [f"{time} >= {{since:Date}}", f"{time} < {{until:Date}}"]
    if ctx.viewer.orgs is not None:
        conditions.append("org IN {scope_orgs:Array(String)}")
        params["scope_orgs"] = sorted(ctx.viewer.orgs)
    for dim in dims:
        value = getattr(f, dim)
        if value is None:
            continue
        if dim == "org":
            ctx.viewer.check(value)
        conditions.append(f"{dim} = {{f_{dim}:String}}")
        params[f"f_{dim}"] = value
    return " AND ".join(conditions), params


def visible_orgs(ctx: Ctx) -> list[str]:
    """Orgs with spend that the viewer may see (for the org picker)."""
    if ctx.viewer.orgs is not None:
        return sorted(ctx.viewer.orgs)
    return [r[0] for r in ctx.client.query(sql.visible_orgs(ctx.db)).result_rows]


# ---------------------------------------------------------------- overview


def overview(ctx: Ctx) -> Page:
    """This period vs the last by org with a run-rate forecast, the Jevons view, top movers."""
    f = ctx.filters
    previous, start, end = period_bounds(f.period, f.at or datetime.now(UTC).date())
    orgs = _period_table(
        ctx, "orgs", f"Spend by org: this {f.period} ({start} to {end}, exclusive) vs the previous", ("org",), previous, start, end
    )
    for i, row in enumerate(orgs.rows):
        orgs.links[(i, "group")] = f.url("/drill", org=row["group"])
    movers = _period_table(ctx, "movers", f"Top movers by team this {f.period}", ("org", "team"), previous, start, end)
    movers.rows = sorted(movers.rows, key=lambda r: -abs(r["change"]))[:10]
    _add_bridge(ctx, movers, start, end)
    jevons, chart = _jevons(ctx, end)
    return Page("Overview", [orgs, jevons, movers], charts={"jevons": chart})


def _period_table(ctx: Ctx, name: str, title: str, dims: tuple[str, ...], previous: date, start: date, end: date) -> Table:
    where, params = scope(ctx, "day", since=previous, until=end)
    params["start"] = start
    rows = ctx.client.query(
        sql.period_table(ctx.db, where, dims),
        parameters=params,
    ).result_rows
    elapsed = _elapsed_fraction(start, end)
    table = Table(
        name,
        title,
        [
            Column("group", "org" if len(dims) == 1 else "team"),
            Column("previous", "previous", "money", True),
            Column("this", "this period", "money", True),
            Column("change", "change", "money", True),
            Column("change_pct", "change %", "pct"),
            Column("forecast", "run-rate forecast", "money", True),
            Column("currency", "currency"),
        ],
    )
    for group, currency, before, now in rows:
        before, now = Decimal(before), Decimal(now)
        table.rows.append(
            {
                "group": group,
                "currency": currency,
                "previous": before,
                "this": now,
                "change": now - before,
                "change_pct": share(now - before, before),
                "forecast": now / elapsed if elapsed else now,
            }
        )
    return table


def _elapsed_fraction(start: date, end: date) -> Decimal:
    """How much of [start, end) has passed (1 for a past period): the run-rate forecast is spend / this."""
    now = datetime.now(UTC)
    begin = datetime(start.year, start.month, start.day, tzinfo=UTC)
    finish = datetime(end.year, end.month, end.day, tzinfo=UTC)
    if now >= finish:
        return Decimal(1)
    return Decimal(max((now - begin).total_seconds(), 1)) / Decimal((finish - begin).total_seconds())


def _add_bridge(ctx: Ctx, movers: Table, start: date, end: date) -> None:
    """Volume / price / mix / other for each mover this period against the one before, from ``gpuledger trends``."""
    bridges = {
        (b.group, b.currency): b
        for b in tr.trends(ctx.settings, start, end, "team", ctx.filters.period, ctx.client)
        if ctx.viewer.may_see(b.group.split("/")[0])
    }
    movers.columns[4:4] = [
        Column("volume", "volume", "money"),
        Column("price", "price", "money"),
        Column("mix", "mix", "money"),
        Column("other", "other (no tokens)", "money"),
        Column("jevons", "unit cost down, spend up"),
    ]
    for row in movers.rows:
        bridge = bridges.get((row["group"], row["currency"]))
        if bridge is not None:
            row.update(
                volume=bridge.volume, price=bridge.price, mix=bridge.mix, other=bridge.other, jevons="yes" if bridge.jevons else "no"
            )


def _jevons(ctx: Ctx, end: date) -> tuple[Table, dict[str, Any]]:
    """Monthly total spend against cost per million tokens (usage and allocation bases), last 12 months."""
    first = end
    for _ in range(12):
        first = (first - timedelta(days=1)).replace(day=1)
    where, params = scope(ctx, "day", since=first, until=end)
    spend = {
        (m, c): Decimal(s)
        for m, c, s in ctx.client.query(
            sql.jevons_spend(ctx.db, where),
            parameters=params,
        ).result_rows
    }
    units = {
        (m, c): uc.UnitCost("", "", "", int(t), Decimal(u), Decimal(a))
        for m, c, t, u, a in ctx.client.query(
            sql.jevons_units(ctx.db, where),
            parameters=params,
        ).result_rows
    }
    table = Table(
        "jevons",
        "Unit cost vs total spend by month (why spend rises while unit prices fall)",
        [
            Column("month", "month", "date"),
            Column("spend", "total spend", "money", True),
            Column("tokens", "tokens", "int", True),
            Column("per_mtok_usage", "per 1M tokens (usage)", "money"),
            Column("per_mtok_allocation", "per 1M tokens (with idle)", "money"),
            Column("currency", "currency"),
        ],
    )
    for month, currency in sorted(set(spend) | set(units)):
        unit = units.get((month, currency))
        total = spend.get((month, currency), Decimal(0))
        table.rows.append(
            {
                "month": month,
                "spend": total,
                "tokens": unit.tokens if unit else 0,
                "currency": currency,
                "per_mtok_usage": unit.per_mtok_usage if unit else None,
                "per_mtok_allocation": unit.per_mtok_allocation if unit else None,
            }
        )
    months, month = [], first
    while month < end:
        months.append(month)
        month = (month + timedelta(days=32)).replace(day=1)
    # one currency per chart (amounts in different currencies do not add up): the configured one, else the table's first
    currencies = {r["currency"] for r in table.rows}
    plotted = ctx.settings.currency if ctx.settings.currency in currencies or not table.rows else table.rows[0]["currency"]
    by_month = {r["month"]: r for r in table.rows if r["currency"] == plotted}
    chart = {  # floats for chart pixels only; the table beside it carries the exact figures
        "x": [int(datetime(m.year, m.month, 1, tzinfo=UTC).timestamp()) for m in months],
        "spend": [float(by_month[m]["spend"]) if m in by_month else None for m in months],
        "per_mtok": [
            float(by_month[m]["per_mtok_usage"]) if m in by_month and by_month[m]["per_mtok_usage"] is not None else None for m in months
        ],
    }
    return table, chart


# ---------------------------------------------------------------- drill-down and lines

SPEND_COLUMNS = [
    Column("api", "API", "money", True),
    Column("gpu", "GPU", "money", True),
    Column("idle", "idle", "money", True),
    Column("adjustment", "late adjustments", "money", True),
    Column("total", "total", "money", True),
    Column("api_share", "API share", "pct"),
    Column("gpu_share", "GPU share", "pct"),
    Column("idle_share", "idle share", "pct"),
    Column("tokens", "tokens", "int", True),
    Column("currency", "currency"),
    Column("lines", "ledger lines"),
]


def drill(ctx: Ctx) -> Page:
    """Spend one level below the filters (org → team → project → model → key), split API / GPU / idle."""
    f = ctx.filters
    level = next((d for d in DIMENSIONS if getattr(f, d) is None), "key_id")
    if level == "key_id":  # spend_by_org_daily has no keys: the rollup under it does
        where, params = scope(ctx, "day", DIMENSIONS)
        query = sql.drill_keys(ctx.db, where)
    else:
        where, params = scope(ctx, "day")
        query = sql.drill_level(ctx.db, where, level)
    table = Table(
        "spend",
        f"Spend by {level.replace('_id', '')}, {f.since} to {f.until} (exclusive)",
        [Column("name", level.replace("_id", "")), *SPEND_COLUMNS],
    )
    for i, (name, currency, api, gpu, idle, adjustment, total, tokens) in enumerate(ctx.client.query(query, parameters=params).result_rows):
        total = Decimal(total)
        table.rows.append(
            {
                "name": name,
                "currency": currency,
                "api": Decimal(api),
                "gpu": Decimal(gpu),
                "idle": Decimal(idle),
                "adjustment": Decimal(adjustment),
                "total": total,
                "tokens": int(tokens),
                "lines": "lines",
                "api_share": share(Decimal(api), total),
                "gpu_share": share(Decimal(gpu), total),
                "idle_share": share(Decimal(idle), total),
            }
        )
        if level != "key_id":
            table.links[(i, "name")] = f.url("/drill", **{level: name})
        table.links[(i, "lines")] = f.url("/lines", **{level: name})
    crumbs = [("all orgs", Filters(f.since, f.until).url("/drill"))]
    for depth, dim in enumerate(DIMENSIONS):
        if getattr(f, dim) is None:
            break
        kept = {d: getattr(f, d) for d in DIMENSIONS[: depth + 1]}
        crumbs.append((f"{dim.replace('_id', '')}: {getattr(f, dim) or '(none)'}", Filters(f.since, f.until, **kept).url("/drill")))
    return Page("Drill-down", [table], crumbs=crumbs)


LINE_COLUMNS = [
    Column("line_id", "line id"),
    Column("kind", "kind"),
    Column("event_time", "time (window start)", "time"),
    Column("window_seconds", "window s", "int"),
    Column("org", "org"),
    Column("team", "team"),
    Column("project", "project"),
    Column("model", "model"),
    Column("key_id", "key"),
    Column("event_id", "event id"),
    Column("price_id", "price id"),
    Column("node", "node"),
    Column("gpu_uuid", "GPU"),
    Column("basis", "basis"),
    Column("workload", "workload"),
    Column("idle_policy", "idle policy"),
    Column("tokens", "tokens", "int", True),
    Column("cost", "cost", "money", True),
    Column("currency", "currency"),
]


def lines(ctx: Ctx, limit: int | None = None) -> Page:
    """The ledger lines behind a figure: ids, events, prices, windows; the total covers every matching line.

    Where the filters are ones ``spend_daily`` keeps (not basis, node or GPU), the totals come from it and the ledger is
    read only over the newest days that hold ``limit`` matching lines, so a page never scans a whole month of ledger.
    """
    limit = limit or ctx.row_limit
    where, params = scope(ctx, "event_time", DIMENSIONS + LINE_FILTERS)
    rolled = all(getattr(ctx.filters, d) is None for d in LINE_FILTERS if d != "kind")
    newest: datetime | None = None
    if rolled:
        day_where, day_params = scope(ctx, "day", (*DIMENSIONS, "kind"))
        per_day = ctx.client.query(
            sql.lines_per_day(ctx.db, day_where),
            parameters=day_params,
        ).result_rows
        by_currency: dict[str, list[Any]] = {}
        for _, currency, n, cost in per_day:
            total = by_currency.setdefault(currency, [currency, 0, Decimal(0)])
            total[1], total[2] = total[1] + int(n), total[2] + Decimal(cost)
        totals: list[Any] = [tuple(by_currency[c]) for c in sorted(by_currency)]
        newest = _newest(ctx, limit, [(day, int(n)) for day, _, n, _ in per_day])
    else:
        totals = list(
            ctx.client.query(
                sql.lines_totals(ctx.db, where),
                parameters=params,
            ).result_rows
        )
    totals = totals or [(ctx.settings.currency, 0, 0)]
    count = sum(int(n) for _, n, _ in totals)
    keys = ", ".join("prompt_tokens + completion_tokens" if c.key == "tokens" else c.key for c in LINE_COLUMNS)

    def listing(condition: str) -> list[Any]:
        return list(
            ctx.client.query(
                sql.lines_listing(ctx.db, keys, condition, limit),
                parameters={**params, "newest": newest},
            ).result_rows
        )

    rows = listing(f"{where} AND event_time >= {{newest:DateTime64(6, 'UTC')}}" if newest else where)
    if newest is not None and len(rows) < limit:  # the rollup was behind the ledger: read the whole range after all
        rows = listing(where)
    summary = Table(
        "summary",
        "Matching ledger lines",
        [Column("lines", "lines", "int"), Column("cost", "total cost", "money"), Column("currency", "currency")],
        [{"lines": int(n), "cost": Decimal(total), "currency": currency} for currency, n, total in totals],
    )
    table = Table(
        "lines", f"Ledger lines, newest first ({min(count, limit):,} of {count:,} shown; CSV up to {LINES_CSV:,})", list(LINE_COLUMNS)
    )
    table.rows = [{c.key: (Decimal(v) if c.key == "cost" else v) for c, v in zip(LINE_COLUMNS, row, strict=True)} for row in rows]
    return Page("Ledger lines", [summary, table])


def _newest(ctx: Ctx, limit: int, per_day: list[tuple[date, int]]) -> datetime | None:
    """The start of the newest hours that hold ``limit`` matching lines (from ``spend_daily``'s, newest first, then
    ``spend_hourly``), or None when the whole range holds fewer: the lines page reads the ledger from there on."""
    seen = 0
    for day, n in per_day:  # noqa: B007 - day is read after the loop
        seen += n
        if seen >= limit:
            break
    else:
        return None
    # a day earlier: spend_daily's days are in the reporting time zone, spend_hourly's hours in UTC
    where, params = scope(ctx, "hour", (*DIMENSIONS, "kind"), since=day - timedelta(days=1))
    seen = 0
    for hour, n in ctx.client.query(
        sql.newest_hours(ctx.db, where),
        parameters=params,
    ).result_rows:
        seen += int(n)
        if seen >= limit:
            return hour.replace(tzinfo=UTC) if hour.tzinfo is None else hour
    return datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(days=1)


# ---------------------------------------------------------------- budgets

_budget_lock = threading.Lock()


def budget_standings(ctx: Ctx) -> tuple[list[Budget], dict[str, BudgetStatus]]:
    """Every live budget (by id) and its latest published standing, read from their compacted topics.

    Read-only (no topic is created: a missing topic reads as empty) and at most once per ``ui.refresh_seconds``
    for the whole app, however many tabs refresh: the result is kept in ``ctx.state``.
    """
    with _budget_lock:
        cached = ctx.state.get("budgets")
        if cached is None or time.monotonic() - cached[0] >= ctx.settings.ui.refresh_seconds:
            began = time.monotonic()
            cached = ctx.state["budgets"] = (began, asyncio.run(current(ctx.settings, read_only=True)))
        return cached[1]


def budgets(ctx: Ctx) -> Page:
    """Each budget's standing this period (as the worker last published it) and the alert history with delivery."""
    if ctx.filters.org is not None:
        ctx.viewer.check(ctx.filters.org)
    all_budgets, statuses = budget_standings(ctx)
    forecasts = _forecast_breaches(ctx)
    standings = Table(
        "standings",
        "Budgets this period (standing as last published by the worker)",
        [
            Column("budget_id", "budget"),
            Column("progress", "progress", "heat"),
            Column("used_pct", "used", "pct"),
            Column("spend", "spent", "money"),
            Column("amount", "amount", "money"),
            Column("state", "state"),
            Column("forecast_breach", "forecast breach (UTC)", "time"),
            Column("scope", "scope"),
            Column("period", "period"),
            Column("mode", "mode"),
            Column("currency", "currency"),
            Column("evaluated_at", "as of (UTC)", "time"),
        ],
    )
    for b in all_budgets:
        if not ctx.viewer.may_see(b.org) or (ctx.filters.org is not None and b.org != ctx.filters.org):
            continue
        s = statuses.get(b.budget_id)
        fresh = s is not None and s.amount == b.amount
        used = s.spend * 100 / b.amount if fresh and s else None
        standings.rows.append(
            {
                "budget_id": b.budget_id,
                "scope": b.scope,
                "period": f"{b.period} ({b.timezone})",
                "mode": b.mode,
                "amount": b.amount,
                "spend": s.spend if fresh and s else None,
                "used_pct": used,
                "progress": used,
                "currency": b.currency,
                "state": ("exhausted" if s.exhausted else "ok") if fresh and s else "not evaluated yet",
                "forecast_breach": forecasts.get(b.budget_id),
                "evaluated_at": s.evaluated_at if fresh and s else None,
            }
        )
    return Page("Budgets and alerts", [standings, _alert_history(ctx)])


def _forecast_breaches(ctx: Ctx) -> dict[str, datetime]:
    today = datetime.now(UTC).date()
    where, params = scope(ctx, "raised_at", ("org",), since=today - timedelta(days=31), until=today + timedelta(days=1))
    return dict(
        cast(
            list[tuple[str, datetime]],
            ctx.client.query(  # clickhouse_connect annotates rows as Sequence[Sequence]
                sql.forecast_breaches(ctx.db, where),
                parameters=params,
            ).result_rows,
        )
    )


def _alert_history(ctx: Ctx) -> Table:
    where, params = scope(ctx, "raised_at", ("org",))
    columns = [
        Column("raised_at", "raised (UTC)", "time"),
        Column("budget_id", "budget"),
        Column("scope", "scope"),
        Column("kind", "kind"),
        Column("threshold_pct", "threshold %", "int"),
        Column("spend", "spend", "money"),
        Column("budget_amount", "budget", "money"),
        Column("projected_breach", "projected breach", "time"),
        Column("delivery_status", "delivery"),
        Column("route", "route"),
        Column("attempts", "attempts", "int"),
        Column("last_http_status", "last HTTP status"),
        Column("settled_at", "settled (UTC)", "time"),
        Column("currency", "currency"),
        Column("alert_id", "alert id"),
    ]
    rows = ctx.client.query(
        sql.alert_history(ctx.db, where, [c.key for c in columns]),
        parameters=params,
    ).result_rows
    return Table(
        "alerts",
        "Alert history (newest first) with delivery status",
        columns,
        [{c.key: (Decimal(v) if c.kind == "money" and v is not None else v) for c, v in zip(columns, row, strict=True)} for row in rows],
    )


# ---------------------------------------------------------------- GPUs

HEAT_HOURS = 24


def gpus(ctx: Ctx) -> Page:
    """Utilization by node / GPU / hour, idle cost by node and owner, and what each GPU was booked to and why.

    Reads the GPU rollups of migration 0015 (``gpu_daily``, ``gpu_utilization_hourly``), never the ledger; the heatmap
    follows the org, node and GPU filters (a GPU's utilization is the whole GPU's, not a team's or project's).
    """
    f = ctx.filters
    where, params = scope(ctx, "day", ("org", "team", "project", "node", "gpu_uuid"))
    # the heatmap shows the range's last HEAT_HOURS: the GPUs (filtered by node / GPU) that the viewer's orgs (or the org filter) used
    last = min(
        datetime(f.until.year, f.until.month, f.until.day, tzinfo=UTC),
        datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1),
    )
    heat_params: dict[str, Any] = {
        "heat_from": max(last - timedelta(hours=HEAT_HOURS), datetime(f.since.year, f.since.month, f.since.day, tzinfo=UTC)),
        "heat_to": last,
    }
    heat_where = ["hour >= {heat_from:DateTime}", "hour < {heat_to:DateTime}"]
    if ctx.viewer.orgs is not None:
        heat_where.append("hasAny(orgs, {scope_orgs:Array(String)})")
        heat_params["scope_orgs"] = sorted(ctx.viewer.orgs)
    for dim, condition in (
        ("org", "has(orgs, {f_org:String})"),
        ("node", "node = {f_node:String}"),
        ("gpu_uuid", "gpu_uuid = {f_gpu_uuid:String}"),
    ):
        if getattr(f, dim) is not None:
            heat_where.append(condition)
            heat_params[f"f_{dim}"] = getattr(f, dim)
    cells = ctx.client.query(
        sql.heatmap(ctx.db, heat_where),
        parameters=heat_params,
    ).result_rows
    hours = sorted({c[2] for c in cells})
    heat = Table(
        "heatmap",
        f"Utilization % by GPU and hour (UTC), the range's last {HEAT_HOURS} hours (hours with data shown)",
        [Column("node", "node"), Column("gpu_uuid", "GPU"), *(Column(f"h{i}", f"{h:%m-%d %H}h", "heat") for i, h in enumerate(hours))],
    )
    column = {h: f"h{i}" for i, h in enumerate(hours)}
    by_gpu: dict[tuple[str, str], dict[str, Any]] = {}
    for node, gpu, hour, util in cells:
        by_gpu.setdefault((node, gpu), {"node": node, "gpu_uuid": gpu})[column[hour]] = Decimal(str(round(util, 1)))
    heat.rows = list(by_gpu.values())
    idle = _grouped(ctx, "idle", "Idle cost by node and owner", ("node", "org", "team"), "kind = 'idle'", where, params)
    for i, row in enumerate(idle.rows):
        idle.links[(i, "cost")] = f.url("/lines", kind="idle", node=row["node"], org=row["org"], team=row["team"])
    booked = _grouped(
        ctx,
        "attribution",
        "What each GPU's cost was booked to, and on which basis (largest first)",
        ("node", "gpu_uuid", "gpu_model", "kind", "basis", "idle_policy", "workload", "org", "team", "project"),
        "gpu_uuid != ''",
        where,
        params,
    )
    for i, row in enumerate(booked.rows):
        booked.links[(i, "cost")] = f.url(
            "/lines",
            gpu_uuid=row["gpu_uuid"],
            kind=row["kind"],
            basis=row["basis"],
            org=row["org"],
            team=row["team"],
            project=row["project"],
        )
    return Page("GPUs", [heat, idle, booked])


def _grouped(ctx: Ctx, name: str, title: str, keys: tuple[str, ...], condition: str, where: str, params: dict[str, Any]) -> Table:
    """The largest ``ctx.row_limit`` groups of ``gpu_daily`` (by cost), with totals over every group."""
    rows = ctx.client.query(
        sql.grouped_rows(ctx.db, where, condition, keys, ctx.row_limit),
        parameters=params,
    ).result_rows
    totals = ctx.client.query(sql.grouped_totals(ctx.db, where, condition), parameters=params).result_rows
    columns = [
        *(Column(k, k.replace("_", " ")) for k in keys),
        Column("lines", "lines", "int", True),
        Column("gpu_seconds", "GPU seconds", "int", True),
        Column("cost", "cost", "money", True),
        Column("currency", "currency"),
    ]
    return Table(
        name,
        f"{title} (up to {ctx.row_limit:,} rows; CSV up to {LINES_CSV:,}; totals cover all)",
        columns,
        [
            dict(zip([*keys, "currency", "lines", "gpu_seconds", "cost"], (*r[:-2], Decimal(r[-2]), Decimal(r[-1])), strict=True))
            for r in rows
        ],
        exact_totals=[{"currency": c, "lines": int(n), "gpu_seconds": Decimal(g), "cost": Decimal(t)} for c, n, g, t in totals],
    )


# ---------------------------------------------------------------- models


def models(ctx: Ctx) -> Page:
    """Self-hosted vs the API equivalent per model, with break-even volume (``gpuledger compare``'s figures)."""
    f = ctx.filters
    if f.org is not None:
        ctx.viewer.check(f.org)
    company = ctx.viewer.admin and f.org is None
    rows = uc.comparisons(ctx.settings, f.since, f.until, "model" if company else "org", ctx.client, rollup=True)
    if not company:
        rows = [r for r in rows if ctx.viewer.may_see(r.group) and (f.org is None or r.group == f.org)]
    table = Table(
        "compare",
        f"Self-hosted vs API per model, {f.since} to {f.until} (exclusive)",
        [
            Column("group", "org"),
            Column("llm_model", "model"),
            Column("hosting", "hosting"),
            Column("tokens", "tokens", "int", True),
            Column("usage_cost", "usage cost", "money", True),
            Column("allocation_cost", "allocation cost (with idle)", "money", True),
            Column("api_equivalent_cost", "API equivalent", "money", True),
            Column("ratio", "allocation / API", "ratio"),
            Column("break_even_tokens_per_hour", "break-even tokens/h", "int"),
            Column("headroom", "headroom", "ratio"),
            Column("per_mtok_allocation", "per 1M tokens (with idle)", "money"),
            Column("serving_hours", "serving hours", "int"),
            Column("requests_without_equivalent", "requests without equivalent", "int"),
            Column("currency", "currency"),
        ],
    )
    for r in rows:
        unit = uc.UnitCost(r.group, r.llm_model, r.hosting, r.tokens, r.usage_cost, r.allocation_cost)
        table.rows.append(
            {
                **r.__dict__,
                "group": r.group or "all",
                "ratio": r.ratio,
                "break_even_tokens_per_hour": r.break_even_tokens_per_hour,
                "headroom": r.headroom,
                "per_mtok_allocation": unit.per_mtok_allocation,
            }
        )
    page = Page("Models", [table])
    for anchor, heading, view in MODEL_SLOTS:
        _slot(ctx, page, anchor, heading, view)
    return page


# Routing savings and cost per outcome (issue 14): each slot shows its view's rows, scoped to the viewer's orgs and
# the date range (migrations 0013 and 0011; both views have `org` and `day`).
MODEL_SLOTS = (
    ("routing_savings", "Routing savings", "routing_savings_daily"),
    ("cost_per_outcome", "Cost per outcome", "cost_per_outcome_daily"),
)
SLOT_KINDS = {"Decimal": "money", "Int": "int", "UInt": "int", "Date": "date", "DateTime": "time"}


def _slot(ctx: Ctx, page: Page, anchor: str, heading: str, view: str) -> None:
    columns = ctx.client.query(
        sql.view_columns(),
        parameters={"db": ctx.db, "view": view},
    ).result_rows
    names = [n for n, _ in columns]
    if "org" not in names and not ctx.viewer.admin:
        page.notes.append((anchor, heading, f"{view} has no org column, so it is shown to admins only."))
        return
    if "day" in names:  # the range, the viewer's orgs and the org filter
        where, params = scope(ctx, "day", ("org",) if "org" in names else ())
    elif ctx.viewer.orgs is not None:
        where, params = "org IN {scope_orgs:Array(String)}", {"scope_orgs": sorted(ctx.viewer.orgs)}
    else:
        where, params = "1", {}
    kinds = [next((k for prefix, k in SLOT_KINDS.items() if t.removeprefix("Nullable(").startswith(prefix)), "text") for _, t in columns]
    rows = ctx.client.query(sql.view_rows(ctx.db, view, names, where, LINES_SHOWN), parameters=params).result_rows
    page.tables.append(
        Table(
            anchor,
            f"{heading} ({view}), {ctx.filters.since} to {ctx.filters.until} (exclusive)",
            [Column(n, n.replace("_", " "), k) for n, k in zip(names, kinds, strict=True)],  # type: ignore[arg-type]
            [dict(zip(names, r, strict=True)) for r in rows],
        )
    )


PAGES = {"overview": overview, "drill": drill, "lines": lines, "budgets": budgets, "gpus": gpus, "models": models}
