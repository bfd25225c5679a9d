"""``gpuledger export focus`` against the real ClickHouse, validated by the FinOps Foundation's focus-validator.

Two ledgers: one written by hand (the README's H100 window at 2.49/h, a training workload on an L40S, a MIG
instance and its parent's free slices, a late adjustment, API requests with their usage events), so every line
kind and basis is present with figures a reader can check; and one derived by the real worker from a 2-minute
simulated fleet. The export itself always runs as the real CLI in a subprocess.
focus-validator 2.2.1 needs Python >= 3.12, so deploy/focus/install-validator.sh puts it in its own venv; this
test fails (never skips) when it cannot, unless GPULEDGER_FOCUS_VALIDATOR=absent says so explicitly.
"""

from __future__ import annotations

import asyncio
import csv
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gpuledger.clickhouse import connect
from gpuledger.commands.focus_export import COLUMNS
from gpuledger.commands.focus_files import open_writer
from gpuledger.commands.reference_import import import_orgs, import_prices
from gpuledger.commands.report import spend_by_org_model
from gpuledger.commands.simulate import publish_fleet
from gpuledger.settings import Settings
from schemas import LedgerLine
from streams.sink import ledger_row
from streams.store.tables import LEDGER_COLUMNS, USAGE_COLUMNS
from tests.focus_fill import BIG_RANGE, fill_ledger, peak_rss_mib
from tests.support import (
    ROOT,
    WorkerProcess,
    expected_totals,
    isolated,
    org_totals,
    settings_env,
    usage_event_row,
    wait_until,
)

pytestmark = pytest.mark.engines
W = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
H100, L40S, MIG, PARENT = "GPU-h100-0001", "GPU-l40s-0001", "MIG-a100-0001-3g", "GPU-a100-0001"
RANGE = ("--from", "2026-11-01", "--to", "2026-12-01")
DEMO = ROOT / "gpuledger" / "data" / "demo"
# The FOCUS 1.2 applicability criteria gpuledger's data supports (so their conditional rules are checked too).
SUPPORTED = (
    "SUB_ACCOUNT_SUPPORTED,TAGGING_SUPPORTED,USAGE_MEASUREMENT_SUPPORTED,BILLING_BASED_ON_PROVISIONED_RESOURCES_SUPPORTED,"
    "RESOURCE_TYPE_ASSIGNMENT_SUPPORTED"
)


def line(line_id: str, kind: str, org: str, cost: str, **extra: object) -> LedgerLine:
    base: dict[str, object] = dict(  # noqa: C408 (keyword form: the LedgerLine fields)
        line_id=line_id,
        kind=kind,
        event_time=W,
        org=org,
        team=f"{org}-team",
        project="p1",
        cost_centre="cc-42" if org == "search" else "",
        model="NVIDIA H100 80GB HBM3",
        price_id="NVIDIA H100 80GB HBM3@2026-01-01T00:00:00+00:00",
        gpu_seconds=Decimal(60),
        cost=Decimal(cost),
        currency="USD",
        window_seconds=60,
        node="node-a",
        gpu_uuid=H100,
        gpu_model="NVIDIA H100 80GB HBM3",
        utilization_pct=75.0,
        window_tokens=4000,
        idle_policy="node",
    )
    base.update(extra)
    return LedgerLine(**base)  # type: ignore[arg-type]


LINES = [
    # The README's H100 window: 2.49/h x 60 s = 0.0415; 75 % busy split 3:1 by tokens; the idle quarter is the node owner's.
    line(
        "share-s",
        "gpu",
        "search",
        "0.02334375",
        model="llama-3.1-8b-instruct",
        basis="tokens",
        share_tokens=3000,
        prompt_tokens=2000,
        completion_tokens=1000,
        key_id="key-search",
    ),
    line(
        "share-u",
        "gpu",
        "support",
        "0.00778125",
        model="llama-3.1-8b-instruct",
        basis="tokens",
        share_tokens=1000,
        prompt_tokens=800,
        completion_tokens=200,
        key_id="key-support",
    ),
    line("idle-h100", "idle", "platform", "0.010375", basis="remainder"),
    # A training job holds an L40S (0.89/h): 0.014833333 for the minute, split by SM utilization 2:1; no idle left over.
    line(
        "train-1",
        "gpu",
        "research",
        "0.009888888",
        gpu_uuid=L40S,
        gpu_model="NVIDIA L40S",
        model="NVIDIA L40S",
        basis="sm",
        workload="ml/train-0",
        window_tokens=0,
        price_id="NVIDIA L40S@2026-01-01T00:00:00+00:00",
        utilization_pct=90.0,
    ),
    line(
        "train-2",
        "gpu",
        "research",
        "0.004944445",
        gpu_uuid=L40S,
        gpu_model="NVIDIA L40S",
        model="NVIDIA L40S",
        basis="sm",
        workload="ml/train-1",
        window_tokens=0,
        price_id="NVIDIA L40S@2026-01-01T00:00:00+00:00",
        utilization_pct=90.0,
    ),
    # A MIG instance (3g.40gb at 1.00/h, idle all minute) and the parent's free slices (2.10/h x 60 s - 0.016666667).
    line(
        "mig-idle",
        "idle",
        "platform",
        "0.016666667",
        gpu_uuid=MIG,
        parent_gpu_uuid=PARENT,
        mig_profile="3g.40gb",
        basis="remainder",
        gpu_model="NVIDIA A100-SXM4-80GB",
        model="NVIDIA A100-SXM4-80GB",
        window_tokens=0,
        utilization_pct=0.0,
        price_id="NVIDIA A100-SXM4-80GB/3g.40gb@2026-01-01T00:00:00+00:00",
    ),
    line(
        "mig-free",
        "idle",
        "platform",
        "0.018333333",
        gpu_uuid=PARENT,
        parent_gpu_uuid=PARENT,
        basis="mig-free",
        gpu_model="NVIDIA A100-SXM4-80GB",
        model="NVIDIA A100-SXM4-80GB",
        window_tokens=0,
        utilization_pct=0.0,
        idle_policy="",
        price_id="NVIDIA A100-SXM4-80GB@2026-01-01T00:00:00+00:00",
    ),
    # Late samples for a closed window: a correction booked in the open period (here a refund).
    line(
        "adj-1",
        "adjustment",
        "search",
        "-0.001200000",
        event_time=W + timedelta(hours=30),
        model="llama-3.1-8b-instruct",
        basis="tokens",
        adjusts_line_id="share-old",
        adjusts_window=W - timedelta(days=1),
        key_id="key-search",
    ),
    # API requests: gpt-4o-mini 1,200 prompt (1,000 cached) + 350 completion = 0.000315; an estimated-usage claude request.
    line(
        "api:r1",
        "api",
        "support",
        "0.000315",
        model="gpt-4o-mini",
        event_id="r1",
        key_id="key-support",
        gpu_uuid="",
        node="",
        gpu_model="",
        gpu_seconds=Decimal(0),
        window_seconds=0,
        window_tokens=0,
        utilization_pct=0.0,
        idle_policy="",
        prompt_tokens=1200,
        cached_prompt_tokens=1000,
        completion_tokens=350,
        price_id="gpt-4o-mini@2026-01-01T00:00:00+00:00",
        event_time=W + timedelta(seconds=2, microseconds=500_000),
    ),
    line(
        "api:r2",
        "api",
        "search",
        "0.0105",
        model="claude-sonnet-4",
        event_id="r2",
        key_id="key-search",
        gpu_uuid="",
        node="",
        gpu_model="",
        gpu_seconds=Decimal(0),
        window_seconds=0,
        window_tokens=0,
        utilization_pct=0.0,
        idle_policy="",
        prompt_tokens=1000,
        completion_tokens=500,
        price_id="claude-sonnet-4@2026-01-01T00:00:00+00:00",
        event_time=datetime(2026, 11, 30, 23, 59, 59, 900_000, tzinfo=UTC),
    ),
    # Outside [--from, --to): must not be exported.
    line("idle-december", "idle", "platform", "1.000000000", event_time=datetime(2026, 12, 1, tzinfo=UTC), basis="remainder"),
]
EXPORTED = [entry for entry in LINES if entry.line_id != "idle-december"]


def usage(
    event_id: str,
    org: str,
    model: str,
    end: datetime,
    prompt: int,
    cached: int,
    completion: int,
    cost: str,
    equivalent: str | None,
    estimated: bool,
) -> list[object]:
    return usage_event_row(
        event_id=event_id,
        request_start=end - timedelta(seconds=3),
        event_time=end,
        key_id=f"key-{org}",
        model=model,
        prompt_tokens=prompt,
        cached_prompt_tokens=cached,
        completion_tokens=completion,
        usage_estimated=estimated,
        latency_ms=3000.0,
        org=org,
        team=f"{org}-team",
        project="p1",
        cost=Decimal(cost),
        api_equivalent_cost=None if equivalent is None else Decimal(equivalent),
    )


@pytest.fixture(scope="module")
def ledger(stack_settings: Settings) -> Settings:
    settings = isolated(stack_settings, "focus")
    client = connect(settings.clickhouse)
    client.insert("ledger", [ledger_row(entry, 1) for entry in LINES], column_names=list(LEDGER_COLUMNS))
    client.insert(
        "usage_events",
        [
            usage("r1", "support", "gpt-4o-mini", LINES[8].event_time, 1200, 1000, 350, "0.000315", "0.000315", False),
            usage("r2", "search", "claude-sonnet-4", LINES[9].event_time, 1000, 0, 500, "0.0105", None, True),
        ],
        column_names=list(USAGE_COLUMNS),
    )
    return settings


def export(settings: Settings, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings_env(settings, tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "gpuledger.commands.cli", "export", "focus", *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def exported(ledger: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("focus")
    files = folder / "focus.csv", folder / "focus.parquet"
    for path, fmt in zip(files, ("csv", "parquet"), strict=True):
        result = export(ledger, folder, *RANGE, "--format", fmt, "--out", str(path))
        assert result.returncode == 0, result.stderr + result.stdout
        assert f"wrote {len(EXPORTED)} FOCUS rows" in result.stderr and "warning" not in result.stderr
    return files


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def focus_validator() -> str | None:
    """The validator's executable (installed by deploy/focus/install-validator.sh), or None where explicitly absent."""
    if os.environ.get("GPULEDGER_FOCUS_VALIDATOR") == "absent":
        return None
    script = ROOT / "deploy" / "focus" / "install-validator.sh"
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(
            f"focus-validator could not be installed ({script} exited {done.returncode}):\n{done.stderr[-2000:]}\n"
            "Set GPULEDGER_FOCUS_VALIDATOR=absent to run without it."
        )
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def fleet(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path, dict[str, Decimal]]:
    """The real worker prices a 2-minute simulated fleet (API and self-hosted models, training, MIG, idle); then its
    ledger is exported. Returns the settings, the CSV and the simulation's ground truth per org."""
    folder = tmp_path_factory.mktemp("focus_fleet")
    settings = isolated(stack_settings, "focus_fleet")
    asyncio.run(import_orgs(settings, DEMO / "orgs.yaml"))
    asyncio.run(import_prices(settings, DEMO / "prices.yaml"))
    worker = WorkerProcess(settings, folder / "worker").start()
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3)
    try:
        truth = asyncio.run(
            publish_fleet(
                settings,
                seed=5,
                start=start,
                minutes=2,
                scale=0.3,
                orgs=DEMO / "orgs.yaml",
                prices=DEMO / "prices.yaml",
                truth_path=folder / "truth.json",
                console=None,
            )
        )
        expected = expected_totals(truth)
        wait_until(lambda: org_totals(settings) == expected, 120, "the ledger to equal the simulation's ground truth", worker)
    finally:
        worker.stop()
    out = folder / "fleet.csv"
    window = ("--from", f"{start:%Y-%m-%dT%H:%M:%S}", "--to", f"{start + timedelta(minutes=5):%Y-%m-%dT%H:%M:%S}")
    result = export(settings, folder, *window, "--out", str(out))
    assert result.returncode == 0, result.stderr + result.stdout
    return settings, out, expected


def test_export_passes_focus_validator(
    exported: tuple[Path, Path], fleet: tuple[Settings, Path, dict[str, Decimal]], tmp_path: Path
) -> None:
    """focus-validator 2.2.1, FOCUS 1.2 with its bundled rules (--block-download: no network), including the conditional
    rules of what gpuledger supports (SUPPORTED), on both exports in one file: every rule that runs passes but one,
    which the validator reports by mistake: InvoiceId-C-005-C ("not null when invoiced") is one branch of the OR
    InvoiceId-C-003-C, whose other branch (null: no invoice, the case of an internal chargeback) holds, so
    InvoiceId-C-003-C itself passes."""
    validator = focus_validator()
    if validator is None:
        pytest.skip("GPULEDGER_FOCUS_VALIDATOR=absent: the FOCUS validation was explicitly switched off")
    both = tmp_path / "both.csv"
    both.write_text(exported[0].read_text() + "".join(fleet[1].read_text().splitlines(keepends=True)[1:]))
    result = subprocess.run(
        [
            validator,
            "--data-file",
            str(both),
            "--validate-version",
            "1.2",
            "--block-download",
            "--applicability-criteria",
            SUPPORTED,
            "--show-violations",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    outcomes = dict(re.findall(r"^\S+ ([A-Za-z]+-[A-Z]-\d{3}-[A-Z]): (PASS|FAIL|SKIPPED)", output, re.MULTILINE))
    failed = sorted(rule for rule, outcome in outcomes.items() if outcome == "FAIL")
    assert failed == ["InvoiceId-C-005-C"], output[output.find("--- Failures ---") :][:6000]
    assert outcomes["InvoiceId-C-003-C"] == "PASS"
    assert sum(outcome == "PASS" for outcome in outcomes.values()) >= 150, output[-3000:]  # the rules really ran


def test_fleet_export_adds_up_to_the_worker_ledger(fleet: tuple[Settings, Path, dict[str, Decimal]]) -> None:
    """The worker's ledger: BilledCost adds up to it exactly, to `gpuledger report` and the ground truth to the cent;
    each whole GPU's unit price is its list price (a MIG parent's free slices have none), and unit price x quantity
    = cost (to FOCUS's 1e-9 tolerance)."""
    settings, path, expected = fleet
    rows = csv_rows(path)
    billed = sum((Decimal(r["BilledCost"]) for r in rows), Decimal(0))
    assert billed == sum(org_totals(settings).values(), Decimal(0))
    cent = Decimal("0.01")
    report_total = sum((r.total for r in spend_by_org_model(settings)), Decimal(0))
    assert billed.quantize(cent) == report_total.quantize(cent) == sum(expected.values(), Decimal(0)).quantize(cent)
    assert {"api", "gpu", "idle"} <= {r["x_LineKind"] for r in rows}
    whole_gpus = {(r["x_GpuModel"], r["ListUnitPrice"]) for r in rows if r["ResourceType"] == "GPU" and r["x_Basis"] != "mig-free"}
    assert (
        whole_gpus
        == {("NVIDIA H100 80GB HBM3", "2.490000000"), ("NVIDIA L40S", "0.890000000"), ("NVIDIA A100-SXM4-80GB", "2.100000000")} & whole_gpus
    )
    assert len(whole_gpus) >= 2
    for r in rows:
        if r["ListUnitPrice"]:
            cost = Decimal(r["ListCost"])
            assert abs(Decimal(r["ListUnitPrice"]) * Decimal(r["PricingQuantity"]) - cost) <= Decimal("1e-9") * max(
                abs(cost), Decimal(1)
            ), r


def test_billed_cost_adds_up_to_the_ledger_and_the_report(exported: tuple[Path, Path], ledger: Settings) -> None:
    rows = csv_rows(exported[0])
    billed = sum((Decimal(r["BilledCost"]) for r in rows), Decimal(0))
    assert billed == sum((entry.cost for entry in EXPORTED), Decimal(0)) == Decimal("0.100948333")
    report = spend_by_org_model(ledger, datetime(2026, 11, 1), datetime(2026, 12, 1))
    cent = Decimal("0.01")
    assert billed.quantize(cent) == sum((r.total for r in report), Decimal(0)).quantize(cent)
    assert all(r["BilledCost"] == r["EffectiveCost"] == r["ListCost"] == r["ContractedCost"] for r in rows)


def test_every_line_kind_with_its_focus_mapping(exported: tuple[Path, Path]) -> None:
    rows = {r["x_LineId"]: r for r in csv_rows(exported[0])}
    assert set(rows) == {entry.line_id for entry in EXPORTED}
    assert Counter(r["x_LineKind"] for r in rows.values()) == Counter(api=2, gpu=4, idle=3, adjustment=1)
    share = rows["share-s"]
    # 0.02334375 at 2.49/GPU-hour = 0.009375 GPU-hours (75 % of the minute x 3/4 of the tokens).
    assert (share["PricingUnit"], share["PricingQuantity"], share["ListUnitPrice"]) == ("GPU-Hours", "0.009375000000", "2.490000000")
    assert (share["ResourceId"], share["ResourceType"], share["SkuId"], share["ChargeCategory"], share["ChargeClass"]) == (
        H100,
        "GPU",
        "NVIDIA H100 80GB HBM3",
        "Usage",
        "",
    )
    assert (
        share["Tags"]
        == '{"cost_centre":"cc-42","gpuledger/key_id":"key-search","gpuledger/model":"llama-3.1-8b-instruct","project":"p1","team":"search-team"}'
    )
    assert (share["ChargePeriodStart"], share["ChargePeriodEnd"], share["BillingPeriodStart"], share["BillingPeriodEnd"]) == (
        "2026-11-02T10:00:00Z",
        "2026-11-02T10:01:00Z",
        "2026-11-01T00:00:00Z",
        "2026-12-01T00:00:00Z",
    )
    assert (share["x_WindowTokens"], share["x_ShareTokens"], share["x_UtilizationPct"]) == ("4000", "3000", "75")
    assert (rows["train-1"]["x_Workload"], rows["train-1"]["x_Basis"], rows["train-1"]["ListUnitPrice"]) == (
        "ml/train-0",
        "sm",
        "0.890000000",
    )
    assert (rows["mig-idle"]["ResourceType"], rows["mig-idle"]["ListUnitPrice"]) == ("MIG instance", "1.000000000")
    assert rows["mig-free"]["ListUnitPrice"] == "" and rows["mig-free"]["PricingQuantity"] == "0.016666666667"
    adj = rows["adj-1"]
    assert (adj["ChargeCategory"], adj["ChargeClass"], adj["BilledCost"], adj["x_AdjustsLineId"], adj["PricingQuantity"]) == (
        "Adjustment",
        "Correction",
        "-0.001200000",
        "share-old",
        "",
    )
    api = rows["api:r1"]
    assert (api["ResourceId"], api["PricingUnit"], api["PricingQuantity"], api["ListUnitPrice"], api["SkuPriceId"]) == (
        "gpt-4o-mini",
        "Tokens",
        "1550.000000000000",
        "",
        "gpt-4o-mini@2026-01-01T00:00:00+00:00",
    )
    assert (api["ChargePeriodStart"], api["ChargePeriodEnd"], api["x_UsageEstimated"], api["x_ApiEquivalentCost"]) == (
        "2026-11-02T09:59:59Z",
        "2026-11-02T10:00:03Z",
        "false",
        "0.000315000",
    )
    late = rows["api:r2"]  # ends a tenth of a second before December: its period ends on the billing period's end
    assert (late["ChargePeriodEnd"], late["x_UsageEstimated"], late["x_ApiEquivalentCost"], late["SubAccountId"]) == (
        "2026-12-01T00:00:00Z",
        "true",
        "",
        "search",
    )


def test_parquet_carries_the_same_rows(exported: tuple[Path, Path]) -> None:
    table = pq.read_table(exported[1])
    from_parquet = sorted(
        tuple("" if v is None else (f"{v:f}" if isinstance(v, Decimal) else str(v)) for v in row.values()) for row in table.to_pylist()
    )
    from_csv = sorted(tuple(r.values()) for r in csv_rows(exported[0]))
    assert str(table.schema.field("BilledCost").type) == "decimal128(38, 9)"
    assert from_parquet == from_csv


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--from", "2026-11-02", "--to", "2026-11-02", "--out", "x.csv"), "is not before --to"),
        (("--from", "2026-11-01", "--to", "2026-12-01", "--format", "xlsx", "--out", "x.xlsx"), "unknown format 'xlsx'"),
        (("--from", "2026-11-01", "--to", "2026-12-01", "--out", "/nonexistent-folder/focus.csv"), "does not exist"),
    ],
)
def test_bad_arguments_exit_1_with_a_message(ledger: Settings, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = export(ledger, tmp_path, *args)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert not list(tmp_path.glob("*.csv*"))


def test_clickhouse_failure_exits_1_and_leaves_no_file(ledger: Settings, tmp_path: Path) -> None:
    missing = ledger.model_copy(update={"clickhouse": ledger.clickhouse.model_copy(update={"database": "t_focus_missing"})})
    result = export(missing, tmp_path, *RANGE, "--out", str(tmp_path / "focus.csv"))
    assert result.returncode == 1 and "ClickHouse could not serve the export" in result.stderr, result.stderr
    assert list(tmp_path.glob("focus.csv*")) == []


def test_an_interrupted_export_publishes_nothing(tmp_path: Path) -> None:
    """A failure after rows were written (say ClickHouse drops the stream) removes PATH.partial and leaves PATH as it was."""
    target = tmp_path / "focus.csv"
    target.write_text("last month's complete export\n")
    writer = open_writer(target, "csv", COLUMNS)
    with pytest.raises(RuntimeError), writer:
        writer.write([dict.fromkeys(COLUMNS, "x")])
        raise RuntimeError("stream dropped")
    assert target.read_text() == "last month's complete export\n"
    assert list(tmp_path.iterdir()) == [target]


def test_a_directory_as_target_exits_1(ledger: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    result = export(ledger, tmp_path, *RANGE, "--out", str(folder))
    assert result.returncode == 1 and "is a directory" in result.stderr, result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder, so no folder is unwritable for it")
def test_unwritable_target_exits_1(ledger: Settings, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = export(ledger, tmp_path, *RANGE, "--out", str(locked / "focus.csv"))
    assert result.returncode == 1 and "not writable" in result.stderr, result.stderr


BIG_LINES = 60_000  # the 200,000-line figures: tests/bench/focus_export_bench.py (README "FOCUS export")


def test_large_export_streams_in_bounded_memory(ledger: Settings, stack_settings: Settings, tmp_path: Path) -> None:
    """60,000 lines export within 60 MiB of the peak memory of 10 lines: only one batch of rows is held at a time
    (holding them all would take about 180 MiB more; measured 676 MiB for 200,000 before the export streamed)."""
    big = isolated(stack_settings, "focus_big")
    fill_ledger(connect(big.clickhouse), BIG_LINES)
    env = {**os.environ, **settings_env(ledger, tmp_path)}
    small = peak_rss_mib(env, *RANGE, "--out", str(tmp_path / "small.csv"))
    large = peak_rss_mib({**os.environ, **settings_env(big, tmp_path)}, *BIG_RANGE, "--out", str(tmp_path / "big.csv"))
    with (tmp_path / "big.csv").open() as f:
        assert sum(1 for _ in f) == BIG_LINES + 1
    assert large < small + 60, f"exporting {BIG_LINES:,} lines peaked at {large} MiB vs {small} MiB for {len(EXPORTED)}"
