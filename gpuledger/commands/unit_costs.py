"""``gpuledger unit-costs`` and ``gpuledger compare``: what a million tokens costs, and self-hosting vs the API.

Both read the analyst views of migration 0007 (``unit_costs_daily``, ``self_hosted_vs_api_daily``) and
re-derive every ratio from the summed figures of the range asked for (a ratio of sums, never an
average of daily ratios). Money stays Decimal end to end.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

from clickhouse_connect.driver.client import Client
from rich.table import Table

from gpuledger.clickhouse import connect
from gpuledger.settings import Settings
from streams.store.unit_costs import comparisons_sql, serving_hours_sql, unit_costs_sql

By = Literal["org", "team", "project", "model"]
Format = Literal["table", "csv", "json"]
DIMENSIONS: dict[str, tuple[str, ...]] = {"org": ("org",), "team": ("org", "team"), "project": ("org", "team", "project"), "model": ()}


@dataclass(frozen=True)
class UnitCost:
    group: str
    llm_model: str
    hosting: str
    tokens: int
    usage_cost: Decimal
    allocation_cost: Decimal
    currency: str = field(default="", kw_only=True)  # amounts in different currencies are never added together

    @property
    def per_mtok_usage(self) -> Decimal | None:
        return per_mtok(self.usage_cost, self.tokens)

    @property
    def per_mtok_allocation(self) -> Decimal | None:
        return per_mtok(self.allocation_cost, self.tokens)


@dataclass(frozen=True)
class Comparison(UnitCost):
    api_equivalent_cost: Decimal | None
    requests_without_equivalent: int
    serving_hours: int

    @property
    def ratio(self) -> Decimal | None:
        """Allocation cost / API-equivalent cost: below 1, self-hosting is cheaper."""
        return _quotient(self.allocation_cost, self.api_equivalent_cost)

    @property
    def break_even_tokens_per_hour(self) -> Decimal | None:
        """The hourly volume at which the GPUs' hourly cost equals the API bill for the same tokens."""
        if not self.api_equivalent_cost or not self.serving_hours or not self.tokens:
            return None
        hourly_cost = self.allocation_cost / self.serving_hours
        api_price_per_token = self.api_equivalent_cost / self.tokens
        return (hourly_cost / api_price_per_token).quantize(Decimal(1), ROUND_HALF_EVEN)

    @property
    def headroom(self) -> Decimal | None:
        """Observed volume / break-even volume (= API-equivalent cost / allocation cost)."""
        return _quotient(self.api_equivalent_cost, self.allocation_cost)


def per_mtok(cost: Decimal, tokens: int) -> Decimal | None:
    """Cost per million tokens, 9 places half-even; None without tokens (never a division by zero)."""
    return div_half_even(cost, tokens, 1_000_000) if tokens else None


def div_half_even(amount: Decimal, over: int, times: int = 1) -> Decimal:
    """``amount × times / over`` to 9 places, half-even, rounded once from the exact quotient.

    Integer arithmetic, so no 28-digit context rounds first; the SQL views get the same figure with
    ``roundBankers`` over 30 places (exact below 5e20 tokens). ``amount`` has at most 9 places (a ledger Decimal).
    """
    nanos = amount.scaleb(9)
    if nanos != nanos.to_integral_value():
        raise ValueError(f"{amount} has more than 9 decimal places")
    numerator = int(nanos) * times
    quotient, remainder = divmod(abs(numerator), over)
    if 2 * remainder > over or (2 * remainder == over and quotient % 2):
        quotient += 1
    return Decimal(f"{quotient if numerator >= 0 else -quotient}E-9")


def _quotient(top: Decimal | None, bottom: Decimal | None) -> Decimal | None:
    return (top / bottom).quantize(Decimal("0.0001"), ROUND_HALF_EVEN) if top is not None and bottom else None


def grouping(by: By) -> tuple[str, str]:
    """The SQL for a group's label (``org/team``) and the GROUP BY keys."""
    dims = DIMENSIONS[by]
    label = "concat(" + ", '/', ".join(dims) + ")" if len(dims) > 1 else (dims[0] if dims else "''")
    return label, ", ".join((*dims, "llm_model", "currency"))


def unit_costs(settings: Settings, since: date, until: date, by: By) -> list[UnitCost]:
    """Unit costs per ``by`` group and LLM over [since, until)."""
    label, keys = grouping(by)
    rows = (
        connect(settings.clickhouse)
        .query(unit_costs_sql(settings.clickhouse.database, label, keys), parameters={"since": since, "until": until})
        .result_rows
    )
    return [UnitCost(g, m, h, int(t), Decimal(u), Decimal(a), currency=c) for g, m, h, t, u, a, c in rows]


def comparisons(
    settings: Settings, since: date, until: date, by: By, client: Client | None = None, rollup: bool = False
) -> list[Comparison]:
    """Self-hosted vs API per ``by`` group and LLM over [since, until), with break-even volume and headroom (on ``client``, or a new
    connection; from the rollups, refreshed every few seconds, with ``rollup``)."""
    label, keys = grouping(by)
    db = settings.clickhouse.database
    params = {"since": since, "until": until}
    client = client if client is not None else connect(settings.clickhouse)
    hours = {(g, m, c): int(h) for g, m, c, h in client.query(serving_hours_sql(db, label, keys, rollup), parameters=params).result_rows}
    rows = client.query(comparisons_sql(db, label, keys, rollup), parameters=params).result_rows
    return [
        Comparison(g, m, h, int(t), Decimal(u), Decimal(a), None if e is None else Decimal(e), int(n), hours.get((g, m, c), 0), currency=c)
        for g, m, h, t, u, a, e, n, c in rows
    ]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _records(rows: list[Any], derived: tuple[str, ...]) -> list[dict[str, str]]:
    return [{**{k: _text(v) for k, v in asdict(r).items()}, **{d: _text(getattr(r, d)) for d in derived}} for r in rows]


def render(rows: list[Any], derived: tuple[str, ...], fmt: Format, title: str) -> str | Table:
    """The rows as CSV, JSON (exact decimal strings) or a rich table (money to 4 places)."""
    records = _records(rows, derived)
    if records and not any(r["group"] for r in records):  # --by model: no group to show
        records = [{k: v for k, v in r.items() if k != "group"} for r in records]
    if fmt == "json":
        return json.dumps(records, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(records[0]) if records else ["group"])
        writer.writeheader()
        writer.writerows(records)
        return out.getvalue()
    currencies = sorted({r.get("currency", "") for r in records} - {""})
    caption = (
        f"{len(currencies)} currencies ({', '.join(currencies)}): rows are grouped by currency, never added across"
        if len(currencies) > 1
        else None
    )
    table = Table(title=title, caption=caption)
    columns = list(records[0]) if records else ["group"]
    for column in columns:
        table.add_column(column.replace("_", " "), justify="left" if column in ("group", "llm_model", "hosting", "currency") else "right")
    for record in records:
        table.add_row(*(_short(record[c]) for c in columns))
    return table


def _short(text: str) -> str:
    try:
        value = Decimal(text)
    except ArithmeticError:
        return text
    if value == value.to_integral_value():
        return f"{value:,.0f}"
    return f"{value.quantize(Decimal('0.0001')):,}"
