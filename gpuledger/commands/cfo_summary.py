"""The CFO summary that ``gpuledger demo`` ends with: spend by org, self-hosted vs API per model with
break-even, and this period's spend bridge — each read from the analyst views, so every figure on it
can be re-run in SQL (``spend_by_org_daily``, ``self_hosted_vs_api_daily``, ``spend_bridge``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from clickhouse_connect.driver.client import Client
from rich.console import Group
from rich.table import Table

from gpuledger.commands import unit_costs as uc
from gpuledger.commands.report import usd
from gpuledger.settings import Settings
from streams.store import spend_daily


@dataclass(frozen=True)
class OrgSpend:
    org: str
    currency: str
    api: Decimal
    gpu: Decimal
    idle: Decimal
    total: Decimal


@dataclass(frozen=True)
class BridgeRow:
    org: str
    currency: str
    spend_before: Decimal
    spend_after: Decimal
    volume: Decimal
    price: Decimal
    mix: Decimal
    other: Decimal
    jevons: bool


@dataclass(frozen=True)
class CfoSummary:
    month: date
    orgs: list[OrgSpend]
    models: list[uc.Comparison]
    bridge: list[BridgeRow]


def summary(settings: Settings, client: Client, at: date) -> CfoSummary:
    """The month holding ``at``: spend by org, self-hosted vs API by model, and the bridge from the month before, by org."""
    month = at.replace(day=1)
    end = (month + timedelta(days=32)).replace(day=1)
    db, params = settings.clickhouse.database, {"since": month, "until": end}
    orgs = [
        OrgSpend(o, c, Decimal(a), Decimal(g), Decimal(i), Decimal(t))
        for o, c, a, g, i, t in client.query(
            spend_daily.spend_by_org_sql(db),
            parameters=params,
        ).result_rows
    ]
    bridge = [
        BridgeRow(o, c, Decimal(b), Decimal(a), Decimal(v), Decimal(p), Decimal(m), Decimal(x), bool(j))
        for o, c, b, a, v, p, m, x, j in client.query(
            spend_daily.monthly_bridge_by_org_sql(db),
            parameters=params,
        ).result_rows
    ]
    return CfoSummary(month, orgs, uc.comparisons(settings, month, end, "model", client), bridge)


def render(s: CfoSummary) -> Group:
    """Three small tables, money to 4 places (the CLI commands and views carry the exact figures)."""
    orgs = Table("org", "API", "GPU share", "idle", "total", "currency", title=f"spend by org, {s.month:%B %Y} (spend_by_org_daily)")
    for o in s.orgs:
        orgs.add_row(o.org, usd(o.api), usd(o.gpu), usd(o.idle), usd(o.total), o.currency)
    models = Table(
        "model",
        "hosting",
        "tokens",
        "allocation cost",
        "API equivalent",
        "allocation / API",
        "break-even tokens/h",
        "headroom",
        "currency",
        title="self-hosted vs API per model (self_hosted_vs_api_daily)",
        caption="allocation / API below 1: self-hosting is cheaper; headroom = observed volume / break-even volume",
    )
    for m in s.models:
        models.add_row(
            m.llm_model,
            m.hosting,
            f"{m.tokens:,}",
            usd(m.allocation_cost),
            usd(m.api_equivalent_cost),
            "-" if m.ratio is None else str(m.ratio),
            "-" if m.break_even_tokens_per_hour is None else f"{m.break_even_tokens_per_hour:,}",
            "-" if m.headroom is None else str(m.headroom),
            m.currency,
        )
    bridge = Table(
        "org",
        "last month",
        "this month",
        "volume",
        "price",
        "mix",
        "other",
        "unit cost down, spend up",
        "currency",
        title=f"spend bridge, {s.month:%B %Y} vs the month before (spend_bridge)",
        caption="volume + price + mix + other = the change in spend, exactly",
    )
    for b in s.bridge:
        bridge.add_row(
            b.org,
            usd(b.spend_before),
            usd(b.spend_after),
            usd(b.volume),
            usd(b.price),
            usd(b.mix),
            usd(b.other),
            "yes" if b.jevons else "no",
            b.currency,
        )
    return Group(orgs, models, bridge)
