"""Unit economics and self-hosted vs API: the README's worked example, reproduced on the real ClickHouse views.

The views are the unit under test, so the ledger lines and usage events are written by hand (the
figures of README "Unit costs and self-host vs API"), not derived by the worker. The API-equivalent
pricing the worker does at ingestion is tested end to end through Kafka and the worker at the bottom.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from gpuledger.clickhouse import connect
from gpuledger.commands.reference_import import (
    ReferenceFileError,
    import_equivalents,
    import_prices,
)
from gpuledger.commands.unit_costs import comparisons, render, unit_costs
from gpuledger.kafka import new_producer
from gpuledger.settings import Settings
from schemas import InferenceUsage, LedgerLine, codec_for
from streams.sink import ledger_row
from streams.store.rollups import refresh_rollups
from streams.store.tables import LEDGER_COLUMNS, USAGE_COLUMNS
from tests.support import (
    DEMO,
    ROOT,
    WorkerProcess,
    demo_worker,
    isolated,
    settings_env,
    usage_event_row,
    wait_until,
)

pytestmark = pytest.mark.engines
W = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
DAY = (date(2026, 11, 2), date(2026, 11, 3))
GPU = "GPU-unit-0001"


def gpu_line(
    line_id: str,
    org: str,
    team: str,
    model: str,
    cost: str,
    *,
    kind: str = "gpu",
    basis: str = "tokens",
    share: int = 0,
    prompt: int = 0,
    completion: int = 0,
) -> LedgerLine:
    return LedgerLine(
        line_id=line_id,
        kind=kind,
        event_time=W,
        org=org,
        team=team,
        project="p",
        cost_centre="",
        model=model,
        price_id="h100",
        gpu_seconds=Decimal(60),
        cost=Decimal(cost),
        currency="USD",
        gpu_uuid=GPU,
        window_tokens=4000,
        share_tokens=share,
        prompt_tokens=prompt,
        completion_tokens=completion,
        basis=basis,
        gpu_model="NVIDIA H100 80GB HBM3",
    )


def usage_row(
    event_id: str, org: str, team: str, model: str, prompt: int, completion: int, priced_as: str, cost: str, equivalent: str | None
) -> list[object]:
    return usage_event_row(
        event_id=event_id,
        request_start=W,
        event_time=W + timedelta(seconds=10),
        model=model,
        backend="vllm",
        node="n",
        gpu_uuids=[GPU] if priced_as == "gpu" else [],
        prompt_tokens=prompt,
        completion_tokens=completion,
        org=org,
        team=team,
        priced_as=priced_as,
        cost=Decimal(cost),
        api_equivalent_cost=None if equivalent is None else Decimal(equivalent),
    )


@pytest.fixture(scope="module")
def ledger(stack_settings: Settings) -> Iterator[Settings]:
    """README's example: an H100 window at 2.49/h, 75 % busy, search 3,000 and support 1,000 tokens of llama-3.1-8b;
    a gpt-4o-mini request (an API model, its own equivalent); a llama-3.1-70b request with no equivalent."""
    settings = isolated(stack_settings, "unit_costs")
    client = connect(settings.clickhouse)
    lines = [
        gpu_line("s", "search", "ranking", "llama-3.1-8b-instruct", "0.02334375", share=3000, prompt=2000, completion=1000),
        gpu_line("u", "support", "chatbot", "llama-3.1-8b-instruct", "0.00778125", share=1000, prompt=800, completion=200),
        gpu_line("i", "platform", "ml-infra", "NVIDIA H100 80GB HBM3", "0.010375", kind="idle", basis="remainder"),
        LedgerLine(
            line_id="api:a",
            kind="api",
            event_time=W,
            org="support",
            team="chatbot",
            project="p",
            cost_centre="",
            model="gpt-4o-mini",
            price_id="mini",
            gpu_seconds=Decimal(0),
            cost=Decimal("0.000315"),
            currency="USD",
            prompt_tokens=1200,
            cached_prompt_tokens=1000,
            completion_tokens=350,
        ),
        gpu_line("l", "labs", "x", "llama-3.1-70b-instruct", "0.004", share=0, prompt=400, completion=100),
    ]
    client.insert("ledger", [ledger_row(line, 1) for line in lines], column_names=list(LEDGER_COLUMNS))
    client.insert(
        "usage_events",
        [
            usage_row("r-search", "search", "ranking", "llama-3.1-8b-instruct", 2000, 1000, "gpu", "0", "0.0009"),
            usage_row("r-support", "support", "chatbot", "llama-3.1-8b-instruct", 800, 200, "gpu", "0", "0.00024"),
            usage_row("r-api", "support", "chatbot", "gpt-4o-mini", 1200, 350, "api", "0.000315", "0.000315"),
            usage_row("r-labs", "labs", "x", "llama-3.1-70b-instruct", 400, 100, "gpu", "0", None),
        ],
        column_names=list(USAGE_COLUMNS),
    )
    yield settings


def test_unit_costs_on_usage_and_allocation_bases(ledger: Settings) -> None:
    rows = {(r.group, r.llm_model): r for r in unit_costs(ledger, *DAY, "team")}
    search = rows[("search/ranking", "llama-3.1-8b-instruct")]
    # usage: 0.02334375 for 3,000 tokens = 7.78125 per million; allocation adds 3/4 of the window's idle 0.010375.
    assert (search.tokens, search.usage_cost, search.allocation_cost) == (3000, Decimal("0.02334375"), Decimal("0.031125"))
    assert (search.per_mtok_usage, search.per_mtok_allocation) == (Decimal("7.78125"), Decimal("10.375"))
    support = rows[("support/chatbot", "llama-3.1-8b-instruct")]
    assert (support.allocation_cost, support.per_mtok_allocation) == (Decimal("0.010375"), Decimal("10.375"))
    api = rows[("support/chatbot", "gpt-4o-mini")]
    assert (api.hosting, api.usage_cost, api.allocation_cost, api.per_mtok_usage) == (
        "api",
        Decimal("0.000315"),
        Decimal("0.000315"),
        Decimal("0.203225806"),
    )
    by_model = {r.llm_model: r for r in unit_costs(ledger, *DAY, "model")}
    assert by_model["llama-3.1-8b-instruct"].allocation_cost == Decimal("0.0415")  # the whole window, every team


def test_self_hosted_vs_api_with_break_even_and_headroom(ledger: Settings) -> None:
    rows = {(r.group, r.llm_model): r for r in comparisons(ledger, *DAY, "team")}
    search = rows[("search/ranking", "llama-3.1-8b-instruct")]
    # API equivalent 0.0009 (gpt-4o-mini: 2,000 x 0.15 + 1,000 x 0.60 per million); 0.031125 / 0.0009 = 34.5833;
    # break-even = (0.031125 per serving hour) / (0.0009 / 3,000 per token) = 103,750 tokens an hour; headroom 0.0289.
    assert (search.api_equivalent_cost, search.ratio, search.break_even_tokens_per_hour, search.headroom) == (
        Decimal("0.0009"),
        Decimal("34.5833"),
        Decimal(103750),
        Decimal("0.0289"),
    )
    api = rows[("support/chatbot", "gpt-4o-mini")]
    assert (api.ratio, api.headroom) == (Decimal(1), Decimal(1))  # an API model compared with itself
    model = {r.llm_model: r for r in comparisons(ledger, *DAY, "model")}["llama-3.1-8b-instruct"]
    assert (model.allocation_cost, model.api_equivalent_cost, model.ratio) == (Decimal("0.0415"), Decimal("0.00114"), Decimal("36.4035"))


def test_a_model_without_an_equivalent_is_listed_as_such(ledger: Settings) -> None:
    labs = {(r.group, r.llm_model): r for r in comparisons(ledger, *DAY, "org")}[("labs", "llama-3.1-70b-instruct")]
    assert (labs.tokens, labs.allocation_cost, labs.api_equivalent_cost, labs.requests_without_equivalent) == (
        500,
        Decimal("0.004"),
        None,
        1,
    )
    assert (labs.ratio, labs.break_even_tokens_per_hour, labs.headroom) == (None, None, None)


def test_views_never_divide_by_zero(ledger: Settings) -> None:
    client = connect(ledger.clickhouse)
    client.insert(
        "ledger",
        [ledger_row(gpu_line("z", "finance", "ops", "llama-3.1-70b-instruct", "0.001", share=0), 1)],
        column_names=list(LEDGER_COLUMNS),
    )
    rows = client.query("SELECT llm_model, tokens, usd_per_mtok_usage FROM unit_costs_daily WHERE org = 'finance'").result_rows
    assert rows == [("llama-3.1-70b-instruct", 0, None)]


def test_currencies_are_never_added_together_and_the_dashboards_rollup_agrees(ledger: Settings) -> None:
    """emea pays gpt-4o-mini in dollars (0.25) and in euros (0.50): two rows, never 0.75 of anything."""
    client = connect(ledger.clickhouse)
    client.insert(
        "ledger",
        [
            ledger_row(
                LedgerLine(
                    line_id=f"api:{currency}",
                    kind="api",
                    event_time=W,
                    org="emea",
                    team="x",
                    project="p",
                    cost_centre="",
                    model="gpt-4o-mini",
                    price_id="mini",
                    gpu_seconds=Decimal(0),
                    cost=Decimal(cost),
                    currency=currency,
                    prompt_tokens=1000,
                ),
                1,
            )
            for currency, cost in (("USD", "0.25"), ("EUR", "0.5"))
        ],
        column_names=list(LEDGER_COLUMNS),
    )
    rows = [(r.llm_model, r.currency, r.usage_cost, r.per_mtok_usage) for r in unit_costs(ledger, *DAY, "org") if r.group == "emea"]
    assert rows == [("gpt-4o-mini", "EUR", Decimal("0.5"), Decimal(500)), ("gpt-4o-mini", "USD", Decimal("0.25"), Decimal(250))]
    table = render(unit_costs(ledger, *DAY, "org"), ("per_mtok_usage",), "table", "t")
    assert table.caption == "2 currencies (EUR, USD): rows are grouped by currency, never added across"
    refresh_rollups(client)
    assert comparisons(ledger, *DAY, "team", client, rollup=True) == comparisons(ledger, *DAY, "team", client)


def test_cli_formats_and_bad_ranges(ledger: Settings, tmp_path: Path) -> None:
    env = {**os.environ, **settings_env(ledger, tmp_path)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gpuledger.commands.cli", *args], env=env, capture_output=True, text=True, cwd=ROOT, timeout=60
        )

    out = cli("compare", "--since", "2026-11-02", "--until", "2026-11-03", "--by", "team", "--format", "json")
    assert out.returncode == 0, out.stderr
    records = {(r["group"], r["llm_model"]): r for r in json.loads(out.stdout)}
    assert records[("search/ranking", "llama-3.1-8b-instruct")]["break_even_tokens_per_hour"] == "103750"
    csv_out = cli("unit-costs", "--since", "2026-11-02", "--until", "2026-11-03", "--format", "csv")
    assert csv_out.returncode == 0 and "search/ranking,llama-3.1-8b-instruct,self-hosted,3000,0.02334375" in csv_out.stdout
    bad = cli("unit-costs", "--since", "2026-11-03", "--until", "2026-11-02")
    assert bad.returncode == 1 and "is not before --until" in bad.stdout
    assert cli("compare", "--by", "colour").returncode == 2


@pytest.fixture
def worker_env(stack_settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, WorkerProcess]]:
    with demo_worker(stack_settings, "api_equivalents", tmp_path / "worker") as running:
        yield running


def test_worker_prices_each_request_at_its_equivalents_price_in_force(worker_env: tuple[Settings, WorkerProcess], tmp_path: Path) -> None:
    settings, worker = worker_env
    change = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    unknown = tmp_path / "bad.yaml"
    unknown.write_text(
        "equivalents:\n  - {model: llama-3.1-8b-instruct, api_sku: gpt-5-imaginary, effective_from: '2026-01-01T00:00:00Z'}\n"
    )
    with pytest.raises(ReferenceFileError, match="gpt-5-imaginary' has no token price; priced SKUs: claude-sonnet-4, gpt-4o, gpt-4o-mini"):
        asyncio.run(import_equivalents(settings, unknown))
    asyncio.run(import_equivalents(settings, DEMO / "equivalents.yaml"))
    prices = tmp_path / "change.csv"  # gpt-4o-mini gets cheaper mid-period
    prices.write_text(
        f"sku,kind,currency,effective_from,input_per_mtok,output_per_mtok\ngpt-4o-mini,token,USD,{change.isoformat()},0.10,0.40\n"
    )
    asyncio.run(import_prices(settings, prices))

    def request(event_id: str, model: str, when: datetime, gpus: list[str]) -> bytes:
        return codec_for(InferenceUsage).encode(
            InferenceUsage(
                event_id=event_id,
                request_start=when - timedelta(seconds=1),
                request_end=when,
                key_id="key-search-ranker",
                model=model,
                backend="vllm",
                prompt_tokens=1_000_000,
                completion_tokens=1_000_000,
                latency_ms=1000.0,
                status="ok",
                gpu_uuids=gpus,
            )
        )

    async def send() -> None:
        producer = new_producer(settings.kafka)
        await producer.start()
        try:
            for value in (
                request("before", "llama-3.1-8b-instruct", change - timedelta(seconds=1), [GPU]),
                request("after", "llama-3.1-8b-instruct", change, [GPU]),
                request("api", "gpt-4o-mini", change, []),
                request("no-equivalent", "mistral-7b-instruct", change, [GPU]),
            ):
                await producer.send_and_wait(settings.topics.inference_usage, value=value)
        finally:
            await producer.stop()

    asyncio.run(send())
    client = connect(settings.clickhouse)
    query = "SELECT event_id, priced_as, cost, api_equivalent_cost, api_equivalent_price_id FROM usage_events FINAL ORDER BY event_id"
    rows = wait_until(lambda: r if len(r := client.query(query).result_rows) == 4 else None, 60, "four priced requests", worker)
    assert rows == [
        ("after", "gpu", Decimal(0), Decimal("0.5"), f"gpt-4o-mini@{change.isoformat()}"),  # 1M x 0.10 + 1M x 0.40
        ("api", "api", Decimal("0.5"), Decimal("0.5"), f"gpt-4o-mini@{change.isoformat()}"),
        ("before", "gpu", Decimal(0), Decimal("0.75"), "gpt-4o-mini@2026-01-01T00:00:00+00:00"),  # 1M x 0.15 + 1M x 0.60
        ("no-equivalent", "gpu", Decimal(0), None, ""),
    ]
