"""The on-disk spool on its own: order, bounds, crash safety, restart."""

from __future__ import annotations

from pathlib import Path

from collectors.spool import Record, Spool, read_segment


def recs(start: int, n: int, size: int = 100) -> list[Record]:
    return [Record(f"gpu-{i % 3}".encode(), f"{i:06d}".encode().ljust(size, b".")) for i in range(start, start + n)]


def drain(spool: Spool) -> list[Record]:
    out = []
    while (oldest := spool.oldest()) is not None:
        segment, records = oldest
        out += records
        spool.done(segment)
    return out


def test_order_kept_across_segments_and_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1_000_000, segment_bytes=4096)
    for k in range(10):
        spool.append(recs(k * 10, 10))
    assert len(spool.segments()) > 2 and len(spool) == 100
    reopened = Spool(tmp_path, max_bytes=1_000_000, segment_bytes=4096)  # a new process after a crash
    reopened.append(recs(100, 5))
    assert [r.value[:6] for r in drain(reopened)] == [f"{i:06d}".encode() for i in range(105)]
    assert reopened.empty() and len(reopened) == 0


def test_full_spool_drops_oldest_and_counts(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=8192, segment_bytes=4096)
    for k in range(20):
        spool.append(recs(k * 5, 5))  # ~560 B per append, ~11 KB in all
    assert spool.size_bytes() <= 8192
    kept = [int(r.value[:6]) for r in drain(spool)]
    assert spool.dropped > 0 and spool.dropped + len(kept) == 100
    assert kept == list(range(100 - len(kept), 100))  # the newest survive, in order


def test_partial_delivery_rewrites_segment_with_the_rest(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1_000_000, segment_bytes=1_000_000)
    spool.append(recs(0, 6))
    segment, records = spool.oldest()  # type: ignore[misc]
    spool.done(segment, records[4:])
    spool.append(recs(6, 2))  # goes to a new segment: the old one was closed by oldest()
    assert [int(r.value[:6]) for r in drain(spool)] == [4, 5, 6, 7]


def test_torn_tail_is_ignored(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1_000_000, segment_bytes=1_000_000)
    spool.append(recs(0, 3))
    [segment] = spool.segments()
    segment.write_bytes(segment.read_bytes()[:-7])  # crash mid-write of the last record
    assert [int(r.value[:6]) for r in read_segment(segment)] == [0, 1]
    corrupt = bytearray(segment.read_bytes())
    corrupt[20] ^= 0xFF
    segment.write_bytes(bytes(corrupt))
    assert read_segment(segment) == []  # first record's CRC fails: nothing after it is trusted
