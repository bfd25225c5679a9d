"""The demo's last checks: cost per outcome and routing savings, read from the views, against the simulation's truth.

The simulator's oracle (``gpuledger.commands.simulate.savings_truth`` / ``outcome_truth``) computes both from the
README's rules without the worker's code; here they are read the way a user reads them (``gpuledger
outcomes report``, ``gpuledger report --savings``) and compared to the nano-unit. A figure that has not
caught up yet is waited for until a deadline, then shown with a clear mismatch message (the demo goes on).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

from rich.console import Console

from gpuledger.commands.outcomes import OutcomeFigures, outcome_figures, render_table
from gpuledger.commands.unit_costs import render as render_rows
from gpuledger.settings import Settings
from streams.store.savings import SavingsRow, savings, with_total


def outcome_mismatches(rows: list[OutcomeFigures], expected: dict[str, dict[str, Any]]) -> list[str]:
    """Each kind whose outcomes, successes or cost per success differ from the truth, said in one line."""
    found = {r.group: r for r in rows}
    problems = []
    for kind, want in sorted(expected.items()):
        row = found.get(kind)
        got = (row.outcomes, row.successes, row.cost_per_success) if row else (0, 0, None)
        cost = Decimal(want["cost_per_success"]) if want["cost_per_success"] is not None else None
        if got != (want["outcomes"], want["successes"], cost):
            problems.append(
                f"cost per outcome, {kind}: views {got[0]} outcomes, {got[1]} successes, {got[2]} per success; "
                f"expected {want['outcomes']}, {want['successes']}, {cost}"
            )
    return problems


def savings_mismatches(rows: list[SavingsRow], expected: dict[str, Any]) -> list[str]:
    """Each rule (and the total) whose request count or savings differ from the truth, or that has unpriced requests."""
    rules: dict[str, list[Any]] = defaultdict(lambda: [0, Decimal(0), 0])
    for r in rows:
        rules[r.route_rule][0] += r.requests
        rules[r.route_rule][1] += r.savings
        rules[r.route_rule][2] += r.unpriced_requests
    problems = [
        f"routing savings, rule {rule}: views {rules[rule][0]} requests, {rules[rule][1]} saved, {rules[rule][2]} unpriced; "
        f"expected {want['requests']}, {Decimal(want['savings'])}, 0"
        for rule, want in sorted(expected["by_rule"].items())
        if rules[rule] != [want["requests"], Decimal(want["savings"]), 0]
    ]
    total = sum((r.savings for r in rows), Decimal(0))
    if total != Decimal(expected["savings"]):
        problems.append(f"routing savings total: views {total} vs expected {Decimal(expected['savings'])}")
    return problems


def read(settings: Settings, since: date, until: date) -> tuple[list[OutcomeFigures], list[SavingsRow]]:
    """Cost per outcome per kind and routing savings per alias and rule over [since, until), from the views."""
    return outcome_figures(settings, since, until, "kind"), savings(settings, since, until, "model")


def mismatches(settings: Settings, truth: dict[str, Any], since: date, until: date) -> list[str]:
    outcomes, routed = read(settings, since, until)
    return outcome_mismatches(outcomes, truth["outcomes"]) + savings_mismatches(routed, truth["routing_savings"])


def show(
    settings: Settings, truth: dict[str, Any], since: date, until: date, console: Console, alive: Callable[[], None], timeout: float = 120
) -> list[str]:
    """Wait (up to ``timeout`` s) for the views to match the truth, print both tables and the verdict; returns the mismatches."""
    deadline = time.monotonic() + timeout
    with console.status("waiting for outcomes and routing savings to match the ground truth..."):
        while (problems := mismatches(settings, truth, since, until)) and time.monotonic() < deadline:
            alive()
            time.sleep(2)
    outcomes, routed = read(settings, since, until)
    console.print(render_table(outcomes, "Cost per outcome (cost_per_outcome views; cost per success counts failed attempts' cost)"))
    console.print(
        render_rows(
            with_total(routed),
            (),
            "table",
            f"Routing savings, alias {', '.join(sorted({r.alias for r in routed})) or '-'}: baseline cost - actual cost",
        )
    )
    if problems:
        console.print("[red]MISMATCH with the ground truth:[/red]\n  " + "\n  ".join(problems))
    else:
        console.print(
            f"[green]cost per success ({len(truth['outcomes'])} kinds) and routing savings "
            f"({Decimal(truth['routing_savings']['savings']):.2f}) match the ground truth to the nano-unit[/green]"
        )
    return problems
