"""Tables as the pages show them: typed columns, exact values, finance formatting, CSV.

Values stay exact (``Decimal`` money, ints) until a cell is formatted, so a CSV carries the
ledger's figures to the nano-unit and a page shows them to the cent. A total is the exact
sum rounded once (half-even), so the total on a page equals the ledger's total to the cent
even where the rounded rows do not add up to it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

Kind = Literal["text", "money", "int", "pct", "ratio", "time", "date", "heat"]
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: Kind = "text"
    total: bool = False  # summed into the table's total row


@dataclass
class Table:
    """Rows of one table on a page; ``links`` maps a row index and column key to a same-origin URL."""

    name: str
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    links: dict[tuple[int, str], str] = field(default_factory=dict)
    shown: int = 500  # rows rendered on the page; the total and the CSV cover every row
    exact_totals: list[dict[str, Any]] | None = None  # totals computed where the rows are (when ``rows`` holds only the largest)

    def totals(self) -> list[dict[str, Any]]:
        """One total row per currency (a ledger may hold several); empty when no column is summed."""
        if self.exact_totals is not None:
            return self.exact_totals
        summed = [c.key for c in self.columns if c.total]
        if not summed or not self.rows:
            return []
        by_currency: dict[str, dict[str, Any]] = {}
        for row in self.rows:
            currency = str(row.get("currency", ""))
            total = by_currency.setdefault(currency, {"currency": currency, **{k: 0 for k in summed}})
            for key in summed:
                if row.get(key) is not None:
                    total[key] += row[key]
        return list(by_currency.values())

    def cell(self, row: dict[str, Any], column: Column) -> str:
        """``column``'s value in ``row`` (a body or total row) as the page shows it."""
        return format_value(row.get(column.key), column.kind)

    def csv(self) -> str:
        """Every column, exact values (no rounding, no thousands separators)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([c.key for c in self.columns])
        for row in self.rows:
            writer.writerow([exact(row.get(c.key)) for c in self.columns])
        return out.getvalue()


def money(value: Decimal | int | None) -> str:
    """Two decimals, half-even (the ledger's own rounding), thousands separated."""
    if value is None:
        return ""
    return f"{Decimal(value).quantize(CENT, ROUND_HALF_EVEN):,}"


def format_value(value: Any, kind: Kind) -> str:
    if value is None:
        return ""
    if value == "" and kind == "text":
        return "(none)"
    if kind == "money":
        return money(value)
    if kind == "int":
        return f"{int(value):,}"
    if kind == "pct":
        return f"{Decimal(value).quantize(Decimal('0.1'), ROUND_HALF_EVEN)} %"
    if kind == "ratio":
        return f"{Decimal(value).quantize(Decimal('0.0001'), ROUND_HALF_EVEN):,}"
    if kind == "time":
        return f"{value:%Y-%m-%d %H:%M:%S}" if isinstance(value, datetime) else str(value)
    if kind == "date":
        return value.isoformat() if isinstance(value, date) else str(value)
    return str(value)


def exact(value: Any) -> str:
    """A value as CSV and JSON carry it: Decimals in full, times in ISO 8601."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value.to_integral_value() else format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def share(part: Decimal, whole: Decimal) -> Decimal | None:
    """``part`` as a percentage of ``whole``; None rather than a division by zero."""
    return part * 100 / whole if whole else None
