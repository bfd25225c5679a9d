"""The ranges the ledger can hold, shared by every boundary that validates input.

Money is stored as ClickHouse ``Decimal(38, 9)``: at most 29 integer digits. The limits
below keep every cost line, and sums of billions of them, far inside that:

- a token count (prompt, cached prompt, completion) is 0 .. ``MAX_TOKENS`` = 10^12;
- a price (per million tokens, or per GPU hour) is 0 .. ``MAX_PRICE`` = 10^9 with at
  most 9 decimal places;
- so one request costs at most 2 × 10^12 tokens × 10^9 / 10^6 = 2 × 10^15, and a GPU
  window (≤ 3,600 s) at most 10^9; 10^13 such lines still sum below 10^29.

Arithmetic on money runs in ``MONEY_CONTEXT`` (80 significant digits): Python's default
context (28 digits) would round, or raise, on products near the column's range.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Context, Decimal, InvalidOperation

MAX_TOKENS = 10**12
MAX_PRICE = Decimal(10**9)
PRICE_SCALE = 9
NANO = Decimal(1).scaleb(-PRICE_SCALE)  # the ledger's smallest amount, 0.000000001
LEDGER_INTEGER_DIGITS = 29  # Decimal(38, 9)
MONEY_CONTEXT = Context(prec=80, traps=[InvalidOperation])
MAX_TEXT = 1024  # longest identifier (event id, model, key id, node, GPU uuid) the worker stores


def money_problem(value: Decimal) -> str | None:
    """Why ``value`` is not an amount ``Decimal(38, 9)`` holds exactly, or None."""
    if not value.is_finite():
        return f"{value} is not a number"
    if value.adjusted() >= LEDGER_INTEGER_DIGITS:
        return f"{value} has more than {LEDGER_INTEGER_DIGITS} digits before the decimal point (the ledger's Decimal(38, 9))"
    if value != value.quantize(NANO, context=MONEY_CONTEXT):
        return f"{value} has more than {PRICE_SCALE} decimal places (the ledger keeps nano-units)"
    return None


def price_problem(value: Decimal | None) -> str | None:
    """Why a price cannot be used, or None: it must be a finite 0 .. MAX_PRICE with ≤ 9 decimals."""
    if value is None:
        return None
    problem = money_problem(value)
    if problem:
        return problem
    if value < 0:
        return f"{value} is negative"
    if value > MAX_PRICE:
        return (
            f"{value} is above the largest accepted price {MAX_PRICE:,} (with up to {MAX_TOKENS:,} tokens per "
            f"request, a larger one could overflow the ledger's Decimal(38, 9))"
        )
    return None


def aware_utc(value: datetime) -> datetime:
    """A time the ledger can place: it must name its zone (a bare time could be any); returned in UTC."""
    if value.tzinfo is None:
        raise ValueError("needs a time zone, e.g. 2026-01-01T00:00:00Z")
    return value.astimezone(UTC)
