"""Prometheus ``/metrics`` and ``/healthz`` for the agent, served by uvicorn inside the agent's loop.

Besides the agent's own counters, every GPU (and MIG instance) of the last published interval
is exposed the way GPU exporters label theirs (dcgm-exporter's ``gpu``, ``UUID``, ``device``,
``modelName``, ``Hostname``, ``GPU_I_ID``, in snake case, plus ``namespace``/``pod`` when one pod
is attributed), so the usual GPU dashboards and alerts work on the same figures the ledger bills.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collectors.attribution import Attributor
from collectors.publisher import Publisher
from collectors.sampler import NvmlSampler
from schemas import GpuSample

# dcgm-exporter's labels in snake case (promtool's lint refuses its camelCase): gpu, UUID -> uuid, device,
# modelName -> model_name, Hostname -> hostname, GPU_I_ID -> gpu_i_id, namespace, pod.
GPU_LABELS = ["gpu", "uuid", "device", "model_name", "hostname", "gpu_i_id", "namespace", "pod"]


@dataclass
class _GpuState:
    """A device's last sample and its running totals since the agent started."""

    sample: GpuSample
    energy_joules: float = 0.0
    xid_errors: int = 0
    ecc_corrected: int = 0
    ecc_uncorrected: int = 0


class GpuGauges:
    """Per-GPU figures of the last interval published, and counters summed over intervals; devices gone are dropped."""

    def __init__(self) -> None:
        self._gpus: dict[str, _GpuState] = {}

    def update(self, samples: Iterable[GpuSample]) -> None:
        previous, self._gpus = self._gpus, {}
        for s in samples:
            state = previous.get(s.gpu_uuid) or _GpuState(s)
            state.sample = s
            state.energy_joules += max(0.0, s.energy_joules)
            state.xid_errors += max(0, s.xid_errors)
            state.ecc_corrected += max(0, s.ecc_errors_corrected)
            state.ecc_uncorrected += max(0, s.ecc_errors_uncorrected)
            self._gpus[s.gpu_uuid] = state

    def collect(self) -> Iterator[Any]:
        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=GPU_LABELS)

        util = gauge("gpuledger_gpu_utilization_percent", "GPU utilization over the last interval (DCGM_FI_DEV_GPU_UTIL).")
        mem_util = gauge(
            "gpuledger_gpu_memory_utilization_percent", "Memory controller utilization over the last interval (DCGM_FI_DEV_MEM_COPY_UTIL)."
        )
        used = gauge(
            "gpuledger_gpu_memory_used_bytes", "Framebuffer memory used at the end of the last interval (DCGM_FI_DEV_FB_USED, in bytes)."
        )
        total = gauge("gpuledger_gpu_memory_total_bytes", "Framebuffer memory size (DCGM_FI_DEV_FB_USED + FB_FREE, in bytes).")
        power = gauge("gpuledger_gpu_power_watts", "Mean power draw over the last interval (DCGM_FI_DEV_POWER_USAGE).")
        temp = gauge("gpuledger_gpu_temperature_celsius", "GPU temperature (DCGM_FI_DEV_GPU_TEMP).")
        clock = gauge("gpuledger_gpu_sm_clock_mhz", "SM clock (DCGM_FI_DEV_SM_CLOCK).")
        seen = gauge("gpuledger_gpu_last_sample_timestamp_seconds", "End of the last interval sampled (staleness check).")
        driver = CounterMetricFamily(
            "gpuledger_gpu_driver_energy_joules",
            "The driver's energy counter since it loaded (DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION, in joules); absent for MIG instances.",
            labels=GPU_LABELS,
        )
        energy = CounterMetricFamily(
            "gpuledger_gpu_energy_joules", "Energy measured (MIG: its share) since the agent started.", labels=GPU_LABELS
        )
        xid = CounterMetricFamily(
            "gpuledger_gpu_xid_errors",
            "XID errors reported since the agent started (DCGM_FI_DEV_XID_ERRORS counts them per event).",
            labels=GPU_LABELS,
        )
        ecc = CounterMetricFamily(
            "gpuledger_gpu_ecc_errors",
            "ECC errors since the agent started, by type corrected / uncorrected (DCGM_FI_DEV_ECC_SBE/DBE_VOL_TOTAL).",
            labels=[*GPU_LABELS, "type"],
        )
        for state in self._gpus.values():
            s = state.sample
            labels = _gpu_labels(s)
            util.add_metric(labels, s.utilization_pct)
            mem_util.add_metric(labels, s.memory_utilization_pct)
            used.add_metric(labels, s.memory_used_bytes)
            total.add_metric(labels, s.memory_total_bytes)
            power.add_metric(labels, s.power_watts)
            temp.add_metric(labels, s.temperature_c)
            clock.add_metric(labels, s.sm_clock_mhz)
            seen.add_metric(labels, s.interval_end.timestamp())
            if s.energy_counter_mj is not None:
                driver.add_metric(labels, s.energy_counter_mj / 1000)
            energy.add_metric(labels, state.energy_joules)
            xid.add_metric(labels, state.xid_errors)
            ecc.add_metric([*labels, "corrected"], state.ecc_corrected)
            ecc.add_metric([*labels, "uncorrected"], state.ecc_uncorrected)
        yield from (util, mem_util, used, total, power, temp, clock, seen, driver, energy, xid, ecc)


def _gpu_labels(s: GpuSample) -> list[str]:
    """dcgm-exporter's labels; namespace/pod only when every attributed process belongs to one pod."""
    pods = {(p.namespace or "", p.pod) for p in s.processes if p.pod}
    namespace, pod = next(iter(pods)) if len(pods) == 1 else ("", "")
    return [str(s.gpu_index), s.gpu_uuid, f"nvidia{s.gpu_index}", s.gpu_model, s.node, s.mig_instance or "", namespace, pod or ""]


class AgentCollector(Collector):
    """Reads the sampler's and publisher's counters at scrape time (no double bookkeeping)."""

    def __init__(
        self, sampler: NvmlSampler, publisher: Publisher, attributor: Attributor | None = None, gpus: GpuGauges | None = None
    ) -> None:
        self.sampler, self.publisher, self.attributor, self.gpus = sampler, publisher, attributor, gpus

    def collect(self) -> Iterator[Any]:
        if self.gpus is not None:
            yield from self.gpus.collect()
        s, p = self.sampler.stats, self.publisher.stats
        yield CounterMetricFamily("gpuledger_collector_samples", "GPU samples taken.", value=s.samples)
        yield CounterMetricFamily("gpuledger_collector_published", "Samples acknowledged by Kafka.", value=p.published)
        yield CounterMetricFamily("gpuledger_collector_spooled", "Samples written to the on-disk spool.", value=p.spooled)
        yield CounterMetricFamily(
            "gpuledger_collector_dropped", "Spooled samples dropped because the spool was full.", value=self.publisher.spool.dropped
        )
        errors = CounterMetricFamily("gpuledger_collector_nvml_errors", "NVML call failures by error class.", labels=["error"])
        for name, count in sorted(s.nvml_errors.items()):
            errors.add_metric([name], count)
        yield errors
        yield CounterMetricFamily(
            "gpuledger_collector_gpus_lost", "GPUs or MIG instances dropped after NVMLError_GpuIsLost.", value=s.gpus_lost
        )
        yield CounterMetricFamily(
            "gpuledger_collector_energy_resets",
            "Energy counter went backwards (driver restart); step not attributed.",
            value=s.energy_resets,
        )
        yield CounterMetricFamily(
            "gpuledger_collector_unattributed_energy_joules",
            "Energy measured across missed intervals and not attributed.",
            value=s.unattributed_joules,
        )
        yield CounterMetricFamily(
            "gpuledger_collector_intervals_missed", "Intervals skipped because the agent fell behind.", value=s.intervals_missed
        )
        yield CounterMetricFamily("gpuledger_collector_kafka_send_failures", "Kafka send attempts that failed.", value=p.send_failures)
        yield CounterMetricFamily(
            "gpuledger_collector_unencodable",
            "Samples that could not be Avro-encoded (logged with their id, skipped).",
            value=p.unencodable,
        )
        yield CounterMetricFamily(
            "gpuledger_collector_spool_failures", "Records lost because the spool could not be written.", value=p.spool_failures
        )
        yield GaugeMetricFamily(
            "gpuledger_collector_last_publish_timestamp_seconds", "Wall time of the last Kafka acknowledgement.", value=p.last_publish
        )
        yield GaugeMetricFamily("gpuledger_collector_spool_bytes", "Bytes held in the spool.", value=self.publisher.spool.size_bytes())
        yield GaugeMetricFamily("gpuledger_collector_devices", "GPUs and MIG instances being sampled.", value=len(self.sampler.entities))
        yield from self._kubernetes()

    def _kubernetes(self) -> Iterator[Any]:
        """Pod list and pod-resources health (absent when the agent does not use them)."""
        pods = self.attributor.pods if self.attributor is not None else None
        if pods is not None:
            yield CounterMetricFamily(
                "gpuledger_collector_pod_list_errors", "Pod list fetches that failed (previous view kept).", value=pods.errors
            )
        client = self.attributor.pod_resources if self.attributor is not None else None
        if client is not None:
            st = client.stats
            yield CounterMetricFamily(
                "gpuledger_collector_pod_resources_calls", "Kubelet pod-resources List calls attempted.", value=st.calls
            )
            errors = CounterMetricFamily(
                "gpuledger_collector_pod_resources_errors",
                "Kubelet pod-resources List calls that failed, by reason (socket_missing or the gRPC status).",
                labels=["reason"],
            )
            for reason, count in sorted(st.errors.items()):
                errors.add_metric([reason], count)
            yield errors
            yield GaugeMetricFamily(
                "gpuledger_collector_pod_resources_last_success_timestamp_seconds",
                "Wall time of the last pod-resources answer (0: never).",
                value=st.last_success,
            )


def health(
    sampler: NvmlSampler,
    publisher: Publisher,
    *,
    nvml_stale_after: float,
    kafka_fresh_seconds: float,
    clock: Callable[[], float] = time.time,
) -> tuple[bool, dict[str, Any]]:
    """Healthy only when NVML answered recently and Kafka acknowledged something recently."""
    now = clock()
    nvml_age = now - sampler.stats.last_poll_ok if sampler.stats.last_poll_ok else None
    kafka_age = now - publisher.stats.last_contact if publisher.stats.last_contact else None
    nvml_ok = bool(sampler.entities) and nvml_age is not None and nvml_age <= nvml_stale_after
    kafka_ok = kafka_age is not None and kafka_age <= kafka_fresh_seconds
    return nvml_ok and kafka_ok, {
        "nvml_ok": nvml_ok,
        "kafka_ok": kafka_ok,
        "devices": len(sampler.entities),
        "nvml_age_seconds": nvml_age,
        "kafka_age_seconds": kafka_age,
        "spooled_pending": len(publisher.spool),
    }


def build_app(
    sampler: NvmlSampler,
    publisher: Publisher,
    attributor: Attributor | None = None,
    *,
    nvml_stale_after: float,
    kafka_fresh_seconds: float,
    gpus: GpuGauges | None = None,
) -> Starlette:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(sampler, publisher, attributor, gpus))

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def healthz(_: Request) -> Response:
        ok, detail = health(sampler, publisher, nvml_stale_after=nvml_stale_after, kafka_fresh_seconds=kafka_fresh_seconds)
        return JSONResponse(detail, status_code=200 if ok else 503)

    return Starlette(routes=[Route("/metrics", metrics), Route("/healthz", healthz)])


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the agent owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class PortUnavailable(RuntimeError):
    """The metrics address cannot be bound (in use, or not an address of this host)."""


async def serve(app: Starlette, host: str, port: int) -> tuple[_QuietServer, asyncio.Task[None]]:
    """Start the HTTP server in this loop; returns it (``should_exit = True`` stops it) and its task.

    The socket is bound here, so a port in use is a ``PortUnavailable`` with one clear line
    (uvicorn itself would log and ``sys.exit(1)``)."""
    try:
        sock = socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        raise PortUnavailable(
            f"cannot serve /metrics on {host}:{port}: {exc.strerror or exc}; choose another --metrics-port (0 turns it off)"
        ) from None
    server = _QuietServer(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="collector-http")
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        task.result()  # raises the bind error
    return server, task
