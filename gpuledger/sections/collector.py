"""The ``collector`` section: the GPU collector agent (Kafka and topics are the shared sections).

Environment variables are ``GPULEDGER_COLLECTOR__<FIELD>``; the DaemonSets written before the one
settings tree use ``GPULEDGER_COLLECTOR_<FIELD>``, still read as aliases. The node name defaults to
``NODE_NAME`` (downward API) or the hostname.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from gpuledger.sections import Section
from gpuledger.sections.labels import COST_CENTRE_LABELS, ORG_LABELS, PROJECT_LABELS, TEAM_LABELS

# Pod labels copied onto every GpuProcess: every key the worker maps to org / team / project / cost centre.
DEFAULT_POD_LABEL_KEYS = (*ORG_LABELS, *TEAM_LABELS, *PROJECT_LABELS, *COST_CENTRE_LABELS)


def default_node_name() -> str:
    """The node this agent runs on: the downward API's NODE_NAME, else the hostname."""
    return os.environ.get("NODE_NAME") or socket.gethostname()


class CollectorSettings(Section):
    """Everything the GPU collector needs besides Kafka: the ``collector`` section."""

    source: Literal["nvml", "simulated"] = "nvml"
    interval_seconds: float = Field(5.0, gt=0, description="Length of one sample interval; intervals align to wall-clock multiples.")
    poll_seconds: float = Field(
        1.0, gt=0, description="How often NVML is polled inside an interval (utilization/power averaging, process union)."
    )
    rediscover_seconds: float = Field(
        60.0, gt=0, description="How often to look for GPUs that appeared or came back (MIG re-layout, reset)."
    )
    simulated_gpus: int = Field(8, ge=1, le=64)
    simulated_seed: int = 7
    node: str = Field(default_factory=default_node_name)
    spool_dir: Path = Field(
        Path(".gpuledger/collector-spool"), description="The DaemonSet points this at a hostPath so a restart keeps it."
    )
    spool_max_bytes: int = Field(256 * 1024 * 1024, ge=64 * 1024)
    spool_segment_bytes: int = Field(4 * 1024 * 1024, ge=4 * 1024)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9402, ge=0, le=65535, description="0 disables the HTTP server.")
    kafka_fresh_seconds: float = Field(60.0, gt=0, description="/healthz fails when Kafka was last reached longer ago than this.")
    pod_label_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_POD_LABEL_KEYS),
        description="Pod labels copied (key and value as they are) onto each process; env: comma-separated or a JSON list.",
    )
    team_label: str | None = Field(
        None, description="Deprecated alias: this pod label is copied under the key 'team' (instead of a 'team' label)."
    )
    project_label: str | None = Field(
        None, description="Deprecated alias: this pod label is copied under the key 'project' (instead of a 'project' label)."
    )
    proc_root: Path = Path("/proc")
    pod_list_url: str | None = Field(
        None,
        description="PodList endpoint; '{node}' is replaced. E.g. https://kubernetes.default.svc/api/v1/pods?fieldSelector=spec.nodeName={node}"
        " or the kubelet's http://127.0.0.1:10255/pods.",
    )
    pod_list_refresh_seconds: float = Field(30.0, gt=0)
    service_account_dir: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount")
    pod_resources_socket: Path | None = Field(
        Path("/var/lib/kubelet/pod-resources/kubelet.sock"),
        description="The kubelet's pod-resources gRPC socket (which pod holds which GPU); empty turns it off. Not used with source=simulated.",
    )
    pod_resources_timeout_seconds: float = Field(
        1.0, gt=0, le=5, description="Deadline of one List call (the next interval's polls wait for it)."
    )
    pod_resources_max_age_seconds: float = Field(
        30.0, ge=0, description="How long the last good answer stands in while the kubelet does not answer."
    )

    @field_validator("pod_label_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        """``a,b,c`` or ``["a","b","c"]`` from the environment; a list as is."""
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else [k.strip() for k in text.split(",") if k.strip()]
        return value

    @field_validator("pod_resources_socket", mode="before")
    @classmethod
    def _empty_is_off(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    def label_map(self) -> dict[str, str]:
        """Key on the process -> pod label it is read from: every ``pod_label_keys`` key as is,
        with the deprecated ``team_label``/``project_label`` read into ``team``/``project``."""
        mapping = {key: key for key in self.pod_label_keys}
        for ours, theirs in (("team", self.team_label), ("project", self.project_label)):
            if theirs:
                mapping[ours] = theirs
        return mapping
