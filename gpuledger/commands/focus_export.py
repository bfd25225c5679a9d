"""``gpuledger export focus``: the ledger as a FinOps FOCUS 1.2 cost-and-usage dataset (README, "FOCUS export").

One row per ledger line (``ledger FINAL``: API requests, GPU token shares and workloads, idle, late adjustments)
whose time is in [start, end). Costs are copied exactly (Decimal, never float): the file's BilledCost adds up
to the ledger to the last of its 9 decimal places. Rows are streamed from ClickHouse block by block and
written batch by batch, so a month of lines needs no more memory than a day's.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, cast

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.query import QueryResult

from gpuledger.clickhouse import connect
from gpuledger.commands.focus_files import (
    MONEY_SCALE,
    QUANTITY_SCALE,
    ColumnType,
    check_target,
    open_writer,
)
from gpuledger.settings import Settings
from streams.store import focus

SECONDS_PER_HOUR = Decimal(3600)
BATCH = 4096  # lines mapped and written at a time (one Parquet row group each)
QUANTITY, MONEY = Decimal(1).scaleb(-QUANTITY_SCALE), Decimal(1).scaleb(-MONEY_SCALE)
UNIT_PRICE = Decimal(1).scaleb(-6)  # a GPU-hour rate recovered from 9-place window costs is exact to 6 places
WORKLOAD_BASES = frozenset({"sm", "memory", "equal", "allocation"})  # how a window is split among workloads holding the GPU
TAG_PREFIX = "gpuledger/"  # provider-defined tag keys carry it (FOCUS Tags-C-012); the org directory's keys do not

# FOCUS 1.2 columns (focus_validator/rules/model-1.2.0.1.json), then gpuledger's own x_ columns.
COLUMNS: dict[str, ColumnType] = {
    "BilledCost": "money",
    "EffectiveCost": "money",
    "ListCost": "money",
    "ContractedCost": "money",
    "BillingCurrency": "string",
    "BillingAccountId": "string",
    "BillingAccountName": "string",
    "BillingPeriodStart": "string",
    "BillingPeriodEnd": "string",
    "ChargeCategory": "string",
    "ChargeClass": "string",
    "ChargeDescription": "string",
    "ChargeFrequency": "string",
    "ChargePeriodStart": "string",
    "ChargePeriodEnd": "string",
    # No commitment discounts: always null, but present, because focus-validator 2.2.1's ConsumedQuantity rules
    # refer to it and fail on a dataset without it.
    "CommitmentDiscountStatus": "string",
    "ConsumedQuantity": "quantity",
    "ConsumedUnit": "string",
    "PricingQuantity": "quantity",
    "PricingUnit": "string",
    "ListUnitPrice": "money",
    "InvoiceId": "string",
    "InvoiceIssuerName": "string",
    "ProviderName": "string",
    "PublisherName": "string",
    "ResourceId": "string",
    "ResourceName": "string",
    "ResourceType": "string",
    "ServiceCategory": "string",
    "ServiceSubcategory": "string",
    "ServiceName": "string",
    "SkuId": "string",
    "SkuPriceId": "string",
    "SubAccountId": "string",
    "SubAccountName": "string",
    "Tags": "string",
    "x_LineId": "string",
    "x_LineKind": "string",
    "x_Basis": "string",
    "x_IdlePolicy": "string",
    "x_Workload": "string",
    "x_UtilizationPct": "string",
    "x_WindowTokens": "string",
    "x_ShareTokens": "string",
    "x_PromptTokens": "string",
    "x_CachedPromptTokens": "string",
    "x_CompletionTokens": "string",
    "x_UsageEstimated": "string",
    "x_ApiEquivalentCost": "money",
    "x_AdjustsLineId": "string",
    "x_Node": "string",
    "x_GpuModel": "string",
}


class ExportError(Exception):
    """Bad arguments for an export (what was wrong and what to give instead)."""


@dataclass(frozen=True)
class Issuer:
    """Who the file says bills the charges (FOCUS ProviderName, PublisherName, InvoiceIssuerName, BillingAccount)."""

    provider: str = "gpuledger"
    billing_account_id: str = "gpuledger"
    billing_account_name: str = "gpuledger"


@dataclass(frozen=True)
class ExportResult:
    rows: int
    billed_cost: Decimal
    path: Path
    ledger_lines: int  # what the ledger held for the range when the export began
    ledger_cost: Decimal

    @property
    def complete(self) -> bool:
        """False when the ledger changed during the export (a late window restated): export the range again."""
        return (self.rows, self.billed_cost) == (self.ledger_lines, self.ledger_cost)


def _utc(t: datetime) -> datetime:
    """``t`` in UTC; a naive time is taken to be UTC already."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def check_range(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """[start, end) in UTC; refuses an empty or inverted range."""
    start, end = _utc(start), _utc(end)
    if start >= end:
        raise ExportError(
            f"--from {start:%Y-%m-%d %H:%M:%S} is not before --to {end:%Y-%m-%d %H:%M:%S}; --to is exclusive, "
            "so a single day is --from 2026-11-01 --to 2026-11-02"
        )
    return start, end


def _params(start: datetime, end: datetime) -> dict[str, Any]:
    return {"start": start.astimezone(UTC).replace(tzinfo=None), "end": end.astimezone(UTC).replace(tzinfo=None)}


def ledger_summary(client: Client, db: str, start: datetime, end: datetime) -> tuple[int, Decimal]:
    """How many lines the export will write (the progress bar's total) and what they cost."""
    count, total = client.query(focus.count_sql(db), parameters=_params(start, end)).result_rows[0]
    return int(count), Decimal(total or 0)


def ledger_lines(client: Client, db: str, start: datetime, end: datetime) -> Iterator[list[dict[str, Any]]]:
    """The lines in [start, end) as blocks of dicts, streamed (ClickHouse sends blocks; none is kept)."""
    stream = client.query_row_block_stream(focus.lines_sql(db), parameters=_params(start, end))
    with stream:
        names = cast(QueryResult, stream.source).column_names  # a row block stream's source is its QueryResult
        for block in stream:
            for offset in range(0, len(block), BATCH):  # a block the server sent whole (sorted output) is cut small
                yield [dict(zip(names, row, strict=True)) for row in block[offset : offset + BATCH]]


def _stamp(t: datetime) -> str:
    """FOCUS DateTimeFormat: ISO 8601 in UTC, to the second (``t`` is UTC and whole seconds)."""
    return t.replace(tzinfo=None).isoformat() + "Z"


def _floor_second(t: datetime) -> datetime:
    return t.replace(microsecond=0)


def _ceil_second(t: datetime) -> datetime:
    return t if t.microsecond == 0 else t.replace(microsecond=0) + timedelta(seconds=1)


@functools.lru_cache(maxsize=64)
def _month(year: int, month: int) -> tuple[datetime, datetime, str, str]:
    first = datetime(year, month, 1, tzinfo=UTC)
    after = (first + timedelta(days=32)).replace(day=1)
    return first, after, _stamp(first), _stamp(after)


def billing_period(t: datetime) -> tuple[datetime, datetime, str, str]:
    """The calendar month (UTC) the line is billed in: its bounds, and as FOCUS date/times."""
    return _month(t.year, t.month)


def charge_period(line: Mapping[str, Any], month_start: datetime) -> tuple[datetime, datetime]:
    """API line: the request (start to end); GPU-derived line: its window. Widened to whole seconds, never empty."""
    when = _utc(line["event_time"])
    if line["kind"] == "api":
        begun = _utc(line["request_start"]) if line["request_start"] is not None else when
        first = _floor_second(max(begun, month_start))
        last = _ceil_second(when)
    else:
        first = _floor_second(when)
        last = _ceil_second(when + timedelta(seconds=line["window_seconds"]))
    return first, max(last, first + timedelta(seconds=1))


@dataclass(frozen=True)
class Pricing:
    """FOCUS pricing columns of one line: what was counted, in what unit, and (where derivable) at what list price."""

    unit: str | None
    quantity: Decimal | None
    unit_price: Decimal | None


def pricing(line: Mapping[str, Any]) -> Pricing:
    """API: tokens (prompt + completion; three prices apply, so no single unit price). GPU-derived: GPU-hours of the
    line (its cost share of its window's GPU-hours) at the window's hourly rate. Adjustments: corrections, no quantity."""
    kind = line["kind"]
    if kind == "api":
        return Pricing("Tokens", Decimal(line["prompt_tokens"] + line["completion_tokens"]).quantize(QUANTITY), None)
    if kind == "adjustment":
        return Pricing(None, None, None)
    window_hours = Decimal(line["gpu_seconds"]) / SECONDS_PER_HOUR
    window_cost, cost = Decimal(line["window_cost"]), Decimal(line["cost"])
    if line["basis"] == "mig-free" or window_cost <= 0 or window_hours <= 0:
        # The free slices of a MIG parent: the parent's rate is not recoverable from this line alone.
        return Pricing("GPU-Hours", window_hours.quantize(QUANTITY, ROUND_HALF_EVEN), None)
    rate = (window_cost / window_hours).quantize(UNIT_PRICE, ROUND_HALF_EVEN)
    return Pricing("GPU-Hours", (cost / rate).quantize(QUANTITY, ROUND_HALF_EVEN), rate.quantize(MONEY))


def tags(line: Mapping[str, Any]) -> str:
    """The org directory's attribution (user-defined, unprefixed) and gpuledger's own keys (prefixed); empty values left out."""
    pairs = {
        "team": line["team"],
        "project": line["project"],
        "cost_centre": line["cost_centre"],
        f"{TAG_PREFIX}model": line["model"],
        f"{TAG_PREFIX}key_id": line["key_id"],
    }
    return json.dumps({k: v for k, v in pairs.items() if v}, sort_keys=True, separators=(",", ":"))


def describe(line: Mapping[str, Any]) -> str:
    """ChargeDescription: what the line is, in a sentence."""
    kind, basis = line["kind"], line["basis"]
    if kind == "api":
        return (
            f"{line['model']} API: {line['prompt_tokens']} prompt ({line['cached_prompt_tokens']} cached) "
            f"+ {line['completion_tokens']} completion tokens"
        )
    if kind == "adjustment":
        return f"late GPU data: correction of closed-window line {line['adjusts_line_id']}"
    gpu = line["gpu_model"] or "GPU"
    if kind == "gpu" and basis == "tokens":
        return f"{line['model']} inference on {gpu}: {line['share_tokens']} of the window's {line['window_tokens']} tokens (busy share)"
    if kind == "gpu":
        return f"workload {line['workload']} on {gpu} ({basis} basis)"
    return f"idle {gpu} ({basis}{', idle policy ' + line['idle_policy'] if line['idle_policy'] else ''})"


def service(line: Mapping[str, Any]) -> tuple[str, str]:
    """ServiceName and its one ServiceSubcategory (FOCUS wants exactly one per name); an adjustment takes its basis's."""
    kind, basis = line["kind"], line["basis"]
    if kind == "api":
        return "LLM API", "Generative AI"
    if basis == "tokens" and kind in ("gpu", "adjustment"):
        return "Self-hosted LLM inference", "Generative AI"
    if basis in WORKLOAD_BASES and kind in ("gpu", "adjustment"):
        return "GPU workloads", "Machine Learning"
    return "GPU idle capacity", "AI Platforms"


def _resource(line: Mapping[str, Any]) -> tuple[str, str, str]:
    """ResourceId, ResourceName, ResourceType: the model for API lines, the GPU (or MIG instance) otherwise."""
    if line["kind"] == "api":
        return line["model"], line["model"], "LLM API model"
    gpu = line["gpu_uuid"]
    name = f"{line['gpu_model']} on {line['node']}" if line["gpu_model"] and line["node"] else gpu
    return gpu, name, "MIG instance" if line["mig_profile"] else "GPU"


def _optional(value: object) -> str | None:
    return None if value in (None, "") else str(value)


def focus_row(line: Mapping[str, Any], issuer: Issuer) -> dict[str, Any]:
    """One ledger line as a FOCUS 1.2 row (see README "FOCUS export" for the column mapping)."""
    cost = Decimal(line["cost"]).quantize(MONEY)
    month_start, _, month_start_text, month_end_text = billing_period(_utc(line["event_time"]))
    first, last = charge_period(line, month_start)
    price = pricing(line)
    adjustment = line["kind"] == "adjustment"
    resource_id, resource_name, resource_type = _resource(line)
    service_name, subcategory = service(line)
    api = line["kind"] == "api"
    usage_estimated = line["usage_estimated"] if api else None
    return {
        "BilledCost": cost,
        "EffectiveCost": cost,
        "ListCost": cost,
        "ContractedCost": cost,
        "BillingCurrency": line["currency"],
        "BillingAccountId": issuer.billing_account_id,
        "BillingAccountName": issuer.billing_account_name,
        "BillingPeriodStart": month_start_text,
        "BillingPeriodEnd": month_end_text,
        "ChargeCategory": "Adjustment" if adjustment else "Usage",
        "ChargeClass": "Correction" if adjustment else None,
        "CommitmentDiscountStatus": None,
        "ChargeDescription": describe(line),
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodStart": _stamp(first),
        "ChargePeriodEnd": _stamp(last),
        "ConsumedQuantity": price.quantity,
        "ConsumedUnit": price.unit,
        "PricingQuantity": price.quantity,
        "PricingUnit": price.unit,
        "ListUnitPrice": price.unit_price,
        "InvoiceId": None,
        "InvoiceIssuerName": issuer.provider,
        "ProviderName": issuer.provider,
        "PublisherName": issuer.provider,
        "ResourceId": resource_id,
        "ResourceName": resource_name,
        "ResourceType": resource_type,
        "ServiceCategory": "AI and Machine Learning",
        "ServiceSubcategory": subcategory,
        "ServiceName": service_name,
        "SkuId": _optional(line["price_id"].rsplit("@", 1)[0]),
        "SkuPriceId": _optional(line["price_id"]),
        "SubAccountId": line["org"],
        "SubAccountName": line["org"],
        "Tags": tags(line),
        "x_LineId": line["line_id"],
        "x_LineKind": line["kind"],
        "x_Basis": _optional(line["basis"]),
        "x_IdlePolicy": _optional(line["idle_policy"]),
        "x_Workload": _optional(line["workload"]),
        "x_UtilizationPct": None if api or adjustment else f"{line['utilization_pct']:g}",
        "x_WindowTokens": None if api or adjustment else str(line["window_tokens"]),
        "x_ShareTokens": None if api or adjustment else str(line["share_tokens"]),
        "x_PromptTokens": str(line["prompt_tokens"]),
        "x_CachedPromptTokens": str(line["cached_prompt_tokens"]),
        "x_CompletionTokens": str(line["completion_tokens"]),
        "x_UsageEstimated": None if usage_estimated is None else str(bool(usage_estimated)).lower(),
        "x_ApiEquivalentCost": Decimal(line["api_equivalent_cost"]) if api and line["api_equivalent_cost"] is not None else None,
        "x_AdjustsLineId": _optional(line["adjusts_line_id"]),
        "x_Node": _optional(line["node"]),
        "x_GpuModel": _optional(line["gpu_model"]),
    }


def export_focus(
    settings: Settings,
    start: datetime,
    end: datetime,
    fmt: str,
    out: Path,
    *,
    issuer: Issuer = Issuer(),
    on_start: Callable[[int], None] = lambda total: None,
    on_rows: Callable[[int], None] = lambda n: None,
) -> ExportResult:
    """Write the FOCUS file for [start, end); ``on_start(total lines)`` and ``on_rows(n)`` drive a progress bar."""
    start, end = check_range(start, end)
    check_target(out, fmt)  # bad arguments are refused before connecting
    client = connect(settings.clickhouse)
    db = settings.clickhouse.database
    writer = open_writer(out, fmt, COLUMNS)
    rows, billed = 0, Decimal(0)
    with writer:
        total, ledger_cost = ledger_summary(client, db, start, end)
        on_start(total)
        for block in ledger_lines(client, db, start, end):
            batch = [focus_row(line, issuer) for line in block]
            writer.write(batch)
            rows += len(batch)
            billed += sum((r["BilledCost"] for r in batch), Decimal(0))
            on_rows(len(batch))
    return ExportResult(rows, billed, out, total, ledger_cost)
