"""Reads every GPU and MIG instance through a pynvml-shaped library and turns polls into interval samples.

One poll per ``poll_seconds`` feeds averages (utilization, power), the energy meter and the
process union; ``finish`` closes the interval into one ``GpuSample`` per device. Fields a
device does not support are remembered and skipped (reported as 0/None); a lost GPU is
counted and dropped while the others continue.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import pynvml
import structlog

from collectors.energy import EnergyMeter
from schemas import GpuProcess, GpuSample

log = structlog.get_logger()
Nvml = ModuleType | Any  # the pynvml module or a double with the same functions


class NvmlUnavailable(RuntimeError):
    """NVML cannot start on this machine; the message names the missing piece and the way out."""


def sample_id(node: str, gpu_uuid: str, interval_start: datetime) -> str:
    """Deterministic id: a replay of the same interval carries the same id."""
    return f"{node}/{gpu_uuid}/{int(interval_start.timestamp() * 1_000_000)}"


def init_nvml(nvml: Nvml) -> None:
    """``nvmlInit`` with an error a user can act on when there is no driver or library."""
    try:
        nvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound as exc:
        raise NvmlUnavailable(
            "NVML library not found (libnvidia-ml.so.1, NVMLError_LibraryNotFound): the NVIDIA driver is not installed "
            "or not mounted into this container. Install the driver / use runtimeClassName nvidia, "
            "or run with --source simulated to generate realistic GPU samples without a GPU."
        ) from exc
    except pynvml.NVMLError_DriverNotLoaded as exc:
        raise NvmlUnavailable(
            "NVIDIA driver not loaded (NVMLError_DriverNotLoaded): libnvidia-ml.so.1 is present but the kernel module is not. "
            "Load the driver (nvidia-smi should work), or run with --source simulated."
        ) from exc
    except pynvml.NVMLError as exc:
        raise NvmlUnavailable(f"NVML failed to initialise ({type(exc).__name__}: {exc}); try --source simulated.") from exc


@dataclass
class Accumulator:
    """Everything polled for one device during the current interval."""

    util: list[float] = field(default_factory=list)
    mem_util: list[float] = field(default_factory=list)
    power_w: list[float] = field(default_factory=list)
    energy_j: float = 0.0
    memory_used: int = 0
    memory_total: int = 0
    sm_clock: int = 0
    temperature: int = 0
    processes: dict[int, int] = field(default_factory=dict)  # pid -> max GPU memory seen


@dataclass
class Entity:
    """One GPU, or one MIG instance (its power and energy come from the parent, shared by memory slice)."""

    handle: Any
    uuid: str
    index: int
    model: str
    parent: Any = None  # parent handle for MIG instances
    mig_instance: str | None = None
    mig_parent_uuid: str | None = None
    mig_profile: str | None = None  # "3g.40gb" (or "1c.3g.40gb" for a compute instance smaller than its GPU instance)
    mig_slices: int = 0  # compute slices of this instance (0: unknown)
    mig_parent_slices: int = 0  # compute slices of the whole parent GPU (7 on A100/H100; 0: unknown)
    share: float = 1.0  # fraction of the parent's power/energy (MIG: memory slice / parent memory)
    meter: EnergyMeter = field(default_factory=EnergyMeter)
    acc: Accumulator = field(default_factory=Accumulator)
    unsupported: set[str] = field(default_factory=set)
    util_seen_us: int = 0
    proc_seen_us: int = 0
    ecc: tuple[int, int] | None = None
    events: Any = None
    last_counter_mj: int | None = None


class GpuLost(Exception):
    """Raised inside a poll to drop the device."""


@dataclass
class SamplerStats:
    """Counters the metrics endpoint exports."""

    samples: int = 0
    polls: int = 0
    nvml_errors: Counter[str] = field(default_factory=Counter)
    gpus_lost: int = 0
    energy_resets: int = 0
    energy_wraps: int = 0
    unattributed_joules: float = 0.0
    intervals_missed: int = 0
    last_poll_ok: float = 0.0


class NvmlSampler:
    """Samples every device behind ``nvml`` into interval ``GpuSample`` records (processes not yet attributed)."""

    def __init__(self, nvml: Nvml, node: str, *, clock: Callable[[], float] = time.time) -> None:
        self.nvml = nvml
        self.node = node
        self.clock = clock
        self.entities: list[Entity] = []
        self.stats = SamplerStats()
        self.interval_start: float = 0.0
        self._lost_indices: set[int] = set()

    # -- discovery --------------------------------------------------------------------------
    def start(self) -> list[Entity]:
        """Initialise NVML and find every GPU and MIG instance."""
        init_nvml(self.nvml)
        self.entities = []
        self.rediscover()
        log.info("nvml devices", node=self.node, devices=[e.uuid for e in self.entities])
        return self.entities

    def rediscover(self) -> list[Entity]:
        """Add devices not sampled yet (hot-added, back after a reset, new MIG layout); returns the new ones.

        A GPU index that stays lost is counted once, not at every rediscovery.
        """
        known = {e.uuid for e in self.entities}
        added: list[Entity] = []
        for index in range(self.nvml.nvmlDeviceGetCount()):
            try:
                handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
                found = self._discover(handle, index)
            except pynvml.NVMLError_GpuIsLost:
                if index not in self._lost_indices:
                    self._lost_indices.add(index)
                    self.stats.gpus_lost += 1
                    log.error("gpu lost at discovery", gpu_index=index)
                continue
            except pynvml.NVMLError as exc:
                self.stats.nvml_errors[type(exc).__name__] += 1
                log.error("gpu unreadable at discovery", gpu_index=index, error=str(exc))
                continue
            self._lost_indices.discard(index)
            for entity in found:
                if entity.uuid not in known:
                    self._register_xid(entity)
                    entity.acc = Accumulator()
                    added.append(entity)
        self.entities.extend(added)
        if added and known:
            log.info("new nvml devices", devices=[e.uuid for e in added])
        return added

    def _discover(self, handle: Any, index: int) -> list[Entity]:
        nvml = self.nvml
        uuid, model = _text(nvml.nvmlDeviceGetUUID(handle)), _text(nvml.nvmlDeviceGetName(handle))
        try:
            mig_on = nvml.nvmlDeviceGetMigMode(handle)[0] == pynvml.NVML_DEVICE_MIG_ENABLE
        except pynvml.NVMLError_NotSupported:
            mig_on = False
        if not mig_on:
            return [Entity(handle, uuid, index, model)]
        parent_total = nvml.nvmlDeviceGetMemoryInfo(handle).total or 1
        parent_slices = gpu_slice_count(nvml, handle)
        if not parent_slices:
            log.warning(
                "MIG parent's slice count unreadable (nvmlDeviceGetGpuInstanceProfileInfo); its instances carry mig_parent_slices=0",
                gpu_uuid=uuid,
            )
        migs = []
        for slot in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except pynvml.NVMLError_NotFound:
                continue
            gi, ci = nvml.nvmlDeviceGetGpuInstanceId(mig), nvml.nvmlDeviceGetComputeInstanceId(mig)
            mig_uuid = _text(nvml.nvmlDeviceGetUUID(mig))
            share = nvml.nvmlDeviceGetMemoryInfo(mig).total / parent_total
            profile, slices = mig_profile(nvml, mig, parent_total)
            if profile is None:
                log.warning("MIG instance attributes unreadable (nvmlDeviceGetAttributes); no profile or slice count", gpu_uuid=mig_uuid)
            migs.append(
                Entity(
                    mig,
                    mig_uuid,
                    index,
                    model,
                    parent=handle,
                    mig_instance=f"{uuid}/gi{gi}/ci{ci}",
                    share=share,
                    mig_parent_uuid=uuid,
                    mig_profile=profile,
                    mig_slices=slices,
                    mig_parent_slices=parent_slices,
                )
            )
        return migs

    def _register_xid(self, entity: Entity) -> None:
        """One event set per device, so an XID event needs no handle comparison to find its GPU."""
        if entity.parent is not None:
            return
        try:
            events = self.nvml.nvmlEventSetCreate()
            self.nvml.nvmlDeviceRegisterEvents(entity.handle, pynvml.nvmlEventTypeXidCriticalError, events)
            entity.events = events
        except (pynvml.NVMLError, AttributeError):
            entity.unsupported.add("xid")

    # -- polling ----------------------------------------------------------------------------
    def begin(self, interval_start: float) -> None:
        """Start a new interval: fresh accumulators; energy meters keep their baseline."""
        self.interval_start = interval_start
        for entity in self.entities:
            entity.acc = Accumulator()

    def poll(self, now: float | None = None) -> None:
        """Read every live device once; a lost GPU is dropped, other errors only blank one field."""
        now = self.clock() if now is None else now
        self.stats.polls += 1
        ok = False
        for entity in list(self.entities):
            try:
                self._poll_entity(entity, now)
                ok = True
            except GpuLost:
                self._drop(entity)
        if ok:
            self.stats.last_poll_ok = now

    def _call(self, entity: Entity, fn: str, *args: Any, handle: Any = None) -> Any:
        """Call one NVML function; None when unsupported (remembered) or failing (counted)."""
        if fn in entity.unsupported:
            return None
        try:
            return getattr(self.nvml, fn)(entity.handle if handle is None else handle, *args)
        except pynvml.NVMLError_GpuIsLost as exc:
            raise GpuLost() from exc
        except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound):
            entity.unsupported.add(fn)
            log.info("nvml field not supported", gpu_uuid=entity.uuid, function=fn)
            return None
        except pynvml.NVMLError_NotFound:
            return None  # e.g. no new samples since the last call
        except pynvml.NVMLError as exc:
            self.stats.nvml_errors[type(exc).__name__] += 1
            return None

    def _poll_entity(self, e: Entity, now: float) -> None:
        acc = e.acc
        physical = e.parent if e.parent is not None else e.handle
        mem = self._call(e, "nvmlDeviceGetMemoryInfo")
        if mem is not None:
            acc.memory_used, acc.memory_total = int(mem.used), int(mem.total)
        util = self._call(e, "nvmlDeviceGetUtilizationRates")
        if util is not None:
            acc.util.append(float(util.gpu))
            acc.mem_util.append(float(util.memory))
        power = self._call(e, "nvmlDeviceGetPowerUsage", handle=physical)
        if power is not None:
            acc.power_w.append(power / 1000.0 * e.share)
        counter = self._call(e, "nvmlDeviceGetTotalEnergyConsumption", handle=physical)
        if counter is not None:
            step = e.meter.observe(int(counter), now, self.interval_start)
            acc.energy_j += step.joules * e.share
            self.stats.unattributed_joules += step.unattributed_joules * e.share
            self.stats.energy_resets += step.reset
            self.stats.energy_wraps += step.wrapped
            if step.reset:
                log.warning("energy counter went backwards; no energy attributed for that step", gpu_uuid=e.uuid)
            e.last_counter_mj = int(counter)
        clock = self._call(e, "nvmlDeviceGetClockInfo", pynvml.NVML_CLOCK_SM, handle=physical)
        if clock is not None:
            acc.sm_clock = int(clock)
        temp = self._call(e, "nvmlDeviceGetTemperature", pynvml.NVML_TEMPERATURE_GPU, handle=physical)
        if temp is not None:
            acc.temperature = int(temp)
        for proc in self._call(e, "nvmlDeviceGetComputeRunningProcesses") or []:
            used = int(proc.usedGpuMemory or 0)
            acc.processes[int(proc.pid)] = max(used, acc.processes.get(int(proc.pid), 0))

    def _drop(self, entity: Entity) -> None:
        gone = [e for e in self.entities if e is entity or (entity.parent is None and e.parent is entity.handle)]
        self._lost_indices.add(entity.index)
        for e in gone:
            self.entities.remove(e)
            self.stats.gpus_lost += 1
            log.error("gpu lost; skipping it from now on", gpu_uuid=e.uuid, gpu_index=e.index)

    # -- closing ----------------------------------------------------------------------------
    def finish(self, interval_end: float) -> list[GpuSample]:
        """Close the interval [interval_start, interval_end) into one sample per live device."""
        start_dt = datetime.fromtimestamp(self.interval_start, UTC)
        end_dt = datetime.fromtimestamp(interval_end, UTC)
        out: list[GpuSample] = []
        for entity in list(self.entities):
            try:
                out.append(self._finish_entity(entity, start_dt, end_dt, interval_end))
            except GpuLost:
                self._drop(entity)
        self.stats.samples += len(out)
        return out

    def _finish_entity(self, e: Entity, start_dt: datetime, end_dt: datetime, end: float) -> GpuSample:
        acc = e.acc
        util = self._sampled_utilization(e, self.interval_start, end)
        if util is None:
            util = _mean(acc.util)
        proc_util = self._process_utilization(e, self.interval_start, end)
        corrected, uncorrected = self._ecc_delta(e)
        processes = [
            GpuProcess(pid=pid, gpu_memory_bytes=mem, sm_utilization_pct=proc_util.get(pid)) for pid, mem in sorted(acc.processes.items())
        ]
        return GpuSample(
            sample_id=sample_id(self.node, e.uuid, start_dt),
            node=self.node,
            gpu_uuid=e.uuid,
            gpu_index=e.index,
            gpu_model=e.model,
            mig_instance=e.mig_instance,
            mig_parent_uuid=e.mig_parent_uuid,
            mig_profile=e.mig_profile,
            mig_slices=e.mig_slices,
            mig_parent_slices=e.mig_parent_slices,
            interval_start=start_dt,
            interval_end=end_dt,
            utilization_pct=round(util, 3),
            memory_utilization_pct=round(_mean(acc.mem_util), 3),
            memory_used_bytes=acc.memory_used,
            memory_total_bytes=acc.memory_total,
            power_watts=round(_mean(acc.power_w), 3),
            energy_counter_mj=e.last_counter_mj if e.parent is None else None,
            energy_joules=round(acc.energy_j, 3),
            sm_clock_mhz=acc.sm_clock,
            temperature_c=acc.temperature,
            xid_errors=self._drain_xids(e),
            ecc_errors_corrected=corrected,
            ecc_errors_uncorrected=uncorrected,
            processes=processes,
        )

    def _sampled_utilization(self, e: Entity, start: float, end: float) -> float | None:
        """Mean of the driver's own utilization samples inside the interval (better than our polls)."""
        got = self._call(e, "nvmlDeviceGetSamples", pynvml.NVML_GPU_UTILIZATION_SAMPLES, e.util_seen_us)
        if not got:
            return None
        _, samples = got
        lo, hi = start * 1e6, end * 1e6
        values = [float(s.sampleValue.uiVal) for s in samples if lo <= s.timeStamp <= hi]
        e.util_seen_us = max([e.util_seen_us, *(int(s.timeStamp) for s in samples)])
        return _mean(values) if values else None

    def _process_utilization(self, e: Entity, start: float, end: float) -> dict[int, float]:
        got = self._call(e, "nvmlDeviceGetProcessUtilization", e.proc_seen_us)
        if not got:
            return {}
        lo, hi = start * 1e6, end * 1e6
        per_pid: dict[int, list[float]] = {}
        for s in got:
            e.proc_seen_us = max(e.proc_seen_us, int(s.timeStamp))
            if lo <= s.timeStamp <= hi:
                per_pid.setdefault(int(s.pid), []).append(float(s.smUtil))
        return {pid: round(_mean(v), 3) for pid, v in per_pid.items()}

    def _ecc_delta(self, e: Entity) -> tuple[int, int]:
        """New ECC errors this interval (volatile counters; a reset is treated as a fresh baseline)."""
        if e.parent is not None:
            return 0, 0
        c = self._call(e, "nvmlDeviceGetTotalEccErrors", pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC)
        u = self._call(e, "nvmlDeviceGetTotalEccErrors", pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC)
        if c is None or u is None:
            return 0, 0
        prev, e.ecc = e.ecc, (int(c), int(u))
        if prev is None:
            return 0, 0
        return max(0, e.ecc[0] - prev[0]), max(0, e.ecc[1] - prev[1])

    def _drain_xids(self, e: Entity) -> int:
        if e.events is None:
            return 0
        count = 0
        for _ in range(1000):
            try:
                data = self.nvml.nvmlEventSetWait_v2(e.events, 0)
            except pynvml.NVMLError_Timeout:
                break
            except pynvml.NVMLError_GpuIsLost as exc:
                raise GpuLost() from exc
            except pynvml.NVMLError as exc:
                self.stats.nvml_errors[type(exc).__name__] += 1
                break
            if data.eventType & pynvml.nvmlEventTypeXidCriticalError:
                count += 1
                log.warning("xid error", gpu_uuid=e.uuid, xid=int(data.eventData))
        return count

    def close(self) -> None:
        for e in self.entities:
            if e.events is not None:
                try:
                    self.nvml.nvmlEventSetFree(e.events)
                except pynvml.NVMLError:
                    pass
        try:
            self.nvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def gpu_slice_count(nvml: Nvml, parent: Any) -> int:
    """Compute slices of a whole MIG-capable GPU: the largest GPU-instance profile it supports (7 on A100/H100, 4 on A30); 0 if unreadable.

    Profile info is static and readable without privileges; profiles the GPU lacks answer NotSupported.
    """
    best, version = 0, 2
    for profile in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
        try:
            info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(parent, profile, version)
        except pynvml.NVMLError_FunctionNotFound:  # driver without the versioned call: fall back to v1
            if version == 1:
                return best
            version = 1
            try:
                info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(parent, profile, version)
            except pynvml.NVMLError:
                continue
        except pynvml.NVMLError:
            continue
        best = max(best, int(info.sliceCount))
    return best


def mig_profile(nvml: Nvml, mig: Any, parent_memory_bytes: int) -> tuple[str | None, int]:
    """(profile name, compute slices) of a MIG device from ``nvmlDeviceGetAttributes``; (None, 0) when unreadable."""
    try:
        attrs = nvml.nvmlDeviceGetAttributes(mig)
    except pynvml.NVMLError:
        return None, 0
    gi_slices, ci_slices = int(attrs.gpuInstanceSliceCount), int(attrs.computeInstanceSliceCount)
    name = f"{gi_slices}g.{mig_memory_gb(int(attrs.memorySizeMB), parent_memory_bytes)}gb"
    return (name if ci_slices == gi_slices else f"{ci_slices}c.{name}"), ci_slices


def mig_memory_gb(memory_mb: int, parent_memory_bytes: int) -> int:
    """The "40" of "3g.40gb", as NVIDIA names profiles (and the device plugin its ``nvidia.com/mig-…`` resources):
    the instance's share of the parent's memory rounded up to eighths, times the parent's size in whole GB
    rounded up, rounded half up. Integer arithmetic: 40192 MiB of an 80 GiB A100 -> 4/8 x 80 -> 40."""
    eighths = -(-memory_mb * 2**20 * 8 // parent_memory_bytes)
    parent_gb = -(-parent_memory_bytes // 2**30)
    return (2 * eighths * parent_gb + 8) // 16


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
