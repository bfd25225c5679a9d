"""``gpuledger orgs import`` and ``gpuledger prices import``: validate a YAML or CSV file, publish it.

Rows are validated in full before anything is published, so a file with one bad
row changes nothing; errors name the file, the row and the field.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from gpuledger.kafka import ensure_topics, new_producer, read_compacted, table_topic
from gpuledger.settings import Settings
from schemas import ModelEquivalent, OrgDirectory, Price, codec_for
from schemas.keys import equivalent_key, org_key, price_key


class ReferenceFileError(ValueError):
    """A reference file that cannot be imported; the message lists every problem found."""


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("needs a time zone, e.g. 2026-01-01T00:00:00Z")
    return value.astimezone(UTC)


Money = Annotated[Decimal, Field(ge=0, max_digits=38, decimal_places=9)]


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


def _read_rows(path: Path, section: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ReferenceFileError(f"{path}: no such file")
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            return [{k: v for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]
    data = yaml.safe_load(path.read_text())
    rows = data.get(section) if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise ReferenceFileError(f"{path}: expected a list under '{section}:' (or a CSV file with a header row)")
    return rows


def parse_rows(path: Path, section: str, model: type[OrgRow] | type[PriceRow] | type[EquivalentRow]) -> list[Any]:
    """Every row as a typed record, or ReferenceFileError listing all bad rows."""
    problems, records = [], []
    for number, row in enumerate(_read_rows(path, section), start=1):
        try:
            records.append(model.model_validate(row).record())
        except ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(p) for p in error["loc"]) or "row"
                problems.append(f"{path} row {number}: {where}: {error['msg']}")
    if problems:
        raise ReferenceFileError("nothing imported; fix these rows:\n  " + "\n  ".join(problems))
    if not records:
        raise ReferenceFileError(f"{path}: no rows to import")
    return records


async def publish(settings: Settings, table: str, items: list[tuple[bytes, bytes | None]]) -> None:
    """Write keyed records (``None``: a tombstone) to a reference table's compacted topic and wait for acks."""
    await ensure_topics(settings)
    producer = new_producer(settings.kafka)
    await producer.start()
    try:
        for key, value in items:
            await producer.send(table_topic(settings, table), key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


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
    """Validate and publish API equivalents: all or nothing, each API SKU must have a token price."""
    equivalents = parse_rows(path, "equivalents", EquivalentRow)
    problems = []
    seen: dict[tuple[str, datetime], int] = {}
    for number, e in enumerate(equivalents, start=1):
        if (e.model, e.effective_from) in seen:
            problems.append(f"{path} row {number}: model {e.model!r} from {e.effective_from.isoformat()} repeats row {seen[(e.model, e.effective_from)]}")
        seen.setdefault((e.model, e.effective_from), number)
    priced = {p.sku for p in map(codec_for(Price).decode, (await read_compacted(settings.kafka, table_topic(settings, "prices"))).values()) if p.kind == "token"}
    for number, e in enumerate(equivalents, start=1):
        if e.api_sku not in priced:
            problems.append(f"{path} row {number}: api_sku {e.api_sku!r} has no token price; priced SKUs: {', '.join(sorted(priced)) or 'none (import prices first)'}")
    if problems:
        raise ReferenceFileError("nothing imported; fix these rows:\n  " + "\n  ".join(problems))
    encode = codec_for(ModelEquivalent).encode
    await publish(settings, "equivalents", [(equivalent_key(e), encode(e)) for e in equivalents])
    return equivalents
