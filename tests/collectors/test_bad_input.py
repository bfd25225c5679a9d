"""The collector under bad input and a hostile host: what cannot be encoded is skipped and counted;
an unusable spool directory or metrics port ends with one clear line and exit code 5 (README "Exit codes")."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from collectors.publisher import PublisherStats, encode_samples
from schemas import GpuSample, codec_for
from tests.collectors.test_agent_process import ROOT, collector_env

PORT = int(os.environ.get("GPULEDGER_TEST_PORT_BASE", "29000")) + 320
T0 = datetime(2026, 11, 1, tzinfo=UTC)
SAMPLE = GpuSample(
    sample_id="n/g/1",
    node="n",
    gpu_uuid="GPU-1",
    gpu_index=0,
    gpu_model="NVIDIA H100 80GB HBM3",
    interval_start=T0,
    interval_end=T0 + timedelta(seconds=5),
    utilization_pct=10.0,
    memory_used_bytes=1,
    memory_total_bytes=2,
    power_watts=1.0,
)


def test_an_unencodable_sample_is_skipped_and_counted_and_the_others_go_on() -> None:
    stats = PublisherStats()
    bad = replace(SAMPLE, sample_id="n/g/2", gpu_index=None)  # type: ignore[arg-type]  # a field NVML left unset
    worse = replace(SAMPLE, sample_id="n/g/3", memory_used_bytes=10**30)  # beyond Avro long
    records = encode_samples([SAMPLE, bad, worse, replace(SAMPLE, sample_id="n/g/4")], stats)
    assert [codec_for(GpuSample).decode(r.value).sample_id for r in records] == ["n/g/1", "n/g/4"]
    assert stats.unencodable == 2


def _collector(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collectors.cli", "--source", "simulated", "--once", *args],
        cwd=ROOT,
        env={**collector_env(tmp_path), "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_unwritable_spool_directory_exits_5_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = _collector(tmp_path, "--spool-dir", str(blocker / "spool"), "--metrics-port", "0")
    assert result.returncode == 5, result
    assert result.stderr.strip().splitlines() == [
        f"error: spool directory {blocker / 'spool'} is not writable (Not a directory); "
        "point --spool-dir / GPULEDGER_COLLECTOR__SPOOL_DIR at a writable directory"
    ]


def test_a_metrics_port_in_use_exits_5_with_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", PORT)):
        result = _collector(tmp_path, "--spool-dir", str(tmp_path / "spool"), "--metrics-port", str(PORT))
    assert result.returncode == 5, result
    assert f"error: cannot serve /metrics on 127.0.0.1:{PORT}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_spool_that_cannot_be_written_loses_records_counted_and_the_publisher_goes_on(tmp_path: Path) -> None:
    """Kafka away (nothing listens on the port) and the spool's directory gone (a disk unmounted): each failed
    spool write is logged and counted, and the sender keeps running for when either comes back."""
    import asyncio
    import shutil

    from collectors.publisher import Publisher
    from collectors.spool import Record, Spool
    from gpuledger.settings import KafkaSettings

    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, segment_bytes=1 << 16)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    publisher = Publisher(KafkaSettings(bootstrap_servers=f"127.0.0.1:{dead}"), "t", spool, request_timeout_ms=500, retry_seconds=0.1)
    shutil.rmtree(tmp_path / "spool")
    (tmp_path / "spool").write_text("now a file")
    publisher.start()
    try:
        publisher.publish([Record(b"k", b"v1"), Record(b"k", b"v2")])
        for _ in range(100):
            if publisher.stats.spool_failures >= 2:
                break
            await asyncio.sleep(0.05)
        publisher.publish([Record(b"k", b"v3")])
        assert publisher.stats.spool_failures == 3
        assert publisher._task is not None and not publisher._task.done()  # noqa: SLF001 - the sender is alive
    finally:
        await publisher.close(timeout=0.5)
