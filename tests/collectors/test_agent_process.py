"""The agent as a real process: /metrics, /healthz, Kafka away -> spool, SIGTERM flushes; the no-GPU error."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from collectors.spool import Spool
from schemas import GpuSample, codec_for

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def collector_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULEDGER_")}
    return {
        **env,
        "GPULEDGER_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing listens there
        "GPULEDGER_LOG_FORMAT": "json",
        "NODE_NAME": "proc-node",
        "GPULEDGER_COLLECTOR_POLL_SECONDS": "0.1",
    }


def test_kafka_away_spools_and_sigterm_flushes(tmp_path: Path) -> None:
    port, spool_dir = free_port(), tmp_path / "spool"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collectors.cli",
            "--source",
            "simulated",
            "--gpus",
            "3",
            "--interval",
            "0.5",
            "--spool-dir",
            str(spool_dir),
            "--metrics-port",
            str(port),
        ],
        cwd=ROOT,
        env=collector_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        samples = 0.0
        while time.monotonic() < deadline:
            try:
                samples = metric(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text, "gpuledger_collector_samples_total")
                if samples >= 9:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert samples >= 9, "no samples within 20 s"
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        assert health.status_code == 503  # NVML (simulated) fine, Kafka never reached
        assert health.json()["nvml_ok"] is True and health.json()["kafka_ok"] is False
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        assert metric(text, "gpuledger_collector_published_total") == 0
        assert metric(text, "gpuledger_collector_devices") == 3
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out.decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    spooled = []
    spool = Spool(spool_dir, max_bytes=10**9, segment_bytes=10**9)
    while (oldest := spool.oldest()) is not None:
        segment, records = oldest
        spooled += [codec_for(GpuSample).decode(r.value) for r in records]
        spool.done(segment)
    ids = [s.sample_id for s in spooled]
    assert len(ids) == len(set(ids)) and len(ids) >= 9
    assert len(ids) % 3 == 0  # whole intervals, including the partial one SIGTERM cut short
    assert {s.node for s in spooled} == {"proc-node"}
    starts = sorted({s.interval_start for s in spooled})
    assert all(int(s.timestamp() * 1000) % 500 == 0 for s in starts)  # wall-clock aligned intervals


def test_no_gpu_gives_a_clear_error_and_points_to_simulated(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "collectors.cli", "--source", "nvml", "--once", "--spool-dir", str(tmp_path), "--metrics-port", "0"],
        cwd=ROOT,
        env={**collector_env(tmp_path), "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert "libnvidia-ml.so.1" in result.stderr and "--source simulated" in result.stderr
    assert "Traceback" not in result.stderr
