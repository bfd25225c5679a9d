"""An in-process stand-in for ``pynvml``: the same function names, structs and error classes.

``NvmlDouble`` holds plain per-device state that tests script directly; ``SimulatedNvml``
drives that state from a seeded workload generator so ``--source simulated`` (and the
fleet simulator) produce realistic, reproducible GPU traces through the *same* sampler
code that reads real NVML.
"""

from __future__ import annotations

import math
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pynvml
from pynvml import (
    NVML_CLOCK_SM,
    NVML_GPU_UTILIZATION_SAMPLES,
    NVML_TEMPERATURE_GPU,
    NVML_VALUE_TYPE_UNSIGNED_INT,
    NVMLError_FunctionNotFound,
    NVMLError_GpuIsLost,
    NVMLError_InvalidArgument,
    NVMLError_NotFound,
    NVMLError_NotSupported,
    NVMLError_Timeout,
    NVMLError_Uninitialized,
    c_nvmlDeviceAttributes,
    c_nvmlEventData_t,
    c_nvmlGpuInstanceProfileInfo_t,
    c_nvmlGpuInstanceProfileInfo_v2_t,
    c_nvmlMemory_t,
    c_nvmlProcessUtilizationSample_t,
    c_nvmlSample_t,
    c_nvmlUtilization_t,
    nvmlEventTypeXidCriticalError,
    nvmlFriendlyObject,
)

if TYPE_CHECKING:
    from schemas import GpuSample

# GPU-instance profile id -> compute slices, for a 7-slice GPU (A100, H100, H200); pynvml's NVML_GPU_INSTANCE_PROFILE_*.
A100_GI_PROFILES = {
    pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE: 1,
    pynvml.NVML_GPU_INSTANCE_PROFILE_2_SLICE: 2,
    pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE: 3,
    pynvml.NVML_GPU_INSTANCE_PROFILE_4_SLICE: 4,
    pynvml.NVML_GPU_INSTANCE_PROFILE_7_SLICE: 7,
    pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1: 1,
}


@dataclass
class DeviceState:
    """What one (physical or MIG) device reports; tests edit these fields between polls."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    index: int = 0
    memory_total: int = 80 * 2**30
    memory_used: int = 0
    util_gpu: int = 0
    util_memory: int = 0
    power_mw: int = 70_000
    energy_mj: int = 0
    sm_clock_mhz: int = 1980
    temperature_c: int = 35
    ecc_corrected: int = 0
    ecc_uncorrected: int = 0
    processes: dict[int, int] = field(default_factory=dict)  # pid -> used GPU memory bytes
    process_sm_util: dict[int, int] = field(default_factory=dict)
    util_samples: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=600))  # (µs, %)
    process_samples: deque[tuple[int, int, int]] = field(default_factory=lambda: deque(maxlen=600))  # (pid, µs, sm%)
    unsupported: set[str] = field(default_factory=set)  # pynvml function names that raise NotSupported
    lost: bool = False
    xids: list[int] = field(default_factory=list)  # pending XID critical-error events
    mig: list[DeviceState] = field(default_factory=list)
    gi: int = 0
    ci: int = 0
    parent: DeviceState | None = None
    # MIG geometry. A whole GPU: the GPU-instance profiles it supports (profile id -> compute slices;
    # A100/H100: 1, 2, 3, 4 and 7 slices). A MIG instance: its slices and memory (nvmlDeviceGetAttributes).
    gi_profiles: dict[int, int] = field(default_factory=lambda: dict(A100_GI_PROFILES))
    gi_slices: int = 0
    ci_slices: int = 0
    memory_size_mb: int = 0


@dataclass(frozen=True)
class Handle:
    """Opaque device handle, like pynvml's ``c_nvmlDevice_t`` pointer."""

    uuid: str


MIG_UNSUPPORTED = frozenset({"nvmlDeviceGetUtilizationRates", "nvmlDeviceGetSamples", "nvmlDeviceGetProcessUtilization"})
PROFILE_NAME = re.compile(r"^(?:(\d+)c\.)?(\d+)g\.(\d+)gb$")


def split_mig(parent: DeviceState, profiles: list[str], *, uuid_prefix: str | None = None) -> list[DeviceState]:
    """Split ``parent`` into MIG instances named like ``3g.40gb`` (or ``1c.3g.40gb``), one GPU instance each.

    Memory per instance is 2 % under the nominal size, as real profiles report (3g.40gb: 40192 MiB);
    utilization calls answer NotSupported on MIG devices, as NVML does.
    """
    total = max(parent.gi_profiles.values(), default=0)
    slices = []
    for name in profiles:
        match = PROFILE_NAME.match(name)
        if match is None:
            raise ValueError(f"MIG profile {name!r}: expected '<slices>g.<GB>gb' or '<c>c.<slices>g.<GB>gb', e.g. '3g.40gb'")
        ci, gi, gb = int(match[1] or match[2]), int(match[2]), int(match[3])
        if gi not in parent.gi_profiles.values() or ci > gi:
            raise ValueError(
                f"MIG profile {name!r} does not exist on {parent.name} (GPU-instance slice counts: {sorted(set(parent.gi_profiles.values()))})"
            )
        slices.append((ci, gi, gb))
    if sum(gi for _, gi, _ in slices) > total:
        raise ValueError(f"MIG layout {profiles} needs {sum(gi for _, gi, _ in slices)} slices; {parent.name} has {total}")
    prefix = uuid_prefix or f"MIG-{parent.uuid.removeprefix('GPU-')}"
    parent.mig = [
        DeviceState(
            uuid=f"{prefix}-{k}",
            name=parent.name,
            index=parent.index,
            memory_total=int(gb * 1024 * 0.98) * 2**20,
            gi=k + 1,
            ci=0,
            parent=parent,
            gi_slices=gi,
            ci_slices=ci,
            memory_size_mb=int(gb * 1024 * 0.98),
            unsupported=set(MIG_UNSUPPORTED),
        )
        for k, (ci, gi, gb) in enumerate(slices)
    ]
    return parent.mig


class NvmlDouble:
    """Implements the pynvml calls the collector uses, raising pynvml's real exception classes."""

    def __init__(self, devices: list[DeviceState], *, clock: Callable[[], float] = time.time) -> None:
        self.devices = devices
        self.clock = clock
        self.initialized = False
        self.calls = 0

    # -- plumbing ---------------------------------------------------------------------------
    def _all(self) -> dict[str, DeviceState]:
        found: dict[str, DeviceState] = {}
        for dev in self.devices:
            found[dev.uuid] = dev
            for mig in dev.mig:
                found[mig.uuid] = mig
        return found

    def _dev(self, handle: Handle, fn: str) -> DeviceState:
        self.calls += 1
        if not self.initialized:
            raise NVMLError_Uninitialized()
        self.advance()
        dev = self._all().get(handle.uuid) if isinstance(handle, Handle) else None
        if dev is None:
            raise NVMLError_InvalidArgument()
        if dev.lost or (dev.parent is not None and dev.parent.lost):
            raise NVMLError_GpuIsLost()
        if fn in dev.unsupported:
            raise NVMLError_NotSupported()
        return dev

    def advance(self) -> None:
        """Hook for simulators to move device state forward to ``clock()``."""

    # -- library ----------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self.initialized = False

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        if not self.initialized:
            raise NVMLError_Uninitialized()
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        if not self.initialized:
            raise NVMLError_Uninitialized()
        if not 0 <= index < len(self.devices):
            raise NVMLError_InvalidArgument()
        dev = self.devices[index]
        if dev.lost:
            raise NVMLError_GpuIsLost()
        return Handle(dev.uuid)

    # -- identity ---------------------------------------------------------------------------
    def nvmlDeviceGetUUID(self, handle: Handle) -> str:
        return self._dev(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetName(self, handle: Handle) -> str:
        return self._dev(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetIndex(self, handle: Handle) -> int:
        return self._dev(handle, "nvmlDeviceGetIndex").index

    # -- MIG --------------------------------------------------------------------------------
    def nvmlDeviceGetMigMode(self, handle: Handle) -> list[int]:
        dev = self._dev(handle, "nvmlDeviceGetMigMode")
        mode = int(bool(dev.mig))
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Handle) -> int:
        self._dev(handle, "nvmlDeviceGetMaxMigDeviceCount")
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Handle, index: int) -> Handle:
        dev = self._dev(handle, "nvmlDeviceGetMigDeviceHandleByIndex")
        if index >= len(dev.mig):
            raise NVMLError_NotFound()
        return Handle(dev.mig[index].uuid)

    def nvmlDeviceGetGpuInstanceId(self, handle: Handle) -> int:
        return self._dev(handle, "nvmlDeviceGetGpuInstanceId").gi

    def nvmlDeviceGetComputeInstanceId(self, handle: Handle) -> int:
        return self._dev(handle, "nvmlDeviceGetComputeInstanceId").ci

    def nvmlDeviceGetAttributes_v2(self, handle: Handle) -> c_nvmlDeviceAttributes:
        """MIG device handles only, as NVML documents; a whole GPU answers NotSupported."""
        dev = self._dev(handle, "nvmlDeviceGetAttributes")
        if dev.parent is None:
            raise NVMLError_NotSupported()
        return c_nvmlDeviceAttributes(
            multiprocessorCount=14 * dev.ci_slices,
            gpuInstanceSliceCount=dev.gi_slices,
            computeInstanceSliceCount=dev.ci_slices,
            memorySizeMB=dev.memory_size_mb,
        )

    nvmlDeviceGetAttributes = nvmlDeviceGetAttributes_v2

    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: Handle, profile: int, version: int = 2) -> Any:
        """Static profile info of a whole GPU; profiles it lacks answer NotSupported, MIG handles InvalidArgument."""
        dev = self._dev(handle, "nvmlDeviceGetGpuInstanceProfileInfo")
        if dev.parent is not None:
            raise NVMLError_InvalidArgument()
        slices = dev.gi_profiles.get(profile)
        if slices is None:
            raise NVMLError_NotSupported()
        if version == 2:
            info: Any = c_nvmlGpuInstanceProfileInfo_v2_t()
        elif version == 1:
            info = c_nvmlGpuInstanceProfileInfo_t()
        else:
            raise NVMLError_FunctionNotFound()
        total = max(dev.gi_profiles.values())
        info.id, info.sliceCount, info.instanceCount = profile, slices, total // slices
        eighths = {1: 1, 2: 2, 3: 4, 4: 4}.get(slices, 8)  # A100/H100 memory slices are eighths: 3g.40gb holds 4 of 8
        info.multiprocessorCount, info.memorySizeMB = 14 * slices, int(dev.memory_total // 2**20 * eighths / 8 * 0.98)
        return info

    # -- readings ---------------------------------------------------------------------------
    def nvmlDeviceGetMemoryInfo(self, handle: Handle) -> c_nvmlMemory_t:
        dev = self._dev(handle, "nvmlDeviceGetMemoryInfo")
        return c_nvmlMemory_t(total=dev.memory_total, free=dev.memory_total - dev.memory_used, used=dev.memory_used)

    def nvmlDeviceGetUtilizationRates(self, handle: Handle) -> c_nvmlUtilization_t:
        dev = self._dev(handle, "nvmlDeviceGetUtilizationRates")
        return c_nvmlUtilization_t(gpu=dev.util_gpu, memory=dev.util_memory)

    def nvmlDeviceGetPowerUsage(self, handle: Handle) -> int:
        return self._dev(handle, "nvmlDeviceGetPowerUsage").power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Handle) -> int:
        return self._dev(handle, "nvmlDeviceGetTotalEnergyConsumption").energy_mj

    def nvmlDeviceGetClockInfo(self, handle: Handle, clock_type: int) -> int:
        dev = self._dev(handle, "nvmlDeviceGetClockInfo")
        if clock_type != NVML_CLOCK_SM:
            raise NVMLError_NotSupported()
        return dev.sm_clock_mhz

    def nvmlDeviceGetTemperature(self, handle: Handle, sensor: int) -> int:
        dev = self._dev(handle, "nvmlDeviceGetTemperature")
        if sensor != NVML_TEMPERATURE_GPU:
            raise NVMLError_NotSupported()
        return dev.temperature_c

    def nvmlDeviceGetTotalEccErrors(self, handle: Handle, error_type: int, counter_type: int) -> int:
        dev = self._dev(handle, "nvmlDeviceGetTotalEccErrors")
        return dev.ecc_corrected if error_type == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED else dev.ecc_uncorrected

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Handle) -> list[nvmlFriendlyObject]:
        dev = self._dev(handle, "nvmlDeviceGetComputeRunningProcesses")
        return [
            nvmlFriendlyObject({"pid": pid, "usedGpuMemory": mem, "gpuInstanceId": dev.gi, "computeInstanceId": dev.ci})
            for pid, mem in dev.processes.items()
        ]

    def nvmlDeviceGetSamples(self, handle: Handle, sampling_type: int, last_seen_us: int) -> tuple[int, list[c_nvmlSample_t]]:
        dev = self._dev(handle, "nvmlDeviceGetSamples")
        if sampling_type != NVML_GPU_UTILIZATION_SAMPLES:
            raise NVMLError_NotSupported()
        out = []
        for ts, value in dev.util_samples:
            if ts > last_seen_us:
                sample = c_nvmlSample_t(timeStamp=ts)
                sample.sampleValue.uiVal = value
                out.append(sample)
        if not out:
            raise NVMLError_NotFound()
        return NVML_VALUE_TYPE_UNSIGNED_INT, out

    def nvmlDeviceGetProcessUtilization(self, handle: Handle, last_seen_us: int) -> list[c_nvmlProcessUtilizationSample_t]:
        dev = self._dev(handle, "nvmlDeviceGetProcessUtilization")
        out = [
            c_nvmlProcessUtilizationSample_t(pid=pid, timeStamp=ts, smUtil=sm, memUtil=0, encUtil=0, decUtil=0)
            for pid, ts, sm in dev.process_samples
            if ts > last_seen_us
        ]
        if not out:
            raise NVMLError_NotFound()
        return out

    # -- events (XID) -------------------------------------------------------------------------
    def nvmlEventSetCreate(self) -> list[str]:
        self.calls += 1
        return []

    def nvmlDeviceRegisterEvents(self, handle: Handle, event_types: int, event_set: list[str]) -> None:
        self._dev(handle, "nvmlDeviceRegisterEvents")
        event_set.append(handle.uuid)

    def nvmlEventSetWait_v2(self, event_set: list[str], timeout_ms: int) -> c_nvmlEventData_t:
        self.calls += 1
        for device_uuid in event_set:
            dev = self._all()[device_uuid]
            if dev.xids:
                return c_nvmlEventData_t(eventType=nvmlEventTypeXidCriticalError, eventData=dev.xids.pop(0))
        raise NVMLError_Timeout()

    def nvmlEventSetFree(self, event_set: list[str]) -> None:
        event_set.clear()


# ---------------------------------------------------------------------------------------------
# Seeded workload simulator
# ---------------------------------------------------------------------------------------------

MIG_MODELS = {"NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"}
MODELS = [
    ("NVIDIA H100 80GB HBM3", 80 * 2**30, 700, 1980),
    ("NVIDIA L40S", 48 * 2**30, 350, 2520),
    ("NVIDIA A100-SXM4-80GB", 80 * 2**30, 400, 1410),
]
SAMPLE_PERIOD_US = 166_667  # the driver keeps ~6 utilization samples per second


@dataclass
class _Phase:
    kind: str  # idle | training | inference
    until: float
    level: float
    pid: int


class SimulatedNvml(NvmlDouble):
    """Realistic traces: idle gaps, steady training jobs, bursty inference; power, energy and heat follow load.

    ``mig`` splits GPUs into MIG instances (GPU index -> profiles, e.g. ``{0: ["3g.40gb", "2g.20gb"]}``);
    each instance then runs its own workload phases and the parent's power follows their load by slices.
    """

    def __init__(
        self,
        gpus: int = 8,
        *,
        seed: int = 7,
        node: str = "sim",
        clock: Callable[[], float] = time.time,
        mig: dict[int, list[str]] | None = None,
    ) -> None:
        self.rng = random.Random(f"{seed}/{node}")
        model, mem, tdp, clk = MODELS[self.rng.randrange(len(MODELS))]
        devices = [
            DeviceState(
                uuid=f"GPU-{uuid.UUID(int=self.rng.getrandbits(128))}",
                name=model,
                index=i,
                memory_total=mem,
                gi_profiles=dict(A100_GI_PROFILES) if model in MIG_MODELS else {},
            )
            for i in range(gpus)
        ]
        for index, profiles in (mig or {}).items():
            if not 0 <= index < gpus:
                raise ValueError(f"MIG layout for GPU {index}: the simulated node has GPUs 0..{gpus - 1}")
            if model not in MIG_MODELS:
                raise ValueError(f"MIG layout for GPU {index}: {model} (seed {seed}, node {node!r}) has no MIG; try another seed or node")
            split_mig(devices[index], profiles)
        super().__init__(devices, clock=clock)
        self.tdp_mw, self.max_clock = tdp * 1000, clk
        self.idle_mw = int(self.tdp_mw * 0.1)
        self._now = clock()
        self._phases = [self._next_phase(self._now) for _ in self._leaves()]
        self._next_pid = 4000

    def _leaves(self) -> list[DeviceState]:
        """What runs workloads: each MIG instance, or the whole GPU."""
        return [leaf for dev in self.devices for leaf in (dev.mig or [dev])]

    def _next_phase(self, now: float) -> _Phase:
        kind = self.rng.choices(["idle", "training", "inference"], weights=[2, 3, 4])[0]
        duration = self.rng.uniform(30, 600) if kind != "inference" else self.rng.uniform(20, 300)
        self._next_pid = getattr(self, "_next_pid", 4000) + self.rng.randint(1, 50)
        level = {"idle": 0.0, "training": self.rng.uniform(80, 99), "inference": self.rng.uniform(20, 70)}[kind]
        return _Phase(kind, now + duration, level, self._next_pid)

    def _run_leaf(self, k: int, leaf: DeviceState, now: float) -> float:
        """Move one workload forward; returns its utilization (%)."""
        phase = self._phases[k]
        if now >= phase.until:
            phase = self._phases[k] = self._next_phase(now)
        if phase.kind == "idle":
            util = 0.0
        elif phase.kind == "training":
            util = phase.level + self.rng.uniform(-3, 1)
        else:
            util = max(0.0, phase.level * (0.6 + 0.5 * math.sin(now / 7 + k)) + self.rng.uniform(-10, 10))
        util = min(100.0, max(0.0, util))
        leaf.util_gpu = round(util)
        leaf.util_memory = round(util * 0.6)
        if phase.kind == "idle":
            leaf.processes.clear()
            leaf.memory_used = 512 * 2**20
        else:
            used = int(leaf.memory_total * (0.85 if phase.kind == "training" else 0.45))
            leaf.processes = {phase.pid: used}
            leaf.memory_used = used + 512 * 2**20
        ts = int(now * 1e6)
        last = leaf.util_samples[-1][0] if leaf.util_samples else 0
        steps = min(12, max(1, (ts - last) // SAMPLE_PERIOD_US)) if last else 1
        for j in range(int(steps), 0, -1):
            leaf.util_samples.append((ts - (j - 1) * SAMPLE_PERIOD_US, leaf.util_gpu))
        if leaf.processes:
            leaf.process_samples.append((phase.pid, ts, leaf.util_gpu))
        return util

    def advance(self) -> None:
        now = self.clock()
        if now - self._now < 0.05:  # one state step per 50 ms is plenty, and keeps the agent cheap
            return
        dt = now - self._now
        k = 0
        for dev in self.devices:
            if dev.mig:  # the parent's power follows its instances' load, weighted by compute slices
                total = max(dev.gi_profiles.values())
                utils = []
                for leaf in dev.mig:
                    utils.append((leaf.ci_slices / total, self._run_leaf(k, leaf, now)))
                    k += 1
                load = sum(w * (u / 100) ** 1.2 for w, u in utils)
                util = sum(w * u for w, u in utils)
            else:
                util = self._run_leaf(k, dev, now)
                k += 1
                load = (util / 100) ** 1.2
            dev.power_mw = int(self.idle_mw + (self.tdp_mw - self.idle_mw) * load)
            dev.energy_mj += int(dev.power_mw * dt)  # mW * s = mJ
            dev.temperature_c = min(88, 32 + int(util * 0.5))
            dev.sm_clock_mhz = 210 if util == 0 else self.max_clock
        self._now = now


def simulated_samples(
    node: str,
    gpus: int,
    start: float,
    intervals: int,
    *,
    interval_seconds: float = 5.0,
    polls_per_interval: int = 5,
    seed: int = 7,
    mig: dict[int, list[str]] | None = None,
) -> list[GpuSample]:
    """A reproducible GPU trace for ``node`` as the real collector would publish it (same sampler code,
    simulated clock): for the fleet simulator and for tests. ``start`` is epoch seconds."""
    from collectors.sampler import NvmlSampler

    now = [start - interval_seconds]  # one warm-up interval establishes energy baselines

    def clock() -> float:
        return now[0]

    sampler = NvmlSampler(SimulatedNvml(gpus, seed=seed, node=node, clock=clock, mig=mig), node, clock=clock)
    sampler.start()
    out: list[GpuSample] = []
    for k in range(intervals + 1):
        sampler.begin(now[0])
        sampler.poll()
        for _ in range(polls_per_interval):
            now[0] += interval_seconds / polls_per_interval
            sampler.poll()
        samples = sampler.finish(now[0])
        if k:
            out.extend(samples)
    return out
