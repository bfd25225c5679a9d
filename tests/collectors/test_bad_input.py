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
SAMPLE = GpuSample(sample_id="n/g/1", node="n", gpu_uuid="GPU-1", gpu_index=0, gpu_model="NVIDIA H100 80GB HBM3", interval_start=T0,
                   interval_end=T0 + timedelta(seconds=5), utilization_pct=10.0, memory_used_bytes=1, memory_total_bytes=2, power_watts=1.0)


def test_an_unencodable_sample_is_skipped_and_counted_and_the_others_go_on() -> None:
    stats = PublisherStats()
    bad = replace(SAMPLE, sample_id="n/g/2", gpu_index=None)  # type: ignore[arg-type]  # a field NVML left unset
    worse = replace(SAMPLE, sample_id="n/g/3", memory_used_bytes=10**30)  # beyond Avro long
    records = encode_samples([SAMPLE, bad, worse, replace(SAMPLE, sample_id="n/g/4")], stats)
    assert [codec_for(GpuSample).decode(r.value).sample_id for r in records] == ["n/g/1", "n/g/4"]
    assert stats.unencodable == 2


def _collector(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collectors.cli", "--source", "simulated", "--once", *args],
                          cwd=ROOT, env={**collector_env(tmp_path), "COLUMNS": "400"}, capture_output=True, text=True, timeout=60)


def test_an_unwritable_spool_directory_exits_5_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = _collector(tmp_path, "--spool-dir", str(blocker / "spool"), "--metrics-port", "0")
    assert result.returncode == 5, result
    assert result.stderr.strip().splitlines() == [
        f"error: spool directory {blocker / 'spool'} is not writable (Not a directory); "
        "point --spool-dir / GPULEDGER_COLLECTOR_SPOOL_DIR at a writable directory"]


def test_a_metrics_port_in_use_exits_5_with_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", PORT)):
        result = _collector(tmp_path, "--spool-dir", str(tmp_path / "spool"), "--metrics-port", str(PORT))
    assert result.returncode == 5, result
    assert f"error: cannot serve /metrics on 127.0.0.1:{PORT}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr
