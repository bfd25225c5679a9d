"""Reference files: every bad row reported at once, nothing published from a bad file."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from gpuledger.commands.reference_import import OrgRow, PriceRow, ReferenceFileError, parse_rows

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "gpuledger" / "data" / "demo"


def test_the_demo_files_parse() -> None:
    orgs = parse_rows(DEMO / "orgs.yaml", "orgs", OrgRow)
    assert len(orgs) == len({(o.kind, o.key) for o in orgs}) == 11
    prices = parse_rows(DEMO / "prices.yaml", "prices", PriceRow)
    assert prices[0].input_per_mtok == Decimal("0.15") and prices[2].per_hour == Decimal("2.49")


def test_bad_rows_are_all_listed_with_row_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "prices.yaml"
    bad.write_text(
        "prices:\n"
        "  - {sku: a, kind: token, effective_from: '2026-01-01T00:00:00Z', input_per_mtok: '-1', output_per_mtok: '1'}\n"
        "  - {sku: b, kind: gpu_hour, effective_from: '2026-01-01T00:00:00Z'}\n"
        "  - {sku: c, kind: token, currency: usd, effective_from: '2026-01-01T00:00:00', input_per_mtok: 1, output_per_mtok: 1}\n"
    )
    with pytest.raises(ReferenceFileError) as err:
        parse_rows(bad, "prices", PriceRow)
    message = str(err.value)
    assert "nothing imported" in message
    assert f"{bad} row 1 (line 2): input_per_mtok: Input should be greater than or equal to 0" in message
    assert "row 2 (line 3): row: Value error, a gpu_hour price needs per_hour" in message
    assert "row 3 (line 4): currency: String should match pattern" in message
    assert "row 3 (line 4): effective_from: Value error, needs a time zone" in message


def test_csv_directory_and_unknown_kind(tmp_path: Path) -> None:
    good = tmp_path / "orgs.csv"
    good.write_text("kind,key,org,team\napi_key,k1,search,ranking\nnamespace,ns1,support,\n")
    rows = parse_rows(good, "orgs", OrgRow)
    assert [(r.kind, r.key, r.org, r.team) for r in rows] == [("api_key", "k1", "search", "ranking"), ("namespace", "ns1", "support", "")]
    bad = tmp_path / "bad.csv"
    bad.write_text("kind,key,org\nteam,k1,search\n")
    with pytest.raises(ReferenceFileError, match=r"row 1 \(line 2\): kind: Input should be 'api_key', 'namespace' or 'node'"):
        parse_rows(bad, "orgs", OrgRow)


def test_missing_file_and_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(ReferenceFileError, match="no such file"):
        parse_rows(tmp_path / "nope.yaml", "orgs", OrgRow)
    shape = tmp_path / "shape.yaml"
    shape.write_text("orgs: {kind: api_key}\n")
    with pytest.raises(ReferenceFileError, match="expected a list under 'orgs:'"):
        parse_rows(shape, "orgs", OrgRow)


def _refusal(path: Path, section: str = "prices") -> str:
    with pytest.raises(ReferenceFileError) as err:
        parse_rows(path, section, PriceRow if section == "prices" else OrgRow)
    return str(err.value)


def test_duplicate_rows_are_refused_with_their_lines(tmp_path: Path) -> None:
    csv_file = tmp_path / "prices.csv"
    csv_file.write_text(
        "sku,kind,effective_from,input_per_mtok,output_per_mtok\n"
        "m,token,2026-01-01T00:00:00Z,1,2\n"
        "n,token,2026-01-01T00:00:00Z,1,2\n"
        "m,token,2026-01-01T00:00:00+00:00,3,4\n"
    )
    assert "row 3 (line 4): duplicate token price for 'm' effective 2026-01-01T00:00:00+00:00 (already on line 2)" in _refusal(csv_file)
    orgs = tmp_path / "orgs.yaml"
    orgs.write_text(
        "orgs:\n  - {kind: api_key, key: k1, org: a}\n  - {kind: node, key: k1, org: a}\n  - {kind: api_key, key: k1, org: b}\n"
    )
    assert "row 3 (line 4): duplicate api_key 'k1' (already on line 2)" in _refusal(orgs, "orgs")


def test_duplicate_yaml_keys_binary_files_and_a_bom(tmp_path: Path) -> None:
    dup = tmp_path / "prices.yaml"
    dup.write_text("prices:\n  - sku: m\n    kind: token\n    input_per_mtok: 1\n    input_per_mtok: 100\n")
    assert "line 5: key 'input_per_mtok' appears twice in one mapping (first on line 4)" in _refusal(dup)
    binary = tmp_path / "prices.csv"
    binary.write_bytes(b"sku,kind\n\x89PNG\x00\x01\xff")
    assert _refusal(binary) == f"{binary}: not a UTF-8 text file (byte 13: NUL byte); expected YAML or CSV"
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("prices:\n  - sku: caf\xe9\n".encode("latin-1"))
    assert "not a UTF-8 text file" in _refusal(latin)
    extra = tmp_path / "extra.csv"
    extra.write_text("kind,key,org\napi_key,k1,search,oops\n")
    assert "row 1 (line 2): fields beyond the header: Extra inputs are not permitted" in _refusal(extra, "orgs")
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfsku,kind,effective_from,per_hour\nH100,gpu_hour,2026-01-01T00:00:00Z,2.49\n")
    assert parse_rows(bom, "prices", PriceRow)[0].per_hour == Decimal("2.49")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("12345678901234567890123456789", "is above the largest accepted price 1,000,000,000"),
        ("0.0000000001", "has more than 9 decimal places"),
        ("NaN", "Input should be a finite number"),
        ("Infinity", "Input should be a finite number"),
    ],
)
def test_prices_the_ledger_cannot_hold_are_refused(tmp_path: Path, value: str, why: str) -> None:
    path = tmp_path / "prices.csv"
    path.write_text(f"sku,kind,effective_from,input_per_mtok,output_per_mtok\nm,token,2026-01-01T00:00:00Z,{value},1\n")
    assert why in _refusal(path)


def test_the_cli_refuses_with_exit_code_1_and_no_traceback(tmp_path: Path) -> None:
    binary = tmp_path / "prices.yaml"
    binary.write_bytes(bytes(range(256)))
    env = {**os.environ, "GPULEDGER_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}  # refused before Kafka is needed
    done = subprocess.run(
        [sys.executable, "-m", "gpuledger.commands.cli", "prices", "import", str(binary)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 1, done
    assert "not a UTF-8 text file" in done.stdout and "Traceback" not in done.stdout + done.stderr
