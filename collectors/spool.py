"""Bounded on-disk spool: what Kafka could not take, kept in order until it can.

Append-only segment files ``<seq>.seg`` of framed records (length, CRC32, key length,
key, value), fsync'd on every append. Readers take whole closed segments oldest first;
when the spool would exceed its byte budget the oldest segments are deleted and their
records counted as dropped.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger()
FRAME = struct.Struct(">IIH")  # body length, crc32 of key+value, key length


@dataclass(frozen=True)
class Record:
    key: bytes
    value: bytes


def _encode(record: Record) -> bytes:
    body = record.key + record.value
    return FRAME.pack(len(body), zlib.crc32(body), len(record.key)) + body


def read_segment(path: Path) -> list[Record]:
    """Every intact record of a segment; a torn or corrupt tail (crash mid-write) is ignored."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos + FRAME.size <= len(data):
        length, crc, key_len = FRAME.unpack_from(data, pos)
        body = data[pos + FRAME.size : pos + FRAME.size + length]
        if len(body) != length or zlib.crc32(body) != crc:
            log.warning("spool segment has a torn tail; ignoring it", segment=path.name, offset=pos)
            break
        out.append(Record(body[:key_len], body[key_len:]))
        pos += FRAME.size + length
    return out


class SpoolUnavailable(RuntimeError):
    """The spool directory cannot be created or written; the message says which and why."""


class Spool:
    """Ordered, bounded, crash-safe queue of Kafka records on local disk."""

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max_bytes)
        self.dropped = 0
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / ".write-probe.tmp"
            probe.write_bytes(b"")
            probe.unlink()
            for leftover in directory.glob("*.tmp"):
                leftover.unlink()
        except OSError as exc:
            raise SpoolUnavailable(
                f"spool directory {directory} is not writable ({exc.strerror or exc}); "
                "point --spool-dir / GPULEDGER_COLLECTOR__SPOOL_DIR at a writable directory"
            ) from None
        existing = self.segments()
        self._next = (int(existing[-1].stem) + 1) if existing else 0
        self._active: Path | None = None
        self._counts: dict[Path, int] = {}

    def segments(self) -> list[Path]:
        """Segment files, oldest first."""
        return sorted(self.directory.glob("*.seg"))

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.segments())

    def __len__(self) -> int:
        return sum(self._count(p) for p in self.segments())

    def _count(self, path: Path) -> int:
        if path not in self._counts:
            self._counts[path] = len(read_segment(path))
        return self._counts[path]

    def empty(self) -> bool:
        return not self.segments()

    def append(self, records: list[Record]) -> None:
        """Append and fsync; makes room by dropping the oldest segments when over budget."""
        if not records:
            return
        blob = b"".join(_encode(r) for r in records)
        if self._active is None or not self._active.exists() or self._active.stat().st_size + len(blob) > self.segment_bytes:
            self.roll()
        self._make_room(len(blob))
        assert self._active is not None
        fd = os.open(self._active, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._counts[self._active] = self._counts.get(self._active, 0) + len(records)
        self._fsync_dir()

    def roll(self) -> None:
        """Close the active segment: later appends go to a new one (readers only take closed ones)."""
        self._active = self.directory / f"{self._next:012d}.seg"
        self._next += 1

    def _make_room(self, incoming: int) -> None:
        total = self.size_bytes()
        for oldest in self.segments():
            if total + incoming <= self.max_bytes or oldest == self._active:
                break
            size, lost = oldest.stat().st_size, self._count(oldest)
            oldest.unlink()
            self._counts.pop(oldest, None)
            total -= size
            self.dropped += lost
            log.warning("spool full; dropped the oldest segment", segment=oldest.name, records=lost)

    def oldest(self) -> tuple[Path, list[Record]] | None:
        """The oldest segment and its records, closing the active one first so nothing is appended to it meanwhile."""
        segments = self.segments()
        if not segments:
            return None
        if segments[0] == self._active:
            self.roll()
        return segments[0], read_segment(segments[0])

    def done(self, segment: Path, remaining: list[Record] | None = None) -> None:
        """Mark a segment delivered (delete it), or keep only ``remaining`` of it (atomic rewrite)."""
        self._counts.pop(segment, None)
        if not remaining:
            segment.unlink(missing_ok=True)
        else:
            tmp = segment.with_suffix(".tmp")
            with tmp.open("wb") as f:
                f.write(b"".join(_encode(r) for r in remaining))
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(segment)
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
