"""The routing savings views on the real ClickHouse, with usage events and ledger lines written by hand.

The views are the unit under test, so the inputs are the README's worked example ("Routing savings"),
not what the worker derived; the worker's part is tested end to end in ``test_routing_savings_e2e``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gpuledger.clickhouse import connect
from gpuledger.settings import Settings
from schemas import InferenceUsage, LedgerLine, OrgDirectory
from streams.enrich import PricedUsage
from streams.sink import ledger_row, usage_row
from streams.store.tables import LEDGER_COLUMNS, USAGE_COLUMNS
from tests.support import isolated, ledger_line

pytestmark = pytest.mark.engines
D1 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
D2 = D1 + timedelta(days=1)
GPU = "GPU-savings-0001"


def window_line(line_id: str, kind: str, cost: str, tokens: int) -> LedgerLine:
    """llama-8b's GPU window on D1: 0.03 busy + 0.01 idle for 4,000 tokens, i.e. 10 per million on the allocation basis."""
    return ledger_line(
        line_id,
        kind,
        D1,
        cost,
        org="search",
        team="ranking",
        model="llama-8b" if kind == "gpu" else "NVIDIA H100",
        price_id="h100",
        gpu_seconds=Decimal(60),
        gpu_uuid=GPU,
        window_tokens=4000,
        share_tokens=tokens,
        prompt_tokens=tokens // 2,
        completion_tokens=tokens - tokens // 2,
        basis="tokens" if kind == "gpu" else "remainder",
    )


def request(
    event_id: str, when: datetime, model: str, baseline: str, rule: str, tokens: int, priced_as: str, cost: str, baseline_cost: str | None
) -> PricedUsage:
    usage = InferenceUsage(
        event_id=event_id,
        request_start=when,
        request_end=when,
        key_id="k",
        model=model,
        backend="openai",
        prompt_tokens=tokens,
        completion_tokens=0,
        latency_ms=1.0,
        status="ok",
        gpu_uuids=[GPU] if priced_as == "gpu" else [],
        requested_model="auto",
        route_rule=rule,
        baseline_model=baseline,
    )
    payer = OrgDirectory(kind="api_key", key="k", org="search", team="ranking", project="p")
    return PricedUsage(
        usage,
        payer,
        priced_as,
        "",
        Decimal(cost),
        None,
        None,
        "",
        None if baseline_cost is None else Decimal(baseline_cost),
        "big-v1" if baseline_cost else "",
    )


@pytest.fixture(scope="module")
def savings(stack_settings: Settings) -> Iterator[Settings]:
    settings = isolated(stack_settings, "savings_views")
    client = connect(settings.clickhouse)
    client.insert(
        "ledger",
        [ledger_row(window_line("g", "gpu", "0.03", 4000), 1), ledger_row(window_line("i", "idle", "0.01", 0), 1)],
        column_names=list(LEDGER_COLUMNS),
    )
    rows = [
        request("api-small", D1, "gpt-mini", "gpt-big", "default", 1000, "api", "0.0003", "0.005"),  # saves 0.0047
        request("self-hosted", D1, "llama-8b", "gpt-big", "default", 1000, "gpu", "0", "0.0125"),  # 1,000 x 10 / 1e6 = 0.01: saves 0.0025
        request("escalated", D1, "gpt-big", "gpt-big", "long-prompt", 500, "api", "0.0025", "0.0025"),  # its own baseline: 0
        request("fell-back", D2, "gpt-mini", "llama-8b", "fallback:1", 2000, "api", "0.0006", None),  # D1's rate, the latest: 0.02 - 0.0006
        request("no-rate", D2, "llama-70b", "gpt-big", "default", 100, "gpu", "0", "0.0005"),  # llama-70b never allocated: unpriced
    ]
    client.insert("usage_events", [usage_row(r, 0, i) for i, r in enumerate(rows)], column_names=list(USAGE_COLUMNS))
    yield settings


def test_each_request_has_its_actual_counterfactual_and_savings(savings: Settings) -> None:
    rows = (
        connect(savings.clickhouse)
        .query(
            "SELECT event_id, actual_cost, counterfactual_cost, savings, counterfactual_basis FROM routing_savings_requests ORDER BY event_id"
        )
        .result_rows
    )
    got = {r[0]: tuple(None if v is None else (Decimal(v) if not isinstance(v, str) else v) for v in r[1:]) for r in rows}
    assert got == {
        "api-small": (Decimal("0.0003"), Decimal("0.005"), Decimal("0.0047"), "big-v1"),
        "self-hosted": (Decimal("0.01"), Decimal("0.0125"), Decimal("0.0025"), "big-v1"),
        "escalated": (Decimal("0.0025"), Decimal("0.0025"), Decimal(0), "big-v1"),
        "fell-back": (Decimal("0.0006"), Decimal("0.02"), Decimal("0.0194"), "allocation:llama-8b"),
        "no-rate": (None, Decimal("0.0005"), None, "big-v1"),
    }


def test_daily_view_sums_by_rule_and_counts_the_unpriced(savings: Settings) -> None:
    rows = (
        connect(savings.clickhouse)
        .query(
            "SELECT day, route_rule, sum(requests), sum(unpriced_requests), sum(actual_cost), sum(counterfactual_cost), sum(savings) "
            "FROM routing_savings_daily GROUP BY day, route_rule ORDER BY day, route_rule"
        )
        .result_rows
    )
    assert [(str(d), rule, n, u, Decimal(a), Decimal(c), Decimal(s)) for d, rule, n, u, a, c, s in rows] == [
        ("2026-11-02", "default", 2, 0, Decimal("0.0103"), Decimal("0.0175"), Decimal("0.0072")),
        ("2026-11-02", "long-prompt", 1, 0, Decimal("0.0025"), Decimal("0.0025"), Decimal(0)),
        ("2026-11-03", "default", 1, 1, Decimal(0), Decimal(0), Decimal(0)),
        ("2026-11-03", "fallback:1", 1, 0, Decimal("0.0006"), Decimal("0.02"), Decimal("0.0194")),
    ]
