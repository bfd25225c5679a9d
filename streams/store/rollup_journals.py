"""What each incremental rollup holds: the SQL that recomputes a journal's dirty hours (or days) from its source.

``streams.store.rollups`` runs the pass (dirty hours, deltas, watermark); the definitions live here, one per rollup:
``spend_hourly``, ``gpu_hourly``, ``unit_costs_hourly`` (from the pass's ``rollup_lines``, the dirty hours' lines of
``ledger FINAL``), ``usage_hourly`` (from ``usage_events FINAL``), the GPU-hours of ``gpu_utilization_hours`` and the
days of ``self_hosted_vs_api_days``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

DIMENSIONS = ("org", "team", "project", "cost_centre", "key_id", "llm_model", "gpu_model", "kind", "currency")
MEASURES = ("cost", "prompt_tokens", "completion_tokens", "gpu_seconds", "lines")
HOURLY_KEYS = ("hour", "day", *DIMENSIONS, "model")
DAILY_KEYS = ("day", *DIMENSIONS)
# spend_hourly's columns as computed from ledger lines (tokens and lines signed, so deltas can be negative).
LEDGER_PROJECTION = {
    "hour": "toStartOfHour(event_time)",
    "day": "toDate(event_time, {tz:String})",
    "org": "org",
    "team": "team",
    "project": "project",
    "cost_centre": "cost_centre",
    "key_id": "key_id",
    "llm_model": "if(kind = 'api' OR basis = 'tokens', model, '')",
    "gpu_model": "gpu_model",
    "kind": "kind",
    "currency": "currency",
    "model": "model",
    "cost": "cost",
    "prompt_tokens": "toInt64(prompt_tokens)",
    "completion_tokens": "toInt64(completion_tokens)",
    "gpu_seconds": "gpu_seconds",
    "lines": "toInt64(1)",
}
# The rows of the dirty hours only: the primary-key range first (the ledger's key starts with the day, the usage
# events' with the hour), then the hours themselves. Binds lo, hi and hours.
IN_DIRTY_HOURS = (
    "event_time >= {lo:DateTime64(6, 'UTC')} AND event_time < {hi:DateTime64(6, 'UTC')}"
    " AND toStartOfHour(event_time) IN {hours:Array(DateTime('UTC'))}"
)
ZERO = "toDecimal128(0, 9)"
# The ledger columns the journals read: ledger FINAL is read once per chunk of dirty hours into rollup_lines.
LINE_COLUMNS = (
    "event_time, org, team, project, cost_centre, key_id, model, kind, basis, currency, cost, prompt_tokens, completion_tokens,"
    " gpu_seconds, gpu_model, node, gpu_uuid, idle_policy, workload, share_tokens, window_tokens, utilization_pct"
)


@dataclass(frozen=True, slots=True)
class Journal:
    """An hourly delta journal: ``fresh(db)`` recomputes its groups of the dirty hours from ``source``, each row once
    (the pass's ``rollup_lines``, read from ``ledger FINAL``, or ``usage_events FINAL`` itself)."""

    table: str
    source: str
    keys: tuple[str, ...]
    measures: tuple[str, ...]
    fresh: Callable[[str], str]


def _spend_fresh(db: str) -> str:
    projection = ", ".join(f"{expr} AS {name}" for name, expr in LEDGER_PROJECTION.items())
    return f"SELECT {projection} FROM {db}.rollup_lines"


def _gpu_fresh(db: str) -> str:
    """Every ledger line but API calls, by GPU and what it was booked to and on which basis (the GPUs page, the report)."""
    return (
        "SELECT toStartOfHour(event_time) AS hour, toDate(event_time, {tz:String}) AS day, node, gpu_uuid, gpu_model, kind, basis,"
        " idle_policy, workload, org, team, project, currency, toInt64(1) AS lines, gpu_seconds, cost"
        f" FROM {db}.rollup_lines WHERE kind != 'api'"
    )


def _unit_costs_fresh(db: str) -> str:
    """unit_costs_daily's parts per hour: API lines and token shares (direct), and the idle of the windows the shares ran
    on spread by share_tokens / window_tokens (attributed, the same expression per line as the view, so sums agree);
    ``served``: 1 if the hour has an attributed share (the view counts such hours), ``token_lines``: the token shares."""
    direct = (
        "SELECT toStartOfHour(event_time) AS hour, org, team, project, model, currency,"
        " toInt64(prompt_tokens + completion_tokens) AS tokens, if(kind = 'api', cost, {z}) AS api_cost,"
        " if(kind = 'gpu', cost, {z}) AS gpu_usage_cost, {z} AS idle_cost, toInt64(0) AS served, toInt64(1) AS lines,"
        " toInt64(kind = 'gpu') AS token_lines"
        f" FROM {db}.rollup_lines WHERE kind = 'api' OR (kind = 'gpu' AND basis = 'tokens')"
    ).replace("{z}", ZERO)
    shares = (
        "SELECT gpu_uuid, event_time, org, team, project, model, currency, share_tokens, window_tokens"
        f" FROM {db}.rollup_lines WHERE kind = 'gpu' AND basis = 'tokens' AND window_tokens > 0"
    )
    window_idle = (
        f"SELECT gpu_uuid, event_time, sum(cost) AS idle_cost FROM {db}.rollup_lines"
        " WHERE kind = 'idle' AND basis != 'mig-free' GROUP BY gpu_uuid, event_time"
    )
    attributed = (
        f"SELECT toStartOfHour(s.event_time) AS hour, s.org AS org, s.team AS team, s.project AS project, s.model AS model,"
        f" s.currency AS currency, toInt64(0) AS tokens, {ZERO} AS api_cost, {ZERO} AS gpu_usage_cost,"
        f" i.idle_cost * s.share_tokens / s.window_tokens AS idle_cost, toInt64(1) AS served, toInt64(0) AS lines, toInt64(0) AS token_lines"
        f" FROM ({shares}) AS s INNER JOIN ({window_idle}) AS i ON i.gpu_uuid = s.gpu_uuid AND i.event_time = s.event_time"
    )
    return (
        "SELECT hour, org, team, project, model, currency, sum(tokens) AS tokens, sum(api_cost) AS api_cost,"
        " sum(gpu_usage_cost) AS gpu_usage_cost, sum(idle_cost) AS idle_cost, max(served) AS served, sum(lines) AS lines,"
        f" sum(token_lines) AS token_lines FROM ({direct} UNION ALL {attributed}) GROUP BY hour, org, team, project, model, currency"
    )


def _usage_fresh(db: str) -> str:
    """Usage events, each once (FINAL by event id): tokens for the report, requests and API equivalents for the comparisons."""
    return (
        "SELECT toStartOfHour(event_time) AS hour, org, team, project, model, priced_as,"
        " toInt64(prompt_tokens + completion_tokens) AS tokens, toInt64(1) AS requests,"
        f" ifNull(api_equivalent_cost, {ZERO}) AS equivalent_cost, toInt64(isNull(api_equivalent_cost)) AS requests_without_equivalent"
        f" FROM {db}.usage_events FINAL WHERE {IN_DIRTY_HOURS}"
    )


SPEND = Journal("spend_hourly", "ledger", HOURLY_KEYS, MEASURES, _spend_fresh)
GPU = Journal(
    "gpu_hourly",
    "ledger",
    ("hour", "day", "node", "gpu_uuid", "gpu_model", "kind", "basis", "idle_policy", "workload", "org", "team", "project", "currency"),
    ("lines", "gpu_seconds", "cost"),
    _gpu_fresh,
)
JOURNALS = (
    GPU,
    Journal(
        "unit_costs_hourly",
        "ledger",
        ("hour", "org", "team", "project", "model", "currency"),
        ("tokens", "api_cost", "gpu_usage_cost", "idle_cost", "served", "lines", "token_lines"),
        _unit_costs_fresh,
    ),
    Journal(
        "usage_hourly",
        "usage_events",
        ("hour", "org", "team", "project", "model", "priced_as"),
        ("tokens", "requests", "equivalent_cost", "requests_without_equivalent"),
        _usage_fresh,
    ),
    SPEND,  # last: spend_daily follows it, and a reader that waits for spend_daily then sees the whole pass
)


SELF_HOSTED_KEYS = ("day", "org", "team", "project", "llm_model", "currency", "hosting")
SELF_HOSTED_MEASURES = (
    "tokens",
    "usage_cost",
    "allocation_cost",
    "serving_hours",
    "equivalent_cost",
    "requests",
    "requests_without_equivalent",
    "rows",
)


def self_hosted_fresh(database: str) -> str:
    """``self_hosted_vs_api_days``'s rows for the UTC days in ``{days:Array(Date)}`` from the hourly journals, with
    ``self_hosted_vs_api_daily``'s logic (migration 0007): the day's unit costs, left-joined with its usage events'
    API equivalents by group and LLM (``rows``: 1 per row, so a row whose deltas cancel out is known gone)."""
    in_days = "hour >= {lo:DateTime('UTC')} AND hour < {hi:DateTime('UTC')} AND toDate(hour) IN {days:Array(Date)}"
    units = (
        "SELECT toDate(hour) AS day, org, team, project, model AS llm_model, currency, sum(tokens) AS t, sum(api_cost) AS api,"
        " sum(gpu_usage_cost) AS gpu, sum(idle_cost) AS idle, sum(served) AS sh"
        f" FROM {database}.unit_costs_hourly WHERE {in_days} GROUP BY day, org, team, project, llm_model, currency HAVING sum(lines) != 0"
    )
    equivalents = (
        "SELECT toDate(hour) AS day, org, team, project, model, sum(equivalent_cost) AS ec, sum(requests) AS r,"
        f" sum(requests_without_equivalent) AS w FROM {database}.usage_hourly WHERE {in_days} AND priced_as IN ('api', 'gpu')"
        " GROUP BY day, org, team, project, model HAVING r != 0"
    )
    return (
        "SELECT u.day AS day, u.org AS org, u.team AS team, u.project AS project, u.llm_model AS llm_model, u.currency AS currency,"
        " if(u.gpu > 0, 'self-hosted', 'api') AS hosting, u.t AS tokens, u.api + u.gpu AS usage_cost,"
        f" u.api + u.gpu + u.idle AS allocation_cost, u.sh AS serving_hours, ifNull(e.ec, {ZERO}) AS equivalent_cost,"
        " ifNull(e.r, 0) AS requests, ifNull(e.w, 0) AS requests_without_equivalent, toInt64(1) AS rows"
        f" FROM ({units}) AS u LEFT JOIN ({equivalents}) AS e"
        " ON e.day = u.day AND e.org = u.org AND e.team = u.team AND e.project = u.project AND e.model = u.llm_model"
    )


def utilization_windows(database: str) -> str:
    """Each GPU window of the dirty hours (``rollup_lines``): its utilization (the highest any line of the window carries:
    every line of a window carries the GPU's figure) and the orgs with lines on it."""
    return (
        "SELECT node, gpu_uuid, event_time AS window, max(utilization_pct) AS u, groupUniqArray(toString(org)) AS window_orgs"
        f" FROM {database}.rollup_lines WHERE kind IN ('gpu', 'idle') AND gpu_uuid != ''"
        " GROUP BY node, gpu_uuid, window"
    )
