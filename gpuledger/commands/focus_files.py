"""Writers for the FOCUS export: CSV rows or Parquet row groups, appended batch by batch so memory stays flat.

Both write to ``PATH.partial`` and rename it onto ``PATH`` only once the export finished, so a failed or
interrupted export never leaves a truncated file that a FinOps tool would import as complete.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self

# A column's type in the file: money and quantities are exact decimals (Parquet decimal128), the rest strings.
ColumnType = Literal["money", "quantity", "string"]
MONEY_SCALE, QUANTITY_SCALE = 9, 12
FORMATS = ("csv", "parquet")


class ExportFileError(Exception):
    """The output cannot be written (bad format, unwritable path, missing pyarrow)."""


def check_target(path: Path, fmt: str) -> None:
    """Refuse before querying anything: an unknown format or a folder the export cannot create its file in."""
    if fmt not in FORMATS:
        raise ExportFileError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if path.is_dir():
        raise ExportFileError(f"--out {path} is a directory; give a file path, e.g. {path / ('focus.' + fmt)}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ExportFileError(f"--out {path}: the folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ExportFileError(f"--out {path}: not writable by this user; choose another path")
    if fmt == "parquet":
        _pyarrow()


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise ExportFileError("--format parquet needs pyarrow: pip install 'gpuledger[focus]' (or use --format csv)") from exc
    return pyarrow


def _text(value: object) -> str:
    """CSV cell: decimals in plain notation (never 1E-7), null as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value:f}"
    return str(value)


class PartialFile:
    """A file written as ``PATH.partial``: ``close`` publishes it under ``PATH``, ``abort`` removes it.

    ``with writer:`` closes (publishes) the file on success and removes the partial file on failure.
    """

    def __init__(self, path: Path) -> None:
        self.path, self.partial = path, path.with_name(path.name + ".partial")

    def _close_file(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._close_file()
        self.partial.replace(self.path)

    def abort(self) -> None:
        self._close_file()
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


class CsvRows(PartialFile):
    """CSV with a header row; null is an empty cell (what focus-validator and most FinOps tools read as null)."""

    def __init__(self, path: Path, columns: Mapping[str, ColumnType]) -> None:
        super().__init__(path)
        self.columns = list(columns)
        self.file: IO[str] = self.partial.open("w", newline="", encoding="utf-8")
        self.csv = csv.writer(self.file)
        self.csv.writerow(self.columns)

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.csv.writerows([cell if type(cell) is str else _text(cell) for cell in map(row.__getitem__, self.columns)] for row in rows)

    def _close_file(self) -> None:
        self.file.close()


class ParquetRows(PartialFile):
    """Parquet, one row group per batch; money as decimal128(38, 9) and quantities as decimal128(38, 12), exact."""

    def __init__(self, path: Path, columns: Mapping[str, ColumnType]) -> None:
        super().__init__(path)
        self.pa = pa = _pyarrow()
        types = {"money": pa.decimal128(38, MONEY_SCALE), "quantity": pa.decimal128(38, QUANTITY_SCALE), "string": pa.string()}
        self.schema = pa.schema([(name, types[kind]) for name, kind in columns.items()])
        self.writer = pa.parquet.ParquetWriter(str(self.partial), self.schema, compression="zstd")

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            arrays = [self.pa.array([row[f.name] for row in rows], type=f.type) for f in self.schema]
            self.writer.write_table(self.pa.Table.from_arrays(arrays, schema=self.schema))

    def _close_file(self) -> None:
        self.writer.close()


def open_writer(path: Path, fmt: str, columns: Mapping[str, ColumnType]) -> CsvRows | ParquetRows:
    """The writer for ``fmt`` at ``path`` (``check_target`` it first, before any query: this only opens the file)."""
    return CsvRows(path, columns) if fmt == "csv" else ParquetRows(path, columns)
