"""Reference files: every bad row reported at once, nothing published from a bad file."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gpuledger.reference_import import OrgRow, PriceRow, ReferenceFileError, parse_rows

DEMO = Path(__file__).resolve().parents[1] / "deploy" / "local" / "demo"


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
    assert f"{bad} row 1: input_per_mtok: Input should be greater than or equal to 0" in message
    assert "row 2: row: Value error, a gpu_hour price needs per_hour" in message
    assert "row 3: currency: String should match pattern" in message
    assert "row 3: effective_from: Value error, needs a time zone" in message


def test_csv_directory_and_unknown_kind(tmp_path: Path) -> None:
    good = tmp_path / "orgs.csv"
    good.write_text("kind,key,org,team\napi_key,k1,search,ranking\nnamespace,ns1,support,\n")
    rows = parse_rows(good, "orgs", OrgRow)
    assert [(r.kind, r.key, r.org, r.team) for r in rows] == [("api_key", "k1", "search", "ranking"), ("namespace", "ns1", "support", "")]
    bad = tmp_path / "bad.csv"
    bad.write_text("kind,key,org\nteam,k1,search\n")
    with pytest.raises(ReferenceFileError, match="row 1: kind: Input should be 'api_key', 'namespace' or 'node'"):
        parse_rows(bad, "orgs", OrgRow)


def test_missing_file_and_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(ReferenceFileError, match="no such file"):
        parse_rows(tmp_path / "nope.yaml", "orgs", OrgRow)
    shape = tmp_path / "shape.yaml"
    shape.write_text("orgs: {kind: api_key}\n")
    with pytest.raises(ReferenceFileError, match="expected a list under 'orgs:'"):
        parse_rows(shape, "orgs", OrgRow)
