"""`gpuledger budgets`: validation that says what to fix, and set / list / delete through the real CLI and Kafka."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpuledger.commands.budgets import current, read_file, save
from gpuledger.settings import Settings
from streams.budgets.definitions import BudgetError, BudgetSpec, parse_specs
from tests.support import ROOT, settings_env

pytestmark = pytest.mark.engines


def problems(settings: Settings, **entry: object) -> str:
    with pytest.raises(BudgetError) as caught:
        asyncio.run(save(settings, parse_specs([{"id": "b", "org": "research", "amount": "10", **entry}], "cli")))
    return str(caught.value)


def test_invalid_budgets_are_refused_with_what_to_fix(budget_env: Settings) -> None:
    assert "amount: Input should be greater than 0" in problems(budget_env, amount="-5")
    assert "currency: String should match pattern" in problems(budget_env, currency="dollars")
    assert "thresholds [0, 250] are out of range; each must be a percentage from 1 to 200" in problems(budget_env, thresholds=[0, 50, 250])
    assert "unknown time zone 'Mars/Olympus'" in problems(budget_env, timezone="Mars/Olympus")
    assert "a project budget needs its team too" in problems(budget_env, project="deep-research")
    assert (
        "unknown org 'reserch'; known orgs: finance, platform, research, search, support (add it with `gpuledger orgs import`)"
        in problems(budget_env, org="reserch")
    )
    assert "org 'research' has no team 'bots' in the org directory; its teams: agents" in problems(budget_env, team="bots")
    assert "currency EUR is not used by any price, so no spend is ever booked in it; use one of: USD" in problems(
        budget_env, currency="EUR"
    )
    assert asyncio.run(current(budget_env))[0] == []  # nothing was published by any refused request


def test_a_file_with_one_bad_budget_saves_none(budget_env: Settings, tmp_path: Path) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_text(
        "budgets:\n  - {id: ok, org: research, amount: 100}\n  - {id: bad, org: research, amount: 5, period: year}\n  - {id: ok, org: support, amount: 1}\n"
    )
    with pytest.raises(BudgetError) as caught:
        parse_specs(read_file(path), str(path))
    text = str(caught.value)
    assert f"{path} budget bad: period: Input should be 'day', 'week' or 'month'" in text
    assert f"{path}: budget id 'ok' appears more than once" in text


def test_set_list_and_delete_through_the_cli(budget_env: Settings, tmp_path: Path) -> None:
    env = {**os.environ, **settings_env(budget_env, tmp_path), "COLUMNS": "200"}
    env.pop("GPULEDGER_CONFIG", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gpuledger.commands.cli", "budgets", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    made = cli(
        "set",
        "research-monthly",
        "--org",
        "research",
        "--team",
        "agents",
        "--amount",
        "5000",
        "--timezone",
        "Europe/Berlin",
        "--mode",
        "hard",
        "--thresholds",
        "80,50",
    )
    assert made.returncode == 0, made.stdout + made.stderr
    assert "saved budget research-monthly: research/agents, 5000 USD per month (Europe/Berlin), alerts at 50%, 80%, hard" in made.stdout
    refused = cli("set", "x", "--org", "nobody", "--amount", "1")
    assert refused.returncode == 1 and "unknown org 'nobody'" in refused.stdout
    listed = cli("list")
    assert listed.returncode == 0 and "research-monthly" in listed.stdout and "5,000.00 USD" in listed.stdout and "50,80" in listed.stdout
    assert [b.budget_id for b in asyncio.run(current(budget_env))[0]] == ["research-monthly"]
    missing = cli("delete", "nope")
    assert missing.returncode == 1 and "no budget 'nope'; existing budgets: research-monthly" in missing.stdout
    assert cli("delete", "research-monthly").returncode == 0
    assert asyncio.run(current(budget_env))[0] == []
    assert "no budgets" in cli("list").stdout


def test_spec_defaults() -> None:
    spec = BudgetSpec.model_validate({"id": "d", "org": "o", "amount": "1.5"})
    assert (spec.period, spec.timezone, spec.currency, spec.thresholds, spec.mode) == ("month", "UTC", "USD", [50, 80, 100], "soft")


def test_list_shows_figures_of_any_size_and_skips_what_it_cannot_decode(budget_env: Settings, tmp_path: Path) -> None:
    """A 29-digit amount (what Decimal(38, 9) holds) made `budgets list` die with decimal.InvalidOperation;
    an undecodable record on the budgets topic made it die with a traceback."""
    from gpuledger.commands.reference_import import publish

    env = {**os.environ, **settings_env(budget_env, tmp_path), "COLUMNS": "250"}
    env.pop("GPULEDGER_CONFIG", None)
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpuledger.commands.cli",
            "budgets",
            "set",
            "huge",
            "--org",
            "research",
            "--amount",
            "12345678901234567890123456789",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    asyncio.run(publish(budget_env, "budgets", [(b"garbage", b"\x00\x00\x00\x00\x08not avro")]))
    listed = subprocess.run(
        [sys.executable, "-m", "gpuledger.commands.cli", "budgets", "list"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "12,345,678,901,234,567,890,123,456,789.00 USD" in listed.stdout
    assert "Traceback" not in listed.stdout + listed.stderr
