"""Per-GPU figures on the collector's /metrics, labelled like dcgm-exporter's, and valid for promtool."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from collectors.metrics import GpuGauges
from schemas import GpuProcess, GpuSample
from tests.collectors.test_agent_process import ROOT, collector_env, free_port
from tests.promtool import check_metrics

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def sample(uuid: str, index: int, energy: float, *, pods: list[tuple[str, str]], xid: int = 0, mig: str | None = None) -> GpuSample:
    return GpuSample(
        sample_id=f"{uuid}-{energy}",
        node="node-a",
        gpu_uuid=uuid,
        gpu_index=index,
        gpu_model="NVIDIA H100 80GB HBM3",
        interval_start=T0,
        interval_end=T0 + timedelta(seconds=10),
        utilization_pct=87.5,
        memory_used_bytes=40 * 2**30,
        memory_total_bytes=80 * 2**30,
        power_watts=512.25,
        energy_joules=energy,
        energy_counter_mj=None if mig else 123_456_789,
        temperature_c=61,
        xid_errors=xid,
        ecc_errors_corrected=1,
        mig_instance=mig,
        processes=[GpuProcess(pid=i + 1, pod=pod, namespace=ns) for i, (ns, pod) in enumerate(pods)],
    )


def exposition(gauges: GpuGauges) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(gauges)  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def test_gpu_figures_labels_and_running_totals() -> None:
    gauges = GpuGauges()
    gauges.update(
        [
            sample("GPU-a", 0, 5000.0, pods=[("ml", "trainer-0"), ("ml", "trainer-0")], xid=1),
            sample("GPU-b", 1, 100.0, pods=[("ml", "a"), ("web", "b")]),
        ]
    )
    gauges.update([sample("GPU-a", 0, 2500.5, pods=[("ml", "trainer-0")], xid=2), sample("GPU-c", 2, 1.0, pods=[], mig="MIG-1g.10gb-3")])
    text = exposition(gauges)
    check_metrics(text)
    values = {(m.name, tuple(sorted(m.labels.items()))): m.value for family in text_string_to_metric_families(text) for m in family.samples}
    a = {
        "gpu": "0",
        "uuid": "GPU-a",
        "device": "nvidia0",
        "model_name": "NVIDIA H100 80GB HBM3",
        "hostname": "node-a",
        "gpu_i_id": "",
        "namespace": "ml",
        "pod": "trainer-0",
    }

    def of(name: str, **extra: str) -> float:
        return values[(name, tuple(sorted({**a, **extra}.items())))]

    assert (of("gpuledger_gpu_utilization_percent"), of("gpuledger_gpu_memory_used_bytes"), of("gpuledger_gpu_memory_total_bytes")) == (
        87.5,
        40 * 2**30,
        80 * 2**30,
    )
    assert (of("gpuledger_gpu_power_watts"), of("gpuledger_gpu_temperature_celsius"), of("gpuledger_gpu_driver_energy_joules_total")) == (
        512.25,
        61,
        123456.789,
    )
    assert (of("gpuledger_gpu_energy_joules_total"), of("gpuledger_gpu_xid_errors_total")) == (7500.5, 3), "counters sum the intervals"
    assert (of("gpuledger_gpu_ecc_errors_total", type="corrected"), of("gpuledger_gpu_ecc_errors_total", type="uncorrected")) == (2, 0)
    uuids = {dict(labels)["uuid"]: dict(labels) for name, labels in values if name == "gpuledger_gpu_power_watts"}
    assert set(uuids) == {"GPU-a", "GPU-c"}, "a GPU gone from the last interval is no longer reported"
    assert (uuids["GPU-c"]["gpu_i_id"], uuids["GPU-c"]["pod"], uuids["GPU-c"]["namespace"]) == ("MIG-1g.10gb-3", "", ""), (
        "no pod: empty labels"
    )
    assert sum(name == "gpuledger_gpu_driver_energy_joules_total" for name, _ in values) == 1, (
        "MIG instances have no energy counter of their own"
    )


def test_the_agent_process_serves_valid_per_gpu_metrics(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collectors.cli",
            "--source",
            "simulated",
            "--gpus",
            "2",
            "--interval",
            "0.5",
            "--spool-dir",
            str(tmp_path / "spool"),
            "--metrics-port",
            str(port),
        ],
        cwd=ROOT,
        env=collector_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, text = time.monotonic() + 20, ""
        while time.monotonic() < deadline and text.count("gpuledger_gpu_power_watts{") < 2:
            time.sleep(0.2)
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
            except httpx.HTTPError:
                pass
    finally:
        proc.terminate()
        proc.wait(30)
    check_metrics(text)
    assert text.count("gpuledger_gpu_power_watts{") == 2 and 'hostname="proc-node"' in text and "gpuledger_collector_samples_total" in text
