"""The collector agent's own configuration (Kafka and topics come from ``gpuledger.settings``).

Environment variables are ``GPULEDGER_COLLECTOR_<FIELD>`` so a DaemonSet can set them
from a ConfigMap; the node name defaults to ``NODE_NAME`` (downward API) or the hostname.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_node_name() -> str:
    """The node this agent runs on: the downward API's NODE_NAME, else the hostname."""
    return os.environ.get("NODE_NAME") or socket.gethostname()


class CollectorSettings(BaseSettings):
    """Everything the GPU collector needs besides Kafka."""

    model_config = SettingsConfigDict(env_prefix="GPULEDGER_COLLECTOR_", extra="forbid")

    source: Literal["nvml", "simulated"] = "nvml"
    interval_seconds: float = Field(5.0, gt=0, description="Length of one sample interval; intervals align to wall-clock multiples.")
    poll_seconds: float = Field(1.0, gt=0, description="How often NVML is polled inside an interval (utilization/power averaging, process union).")
    rediscover_seconds: float = Field(60.0, gt=0, description="How often to look for GPUs that appeared or came back (MIG re-layout, reset).")
    simulated_gpus: int = Field(8, ge=1, le=64)
    simulated_seed: int = 7
    node: str = Field(default_factory=default_node_name)
    spool_dir: Path = Field(Path(".gpuledger/collector-spool"), description="The DaemonSet points this at a hostPath so a restart keeps it.")
    spool_max_bytes: int = Field(256 * 1024 * 1024, ge=64 * 1024)
    spool_segment_bytes: int = Field(4 * 1024 * 1024, ge=4 * 1024)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9402, ge=0, le=65535, description="0 disables the HTTP server.")
    kafka_fresh_seconds: float = Field(60.0, gt=0, description="/healthz fails when Kafka was last reached longer ago than this.")
    team_label: str = "team"
    project_label: str = "project"
    proc_root: Path = Path("/proc")
    pod_list_url: str | None = Field(
        None,
        description="PodList endpoint; '{node}' is replaced. E.g. https://kubernetes.default.svc/api/v1/pods?fieldSelector=spec.nodeName={node}"
        " or the kubelet's http://127.0.0.1:10255/pods.",
    )
    pod_list_refresh_seconds: float = Field(30.0, gt=0)
    service_account_dir: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount")
    pod_resources_socket: Path = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
    pod_resources_json: Path | None = Field(None, description="A ListPodResourcesResponse as JSON (stand-in for the gRPC call).")
