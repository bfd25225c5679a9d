"""Where the in-vLLM middleware runs, from its ``meter`` settings and what Kubernetes and the NVIDIA device plugin put in the pod's env."""

from __future__ import annotations

import os

from gpuledger.sections.meter import MeterSettings
from inference.metering.events import Placement


def placement(meter: MeterSettings) -> Placement:
    """Deployment, node and GPUs of this server process."""
    gpus = meter.gpu_uuids or os.environ.get("NVIDIA_VISIBLE_DEVICES", "")
    uuids = [g.strip() for g in gpus.split(",") if g.strip().startswith(("GPU-", "MIG-"))]
    return Placement(
        backend=meter.backend,
        deployment=meter.deployment or os.environ.get("POD_NAME", ""),
        node=os.environ.get("NODE_NAME") or None,
        gpu_uuids=uuids,
    )
