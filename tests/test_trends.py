"""The spend bridge (README "Why spend rises while unit prices fall"): hand-computed, exact for any data,
and the same rows from `gpuledger trends` (Python) and the `spend_bridge` views (SQL, migration 0014)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from rich.console import Console

from gpuledger.clickhouse import connect
from gpuledger.commands.cfo_summary import render, summary
from gpuledger.commands.trends import Bridge, ModelSpend, bridge, trends
from gpuledger.commands.unit_costs import div_half_even
from gpuledger.settings import Settings
from schemas import LedgerLine
from streams.sink import ledger_row
from streams.store import rollups
from streams.store.rollups import refresh_rollups
from streams.store.tables import LEDGER_COLUMNS
from tests.support import ROOT, isolated, ledger_line, settings_env


def line(
    line_id: str, when: datetime, model: str, tokens: int, cost: str, kind: str = "api", org: str = "research", currency: str = "USD"
) -> LedgerLine:
    return ledger_line(
        line_id,
        kind,
        when,
        cost,
        org=org,
        team="agents",
        model=model,
        price_id="x",
        currency=currency,
        prompt_tokens=tokens,
        basis="" if kind == "api" else "remainder",
    )


def write(settings: Settings, lines: list[LedgerLine]) -> Client:
    """Insert ``lines`` and roll them up (the bridge reads `spend_daily`)."""
    client = connect(settings.clickhouse)
    client.insert("ledger", [ledger_row(x, 1) for x in lines], column_names=list(LEDGER_COLUMNS))
    rollups.maintain(client, settings.clickhouse.database)  # no worker here: the rollup pass, run by hand
    return client


@pytest.mark.engines
def test_the_readme_bridge_on_the_real_ledger(stack_settings: Settings) -> None:
    # October: model A 1,000,000 tokens for 10.00 (10 per million), idle 1.00.
    # November: A 1,500,000 tokens for 12.00 (8 per million: its price fell), B 500,000 tokens for 1.00, idle 2.00.
    # volume (2M - 1M) x 10/M = 10.00; price 1.5M x (8 - 10)/M = -3.00; mix 3.00 - 10.00 + 3.00 = -4.00; other +1.00;
    # total 11.00 -> 15.00 = +4.00. Unit cost fell 10.00 -> 6.50 per million while spend rose: Jevons.
    settings = isolated(stack_settings, "trends")
    oct_, nov = datetime(2026, 10, 14, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)
    write(
        settings,
        [
            line("a1", oct_, "model-a", 600_000, "6"),
            line("a2", oct_, "model-a", 400_000, "4"),
            line("i1", oct_, "H100", 0, "1", kind="idle"),
            line("a3", nov, "model-a", 1_500_000, "12"),
            line("b1", nov, "model-b", 500_000, "1"),
            line("i2", nov, "H100", 0, "2", kind="idle"),
            line("o1", nov, "model-b", 7, "99", org="elsewhere"),
        ],
    )
    rows = {(r.group, r.period): r for r in trends(settings, date(2026, 10, 1), date(2026, 12, 1), "org", "month")}
    research = rows[("research", date(2026, 11, 1))]
    assert research.previous == date(2026, 10, 1)
    assert (research.spend_before, research.spend_after, research.change) == (Decimal(11), Decimal(15), Decimal(4))
    assert (research.volume, research.price, research.mix, research.other) == (Decimal(10), Decimal(-3), Decimal(-4), Decimal(1))
    assert (research.usd_per_mtok_before, research.usd_per_mtok_after, research.jevons) == (Decimal(10), Decimal("6.5"), True)
    first = rows[("research", date(2026, 10, 1))]  # against an empty September: all of it is new volume
    assert (first.spend_before, first.volume, first.price, first.mix, first.other) == (0, Decimal(10), 0, 0, Decimal(1))
    assert rows[("elsewhere", date(2026, 11, 1))].volume == Decimal(99)
    assert ("elsewhere", date(2026, 10, 1)) not in rows  # no spend in October nor September


VIEW_COLUMNS = (
    "org",
    "currency",
    "period",
    "previous_period",
    "spend_before",
    "spend_after",
    "volume",
    "price",
    "mix",
    "other",
    "usd_per_mtok_before",
    "usd_per_mtok_after",
    "jevons",
)


def as_view_row(b: Bridge) -> tuple[Any, ...]:
    return (
        b.group,
        b.currency,
        b.period,
        b.previous,
        b.spend_before,
        b.spend_after,
        b.volume,
        b.price,
        b.mix,
        b.other,
        b.usd_per_mtok_before,
        b.usd_per_mtok_after,
        b.jevons,
    )


@pytest.fixture(scope="module")
def bridge_ledger(stack_settings: Settings) -> Settings:
    # research, USD. August: A 1,000,000 tokens for 10.00, C 200,000 tokens for 1.00, idle 1.00.
    # September: A 1,000,000 tokens at 10/M (the 3rd) then its price fell to 6/M: 1,000,000 more for 6.00 (the 20th),
    #            C dropped, B added (500,000 tokens for 1.00), idle 2.00. Nothing in October.
    # Aug -> Sep: 12.00 -> 19.00 (+7.00); volume (2.5M - 1.2M) x 11.00 / 1.2M = 11.916666667 (half-even);
    #   price (A only) 16.00 - 2M x 10.00 / 1M = -4.00; mix 6.00 - 11.916666667 + 4.00 = -1.916666667; other +1.00.
    #   Unit cost 9.166666667 -> 6.80 per million while spend rose: Jevons.
    # Sep -> Oct: 19.00 -> 0: volume -17.00, price 0, mix 0, other -2.00.
    # research also spent 0.50 EUR on A in September: its own rows, never added to the dollars.
    settings = isolated(stack_settings, "bridge_views")
    aug, sep3, sep20 = datetime(2026, 8, 10, tzinfo=UTC), datetime(2026, 9, 3, tzinfo=UTC), datetime(2026, 9, 20, tzinfo=UTC)
    write(
        settings,
        [
            line("a1", aug, "model-a", 1_000_000, "10"),
            line("c1", aug, "model-c", 200_000, "1"),
            line("i1", aug, "H100", 0, "1", kind="idle"),
            line("a2", sep3, "model-a", 1_000_000, "10"),
            line("a3", sep20, "model-a", 1_000_000, "6"),
            line("b1", sep20, "model-b", 500_000, "1"),
            line("i2", sep20, "H100", 0, "2", kind="idle"),
            line("e1", sep3, "model-a", 100_000, "0.5", currency="EUR"),
            line("s1", aug, "H100", 0, "3", kind="idle", org="support"),
        ],
    )
    return settings


@pytest.mark.engines
def test_the_views_give_the_commands_rows_with_a_mid_period_price_change(bridge_ledger: Settings) -> None:
    settings, client = bridge_ledger, connect(bridge_ledger.clickhouse)
    cli = {p: trends(settings, date(2026, 1, 1), date(2027, 1, 1), "org", p) for p in ("month", "week")}
    view = {
        p: client.query(
            f"SELECT {', '.join(VIEW_COLUMNS)} FROM spend_bridge WHERE period_kind = {{p:String}} ORDER BY org, currency, period",
            parameters={"p": p},
        ).result_rows
        for p in ("month", "week")
    }
    for period in ("month", "week"):
        assert [as_view_row(b) for b in cli[period]] == [(*r[:-1], bool(r[-1])) for r in view[period]], period
    rows = {(b.group, b.currency, b.period): b for b in cli["month"]}
    sep = rows[("research", "USD", date(2026, 9, 1))]
    assert (sep.spend_before, sep.spend_after, sep.change) == (Decimal(12), Decimal(19), Decimal(7))
    assert (sep.volume, sep.price, sep.mix, sep.other) == (Decimal("11.916666667"), Decimal(-4), Decimal("-1.916666667"), Decimal(1))
    assert (sep.usd_per_mtok_before, sep.usd_per_mtok_after, sep.jevons) == (Decimal("9.166666667"), Decimal("6.8"), True)
    oct_ = rows[("research", "USD", date(2026, 10, 1))]
    assert (oct_.change, oct_.volume, oct_.price, oct_.mix, oct_.other, oct_.jevons) == (
        Decimal(-19),
        Decimal(-17),
        0,
        0,
        Decimal(-2),
        False,
    )
    assert rows[("research", "EUR", date(2026, 9, 1))].volume == Decimal("0.5")
    assert rows[("support", "USD", date(2026, 8, 1))].usd_per_mtok_after is None  # idle only: no tokens, no unit cost
    assert set(rows) == {("research", "USD", date(2026, m, 1)) for m in (8, 9, 10)} | {
        ("research", "EUR", date(2026, m, 1)) for m in (9, 10)
    } | {("support", "USD", date(2026, m, 1)) for m in (8, 9)}
    models = dict(
        client.query(
            "SELECT llm_model, price_effect FROM spend_bridge_models WHERE period_kind = 'month' AND period = '2026-09-01'"
            " AND org = 'research' AND currency = 'USD'"
        ).result_rows
    )
    assert models == {"model-a": Decimal(-4), "model-b": 0, "model-c": 0, "": 0}  # B added, C dropped: mix, not price


@pytest.mark.parametrize("seed", range(30))
def test_effects_always_add_up_to_the_change_exactly(seed: int) -> None:
    rng = random.Random(seed)

    def period() -> dict[str, ModelSpend]:
        return {
            f"m{i}": ModelSpend(rng.choice([0, rng.randrange(1, 10**9)]), Decimal(rng.randrange(0, 10**12)) / 10**9)
            for i in range(rng.randrange(0, 5))
        }

    before, after = period(), period()
    other_before, other_after = Decimal(rng.randrange(10**6)) / 1000, Decimal(rng.randrange(10**6)) / 1000
    volume, price, mix, other = bridge(before, after, other_before, other_after)

    def spend(p: dict[str, ModelSpend]) -> Decimal:
        return sum((m.spend for m in p.values()), Decimal(0))

    assert volume + price + mix + other == spend(after) + other_after - spend(before) - other_before


@pytest.mark.parametrize(
    ("amount", "over", "times", "expected"),
    [
        ("11", 1_200_000, 1_300_000, "11.916666667"),
        ("0.000000005", 2, 1, "0.000000002"),
        ("0.000000015", 2, 1, "0.000000008"),
        ("-0.000000005", 2, 1, "-0.000000002"),
        ("1", 3, 1, "0.333333333"),
        ("2", 3, 1, "0.666666667"),
    ],
)
def test_division_rounds_once_half_even(amount: str, over: int, times: int, expected: str) -> None:
    assert div_half_even(Decimal(amount), over, times) == Decimal(expected)


@pytest.mark.engines
def test_the_cfo_summary_reads_the_views(bridge_ledger: Settings) -> None:
    """`make demo`'s last tables: September's spend by org and currency, and its bridge (the hand-computed row above)."""
    client = connect(bridge_ledger.clickhouse)
    refresh_rollups(client)
    s = summary(bridge_ledger, client, date(2026, 9, 15))
    assert [(o.org, o.currency, o.api, o.idle, o.total) for o in s.orgs] == [
        ("research", "USD", Decimal(17), Decimal(2), Decimal(19)),
        ("research", "EUR", Decimal("0.5"), 0, Decimal("0.5")),
    ]
    usd = next(b for b in s.bridge if (b.org, b.currency) == ("research", "USD"))
    assert (usd.spend_before, usd.spend_after, usd.volume, usd.price, usd.mix, usd.other, usd.jevons) == (
        Decimal(12),
        Decimal(19),
        Decimal("11.916666667"),
        Decimal(-4),
        Decimal("-1.916666667"),
        Decimal(1),
        True,
    )
    assert {(b.org, b.currency) for b in s.bridge} == {("research", "USD"), ("research", "EUR"), ("support", "USD")}
    console = Console(record=True, width=200)
    console.print(render(s))
    text = console.export_text()
    assert "spend bridge, September 2026" in text and "11.9167" in text and "-1.9167" in text


@pytest.mark.engines
def test_the_command_prints_the_same_bridge(bridge_ledger: Settings, tmp_path: Path) -> None:
    """`gpuledger trends --format json`: September's hand-computed row, exact decimal strings, one row per currency."""
    env = {**os.environ, **settings_env(bridge_ledger, tmp_path)}
    run = subprocess.run(
        [sys.executable, "-m", "gpuledger.commands.cli", "trends", "--since", "2026-09-01", "--until", "2026-10-01", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    rows = {(r["group"], r["currency"]): r for r in json.loads(run.stdout)}
    usd = rows[("research", "USD")]
    assert (usd["period"], usd["volume"], usd["price"], usd["mix"], usd["other"], usd["change"], usd["jevons"]) == (
        "2026-09-01",
        "11.916666667",
        "-4.000000000",
        "-1.916666667",
        "1.000000000",
        "7.000000000",
        "True",
    )
    assert rows[("research", "EUR")]["volume"] == "0.500000000"
