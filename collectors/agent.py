"""The collector's main loop: sample on wall-clock-aligned intervals, attribute, publish; flush on SIGTERM."""

from __future__ import annotations

import asyncio
import math
import signal
import time
from collections.abc import Callable
from typing import Any

import structlog

from collectors.attribution import Attributor
from collectors.kubelet import PodDirectory
from collectors.metrics import GpuGauges, build_app, serve
from collectors.podresources.client import PodResourcesClient
from collectors.publisher import Publisher, encode_samples
from collectors.sampler import NvmlSampler
from collectors.spool import Spool
from gpuledger.sections.collector import CollectorSettings
from gpuledger.settings import Settings

log = structlog.get_logger()


def make_nvml(cfg: CollectorSettings, clock: Callable[[], float] = time.time) -> Any:
    """The real pynvml module, or the seeded simulator with the same API."""
    if cfg.source == "simulated":
        from collectors.simnvml import SimulatedNvml

        return SimulatedNvml(cfg.simulated_gpus, seed=cfg.simulated_seed, node=cfg.node, clock=clock)
    import pynvml

    return pynvml


class Agent:
    """Wires sampler, attributor, publisher and the HTTP endpoints together."""

    def __init__(self, cfg: CollectorSettings, settings: Settings, *, nvml: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self.sampler = NvmlSampler(nvml if nvml is not None else make_nvml(cfg, clock), cfg.node, clock=clock)
        pods = None
        if cfg.pod_list_url:
            sa = cfg.service_account_dir
            pods = PodDirectory(
                cfg.pod_list_url.replace("{node}", cfg.node),
                label_names=cfg.label_map(),
                refresh_seconds=cfg.pod_list_refresh_seconds,
                token_file=sa / "token",
                ca_file=sa / "ca.crt",
            )
        real_devices = cfg.source == "nvml" or nvml is not None  # simulated GPUs have no host pids nor kubelet assignments
        pod_resources = None
        if real_devices and cfg.pod_resources_socket is not None:
            pod_resources = PodResourcesClient(
                cfg.pod_resources_socket,
                timeout_seconds=cfg.pod_resources_timeout_seconds,
                max_age_seconds=cfg.pod_resources_max_age_seconds,
                clock=clock,
            )
        self.attributor = Attributor(cfg.proc_root if real_devices else None, pods, pod_resources)
        self.spool = Spool(cfg.spool_dir, max_bytes=cfg.spool_max_bytes, segment_bytes=cfg.spool_segment_bytes)
        self.publisher = Publisher(settings.kafka, settings.topics.gpu_samples, self.spool)
        self.stop = asyncio.Event()
        self.intervals = 0
        self.gpus = GpuGauges()  # per-GPU figures on /metrics
        self._aligned = False  # inside a wall-clock-aligned interval (the only kind ever published)

    async def _emit(self, end: float) -> None:
        samples = self.sampler.finish(end)
        if self.attributor.may_block:  # may wait on the API server or the kubelet: keep the loop free
            samples = await asyncio.to_thread(self.attributor.attribute, samples)
        else:  # only local /proc reads: a worker thread would cost more than it saves
            samples = self.attributor.attribute(samples)
        self.publisher.publish(encode_samples(samples, self.publisher.stats))
        self.gpus.update(samples)
        self.intervals += 1
        log.debug("interval published", devices=len(samples), end=end)

    async def _poll_until(self, deadline: float) -> bool:
        """Poll every ``poll_seconds`` until ``deadline``; False when asked to stop first."""
        step = min(self.cfg.poll_seconds, self.cfg.interval_seconds)
        while True:
            now = self.clock()
            if now >= deadline:
                return True
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=min(step, deadline - now))
                return False
            except TimeoutError:
                pass
            if self.clock() < deadline - 1e-3:
                self.sampler.poll()

    async def run(self, *, once: bool = False, max_intervals: int | None = None) -> int:
        """Run until SIGTERM/SIGINT (or one interval with ``once``); returns the number of intervals published."""
        self.sampler.start()
        self.publisher.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop.set)
            except (RuntimeError, ValueError):  # not the main thread (tests)
                pass
        server = server_task = None
        if self.cfg.metrics_port:
            app = build_app(
                self.sampler,
                self.publisher,
                self.attributor,
                nvml_stale_after=3 * max(self.cfg.interval_seconds, self.cfg.poll_seconds),
                kafka_fresh_seconds=self.cfg.kafka_fresh_seconds,
                gpus=self.gpus,
            )
            server, server_task = await serve(app, self.cfg.metrics_host, self.cfg.metrics_port)
        try:
            await self._loop(once, max_intervals)
        finally:
            if self._aligned and self.sampler.entities:
                self.sampler.poll()
                await self._emit(self.clock())  # the partial interval SIGTERM cut short
            await self.publisher.close(timeout=10.0 if once else 5.0)
            self.sampler.close()
            self.attributor.close()
            if server is not None and server_task is not None:
                server.should_exit = True
                try:
                    await asyncio.wait_for(server_task, timeout=3.0)
                except (TimeoutError, asyncio.CancelledError):
                    pass
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.remove_signal_handler(sig)
                except (RuntimeError, ValueError):
                    pass
        return self.intervals

    async def _loop(self, once: bool, max_intervals: int | None) -> None:
        interval = self.cfg.interval_seconds
        start = self.clock()
        self.sampler.begin(start)
        self.sampler.poll(start)
        if once:
            if await self._poll_until(start + interval):
                self.sampler.poll()
                await self._emit(self.clock())
            return
        # Warm-up until the first aligned boundary: establishes energy baselines; not published.
        boundary = math.ceil(start / interval) * interval
        last_discovery = start
        while True:
            if not await self._poll_until(boundary):
                return
            self.sampler.poll()
            if boundary - start >= interval - 1e-6:
                await self._emit(boundary)
            else:
                self.sampler.finish(boundary)
            if max_intervals is not None and self.intervals >= max_intervals:
                self._aligned = False
                return
            start = boundary
            now = self.clock()
            if now >= boundary + interval:  # stalled (suspended, overloaded): whole intervals went unobserved
                missed = int((now - boundary) // interval)
                self.sampler.stats.intervals_missed += missed
                start = boundary + missed * interval
                log.warning("collector fell behind; skipping unobserved intervals rather than inventing them", missed=missed)
            self.sampler.begin(start)
            self._aligned = True
            if start - last_discovery >= self.cfg.rediscover_seconds:
                last_discovery = start
                self.sampler.rediscover()
            boundary = start + interval
