"""Settings of the in-vLLM middleware, from the environment only (vLLM instantiates it with just ``app``).

Kafka comes from gpuledger's own settings (``GPULEDGER_KAFKA__*``, ``GPULEDGER_TOPICS__*``);
placement comes from what Kubernetes and the NVIDIA device plugin put in the pod's env.
"""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from inference.events import Placement


class MeterSettings(BaseSettings):
    """``GPULEDGER_METER_<FIELD>`` variables."""

    model_config = SettingsConfigDict(env_prefix="GPULEDGER_METER_", extra="ignore")

    key_header: str | None = Field(None, description="Take the caller id from this header instead of hashing the bearer key.")
    backend: str = Field("vllm", description="The event's backend kind.")
    deployment: str = Field("", description="Deployment name; defaults to POD_NAME.")
    gpu_uuids: str = Field("", description="Comma-separated GPU UUIDs; defaults to NVIDIA_VISIBLE_DEVICES when it lists UUIDs.")
    queue_size: int = Field(10_000, ge=1, description="Events buffered while Kafka is slow; beyond this they are dropped and counted.")

    def placement(self) -> Placement:
        """Deployment, node and GPUs of this server process."""
        gpus = self.gpu_uuids or os.environ.get("NVIDIA_VISIBLE_DEVICES", "")
        uuids = [g.strip() for g in gpus.split(",") if g.strip().startswith(("GPU-", "MIG-"))]
        return Placement(
            backend=self.backend,
            deployment=self.deployment or os.environ.get("POD_NAME", ""),
            node=os.environ.get("NODE_NAME") or None,
            gpu_uuids=uuids,
        )
