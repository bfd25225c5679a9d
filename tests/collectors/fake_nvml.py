"""A scriptable pynvml for tests: ``collectors.simnvml.NvmlDouble`` plus a manual clock.

The double reproduces pynvml's function names, ctypes result structs (``c_nvmlMemory_t``,
``c_nvmlUtilization_t``, ``c_nvmlSample_t``, MIG's ``c_nvmlDeviceAttributes`` and
``c_nvmlGpuInstanceProfileInfo_v2_t`` ...) and raises pynvml's real exception classes
(``NVMLError_NotSupported``, ``NVMLError_GpuIsLost`` ...), so the sampler runs the same code
paths it runs against a real driver. ``split_mig`` turns a GPU into MIG instances by profile name.
"""

from __future__ import annotations

from collectors.simnvml import DeviceState, Handle, NvmlDouble, split_mig

__all__ = ["Clock", "DeviceState", "FakeNvml", "Handle", "make_fake", "split_mig"]

T0 = 1_800_000_000.0  # an aligned wall-clock second (2027-01-15)


class Clock:
    """Manual wall clock."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def tick(self, seconds: float) -> float:
        self.t += seconds
        return self.t


class FakeNvml(NvmlDouble):
    """NvmlDouble whose state only changes when a test changes it."""

    def device(self, index: int) -> DeviceState:
        return self.devices[index]


def make_fake(n: int = 2, clock: Clock | None = None, **fields: object) -> FakeNvml:
    """``n`` H100-like GPUs with stable uuids GPU-0000..., ready for ``nvmlInit``."""
    devices = [DeviceState(uuid=f"GPU-{i:04d}-aaaa", index=i, **fields) for i in range(n)]  # type: ignore[arg-type]
    return FakeNvml(devices, clock=clock or Clock())
