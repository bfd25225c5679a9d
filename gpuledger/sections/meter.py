"""The ``meter`` section: the usage-metering middleware inside vLLM's server process.

vLLM instantiates the middleware with only ``app``, so it reads the environment (and
``GPULEDGER_CONFIG`` / ``./gpuledger.yaml``) through the same loader as every other process.
Variables are ``GPULEDGER_METER__<FIELD>``; ``GPULEDGER_METER_<FIELD>``, documented before the one
settings tree, is still read as an alias.
"""

from __future__ import annotations

from pydantic import Field

from gpuledger.sections import Section


class MeterSettings(Section):
    """What the middleware adds to each event besides Kafka: caller, placement, queue size."""

    key_header: str | None = Field(None, description="Take the caller id from this header instead of hashing the bearer key.")
    backend: str = Field("vllm", description="The event's backend kind.")
    deployment: str = Field("", description="Deployment name; defaults to POD_NAME.")
    gpu_uuids: str = Field("", description="Comma-separated GPU UUIDs; defaults to NVIDIA_VISIBLE_DEVICES when it lists UUIDs.")
    queue_size: int = Field(10_000, ge=1, description="Events buffered while Kafka is slow; beyond this they are dropped and counted.")
