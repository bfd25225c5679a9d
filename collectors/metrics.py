"""Prometheus ``/metrics`` and ``/healthz`` for the agent, served by uvicorn inside the agent's loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterator
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


class AgentCollector(Collector):
    """Reads the sampler's and publisher's counters at scrape time (no double bookkeeping)."""

    def __init__(self, sampler: NvmlSampler, publisher: Publisher, attributor: Attributor | None = None) -> None:
        self.sampler, self.publisher, self.attributor = sampler, publisher, attributor

    def collect(self) -> Iterator[Any]:
        s, p = self.sampler.stats, self.publisher.stats
        yield CounterMetricFamily("gpuledger_collector_samples", "GPU samples taken.", value=s.samples)
        yield CounterMetricFamily("gpuledger_collector_published", "Samples acknowledged by Kafka.", value=p.published)
        yield CounterMetricFamily("gpuledger_collector_spooled", "Samples written to the on-disk spool.", value=p.spooled)
        yield CounterMetricFamily("gpuledger_collector_dropped", "Spooled samples dropped because the spool was full.", value=self.publisher.spool.dropped)
        errors = CounterMetricFamily("gpuledger_collector_nvml_errors", "NVML call failures by error class.", labels=["error"])
        for name, count in sorted(s.nvml_errors.items()):
            errors.add_metric([name], count)
        yield errors
        yield CounterMetricFamily("gpuledger_collector_gpus_lost", "GPUs or MIG instances dropped after NVMLError_GpuIsLost.", value=s.gpus_lost)
        yield CounterMetricFamily("gpuledger_collector_energy_resets", "Energy counter went backwards (driver restart); step not attributed.", value=s.energy_resets)
        yield CounterMetricFamily("gpuledger_collector_unattributed_energy_joules", "Energy measured across missed intervals and not attributed.", value=s.unattributed_joules)
        yield CounterMetricFamily("gpuledger_collector_intervals_missed", "Intervals skipped because the agent fell behind.", value=s.intervals_missed)
        yield CounterMetricFamily("gpuledger_collector_kafka_send_failures", "Kafka send attempts that failed.", value=p.send_failures)
        yield CounterMetricFamily("gpuledger_collector_unencodable", "Samples that could not be Avro-encoded (logged with their id, skipped).", value=p.unencodable)
        yield CounterMetricFamily("gpuledger_collector_spool_failures", "Records lost because the spool could not be written.", value=p.spool_failures)
        yield GaugeMetricFamily("gpuledger_collector_last_publish_timestamp_seconds", "Wall time of the last Kafka acknowledgement.", value=p.last_publish)
        yield GaugeMetricFamily("gpuledger_collector_spool_bytes", "Bytes held in the spool.", value=self.publisher.spool.size_bytes())
        yield GaugeMetricFamily("gpuledger_collector_devices", "GPUs and MIG instances being sampled.", value=len(self.sampler.entities))
        yield from self._kubernetes()

    def _kubernetes(self) -> Iterator[Any]:
        """Pod list and pod-resources health (absent when the agent does not use them)."""
        pods = self.attributor.pods if self.attributor is not None else None
        if pods is not None:
            yield CounterMetricFamily("gpuledger_collector_pod_list_errors", "Pod list fetches that failed (previous view kept).", value=pods.errors)
        client = self.attributor.pod_resources if self.attributor is not None else None
        if client is not None:
            st = client.stats
            yield CounterMetricFamily("gpuledger_collector_pod_resources_calls", "Kubelet pod-resources List calls attempted.", value=st.calls)
            errors = CounterMetricFamily("gpuledger_collector_pod_resources_errors",
                                         "Kubelet pod-resources List calls that failed, by reason (socket_missing or the gRPC status).", labels=["reason"])
            for reason, count in sorted(st.errors.items()):
                errors.add_metric([reason], count)
            yield errors
            yield GaugeMetricFamily("gpuledger_collector_pod_resources_last_success_timestamp_seconds",
                                    "Wall time of the last pod-resources answer (0: never).", value=st.last_success)


def health(sampler: NvmlSampler, publisher: Publisher, *, nvml_stale_after: float, kafka_fresh_seconds: float,
           clock: Callable[[], float] = time.time) -> tuple[bool, dict[str, Any]]:
    """Healthy only when NVML answered recently and Kafka acknowledged something recently."""
    now = clock()
    nvml_age = now - sampler.stats.last_poll_ok if sampler.stats.last_poll_ok else None
    kafka_age = now - publisher.stats.last_contact if publisher.stats.last_contact else None
    nvml_ok = bool(sampler.entities) and nvml_age is not None and nvml_age <= nvml_stale_after
    kafka_ok = kafka_age is not None and kafka_age <= kafka_fresh_seconds
    return nvml_ok and kafka_ok, {
        "nvml_ok": nvml_ok, "kafka_ok": kafka_ok, "devices": len(sampler.entities),
        "nvml_age_seconds": nvml_age, "kafka_age_seconds": kafka_age, "spooled_pending": len(publisher.spool),
    }


def build_app(sampler: NvmlSampler, publisher: Publisher, attributor: Attributor | None = None, *,
              nvml_stale_after: float, kafka_fresh_seconds: float) -> Starlette:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(sampler, publisher, attributor))

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
        raise PortUnavailable(f"cannot serve /metrics on {host}:{port}: {exc.strerror or exc}; "
                              "choose another --metrics-port (0 turns it off)") from None
    server = _QuietServer(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="collector-http")
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        task.result()  # raises the bind error
    return server, task
