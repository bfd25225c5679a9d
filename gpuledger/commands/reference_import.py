"""``gpuledger orgs import`` and ``gpuledger prices import``: validate a YAML or CSV file, publish it.

Rows are validated in full before anything is published, so a file with one bad
row changes nothing; errors name the file, the row, its line and the field. Refused:
binary or non-UTF-8 files (a UTF-8 byte-order mark is fine), YAML with a key given
twice in one mapping, two rows for the same thing (an org entry's kind+key, a price's
kind+SKU+effective time), and prices the ledger cannot hold (``gpuledger.limits``).
"""

from __future__ import annotations

import csv
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from gpuledger.kafka import ensure_topics, publish_acked, read_records, table_topic
from gpuledger.limits import aware_utc as _aware
from gpuledger.limits import price_problem
from gpuledger.settings import Settings
from schemas import ModelEquivalent, OrgDirectory, Price, codec_for
from schemas.keys import equivalent_key, org_key, price_key

T = TypeVar("T")


class ReferenceFileError(ValueError):
    """A reference file that cannot be imported; the message lists every problem found."""


def _fits_ledger(value: Decimal) -> Decimal:
    problem = price_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Money = Annotated[Decimal, Field(ge=0, allow_inf_nan=False), AfterValidator(_fits_ledger)]


class OrgRow(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    kind: Literal["api_key", "namespace", "node"]
    key: str = Field(min_length=1)
    org: str = Field(min_length=1)
    team: str = ""
    project: str = ""
    cost_centre: str = ""

    def record(self) -> OrgDirectory:
        return OrgDirectory(**self.model_dump())


class PriceRow(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    sku: str = Field(min_length=1)
    kind: Literal["token", "gpu_hour"]
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    effective_from: Annotated[datetime, AfterValidator(_aware)]
    input_per_mtok: Money | None = None
    cached_input_per_mtok: Money | None = None
    output_per_mtok: Money | None = None
    per_hour: Money | None = None

    @model_validator(mode="after")
    def _fields_for_kind(self) -> PriceRow:
        if self.kind == "token" and (self.input_per_mtok is None or self.output_per_mtok is None):
            raise ValueError("a token price needs input_per_mtok and output_per_mtok")
        if self.kind == "gpu_hour" and self.per_hour is None:
            raise ValueError("a gpu_hour price needs per_hour")
        return self

    def record(self) -> Price:
        return Price(**self.model_dump())


class EquivalentRow(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    model: str = Field(min_length=1)
    api_sku: str = Field(min_length=1)
    effective_from: Annotated[datetime, AfterValidator(_aware)]

    def record(self) -> ModelEquivalent:
        return ModelEquivalent(**self.model_dump())


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ReferenceFileError(
                    f"{self.name}: line {line}: key {key!r} appears twice in one mapping (first on line {seen[key]}); keep one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _text(path: Path) -> str:
    if not path.is_file():
        raise ReferenceFileError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        if b"\x00" in data:
            raise UnicodeDecodeError("utf-8", data, data.index(b"\x00"), data.index(b"\x00") + 1, "NUL byte")
        return data.decode("utf-8-sig")  # a byte-order mark (Excel's CSV export) is fine
    except UnicodeDecodeError as exc:
        raise ReferenceFileError(f"{path}: not a UTF-8 text file (byte {exc.start}: {exc.reason}); expected YAML or CSV") from None


def load_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """A YAML file's data and node tree (for line numbers); ReferenceFileError for binary files, invalid YAML, duplicate keys."""
    text = _text(path)
    try:
        loader = _UniqueKeyLoader(text)
        loader.name = str(path)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ReferenceFileError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    return data, node


def _read_rows(path: Path, section: str) -> list[tuple[int, Any]]:
    """(line number, row) for each row of the file."""
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(_text(path).splitlines(keepends=True))
        return [
            (reader.line_num, {k if k is not None else "fields beyond the header": v for k, v in row.items() if v not in ("", None)})
            for row in reader
        ]
    data, node = load_yaml(path)
    rows = data.get(section) if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise ReferenceFileError(f"{path}: expected a list under '{section}:' (or a CSV file with a header row)")
    return list(zip(_item_lines(node, section), rows, strict=True))


def _item_lines(node: yaml.Node | None, section: str) -> list[int]:
    """The line each item of the rows list starts on."""
    if isinstance(node, yaml.MappingNode):
        node = next((v for k, v in node.value if k.value == section), node)
    return [item.start_mark.line + 1 for item in node.value] if isinstance(node, yaml.SequenceNode) else []


def _identity(record: Any) -> str:
    if isinstance(record, Price):
        return f"{record.kind} price for {record.sku!r} effective {record.effective_from.isoformat()}"
    if isinstance(record, ModelEquivalent):
        return f"equivalent for {record.model!r} effective {record.effective_from.isoformat()}"
    return f"{record.kind} {record.key!r}"


def row_problems(where: str, exc: ValidationError) -> list[str]:
    """One line per field a row got wrong: ``<where>: <field>: <what pydantic says>``."""
    return [f"{where}: {'.'.join(str(p) for p in error['loc']) or 'row'}: {error['msg']}" for error in exc.errors()]


def all_or_nothing(path: Path, records: list[T], problems: list[str], what: str = "rows") -> list[T]:
    """``records`` if no row had a problem, else ``ReferenceFileError`` listing them all: a file is imported whole or not at all."""
    if problems:
        raise ReferenceFileError("nothing imported; fix these rows:\n  " + "\n  ".join(problems))
    if not records:
        raise ReferenceFileError(f"{path}: no {what} to import")
    return records


def parse_rows(path: Path, section: str, model: type[OrgRow] | type[PriceRow] | type[EquivalentRow]) -> list[Any]:
    """Every row as a typed record, or ReferenceFileError listing all bad rows."""
    problems: list[str] = []
    records: list[Any] = []
    first: dict[str, int] = {}  # identity -> the line it first appeared on
    for number, (line, row) in enumerate(_read_rows(path, section), start=1):
        try:
            record = model.model_validate(row).record()
        except ValidationError as exc:
            problems += row_problems(f"{path} row {number} (line {line})", exc)
            continue
        identity = _identity(record)
        if identity in first:
            problems.append(f"{path} row {number} (line {line}): duplicate {identity} (already on line {first[identity]}); keep one")
        first.setdefault(identity, line)
        records.append(record)
    return all_or_nothing(path, records, problems)


async def publish(settings: Settings, table: str, items: list[tuple[bytes, bytes | None]]) -> None:
    """Write keyed records (``None``: a tombstone) to a reference table's compacted topic; ``PublishRefused`` unless all acked."""
    await ensure_topics(settings)
    topic = table_topic(settings, table)
    await publish_acked(settings.kafka, [(topic, key, value, []) for key, value in items])


async def import_orgs(settings: Settings, path: Path) -> list[OrgDirectory]:
    orgs = parse_rows(path, "orgs", OrgRow)
    encode = codec_for(OrgDirectory).encode
    await publish(settings, "orgs", [(org_key(o.kind, o.key), encode(o)) for o in orgs])
    return orgs


async def import_prices(settings: Settings, path: Path) -> list[Price]:
    prices = parse_rows(path, "prices", PriceRow)
    encode = codec_for(Price).encode
    await publish(settings, "prices", [(price_key(p), encode(p)) for p in prices])
    return prices


async def import_equivalents(settings: Settings, path: Path) -> list[ModelEquivalent]:
    """Validate and publish API equivalents: all or nothing; each API SKU must have a token price."""
    equivalents = parse_rows(path, "equivalents", EquivalentRow)
    prices = await read_records(settings.kafka, table_topic(settings, "prices"), Price)
    priced = {p.sku for p in prices if p.kind == "token"}
    problems = [
        f"{path} row {number}: api_sku {e.api_sku!r} has no token price; priced SKUs: {', '.join(sorted(priced)) or 'none (import prices first)'}"
        for number, e in enumerate(equivalents, start=1)
        if e.api_sku not in priced
    ]
    all_or_nothing(path, equivalents, problems)
    encode = codec_for(ModelEquivalent).encode
    await publish(settings, "equivalents", [(equivalent_key(e), encode(e)) for e in equivalents])
    return equivalents
