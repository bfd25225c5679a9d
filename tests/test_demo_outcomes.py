"""The simulation's outcomes and routing context end to end: real Kafka, the real worker process, real ClickHouse views.

The simulator's oracle computes routing savings and cost per successful outcome from the README's rules,
without the worker's code; the views (read as ``gpuledger outcomes report`` and ``report --savings`` read
them) must equal it to the nano-unit, and the spend must still equal the unchanged spend truth.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from gpuledger.commands.demo_outcomes import mismatches, read
from gpuledger.commands.simulate import publish_fleet
from gpuledger.settings import Settings
from tests.support import (
    ROOT,
    WorkerProcess,
    demo_worker,
    expected_totals,
    org_totals,
    wait_until,
)

DEMO = ROOT / "gpuledger" / "data" / "demo"
pytestmark = pytest.mark.engines


@pytest.fixture
def pipeline(stack_settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, WorkerProcess]]:
    with demo_worker(stack_settings, "demo_outcomes", tmp_path / "worker") as running:
        yield running


def test_views_equal_the_oracles_routing_savings_and_cost_per_success(pipeline: tuple[Settings, WorkerProcess], tmp_path: Path) -> None:
    settings, worker = pipeline
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3)
    truth = asyncio.run(
        publish_fleet(
            settings,
            seed=28,
            start=start,
            minutes=2,
            scale=0.3,
            orgs=DEMO / "orgs.yaml",
            prices=DEMO / "prices.yaml",
            truth_path=tmp_path / "truth.json",
            console=None,
        )
    )
    # The oracle's figures are not trivial (seed 28 has them): savings from two cheap rules, a loss on the dearer fallback, failed outcomes.
    rules = {rule: Decimal(v["savings"]) for rule, v in truth["routing_savings"]["by_rule"].items()}
    assert rules["default"] > 0 and rules["short-ops"] > 0 and rules.get("fallback:1", Decimal(-1)) < 0, rules
    kinds = truth["outcomes"]
    assert set(kinds) == {"ticket_resolved", "invoice_processed"}
    assert all(0 < k["successes"] < k["outcomes"] for k in kinds.values()), kinds

    since, until = start.date(), start.date() + timedelta(days=2)
    wait_until(lambda: not mismatches(settings, truth, since, until), 90, "outcome and savings views to equal the oracle", worker)
    outcomes, routed = read(settings, since, until)
    assert {r.group: r.cost_per_success for r in outcomes} == {k: Decimal(v["cost_per_success"]) for k, v in kinds.items()}
    assert sum((r.savings for r in routed), Decimal(0)) == Decimal(truth["routing_savings"]["savings"])
    assert {r.alias for r in routed} == {"auto"} and not any(r.unpriced_requests for r in routed)
    # Outcomes and routing fields change no cost: the ledger still equals the spend truth.
    wait_until(lambda: org_totals(settings) == expected_totals(truth), 60, "ledger totals to equal the spend truth", worker)
