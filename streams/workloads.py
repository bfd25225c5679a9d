"""Who holds a GPU in a window, and which org each holder bills to.

The evidence is each sample's process list (``GpuProcess``: pod, namespace, labels, per-process
SM utilization and memory; pid 0 marks a pod the kubelet assigned the GPU to with nothing running).
A workload is a pod (``namespace/pod``) or, outside Kubernetes, a host command (``host:<command>``).

Payer resolution (README, "The cost model"): the first source that names an org wins —
pod labels naming an org, then the directory's ``namespace`` entry, then the node's owner;
team / project / cost-centre labels then refine whichever entry was found.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from gpuledger.settings import WorkerSettings
from schemas import OrgDirectory

OrgLookup = Callable[[str, str], OrgDirectory | None]
ASSIGNED_IDLE_PID = 0


@dataclass(frozen=True)
class LabelKeys:
    """Pod label keys read for each payer field, first present wins (``worker.*_labels``)."""

    org: tuple[str, ...]
    team: tuple[str, ...]
    project: tuple[str, ...]
    cost_centre: tuple[str, ...]

    @classmethod
    def of(cls, worker: WorkerSettings) -> LabelKeys:
        return cls(tuple(worker.org_labels), tuple(worker.team_labels), tuple(worker.project_labels), tuple(worker.cost_centre_labels))


@dataclass
class Workload:
    """One holder of a GPU in one window, with the evidence its share is split by."""

    name: str
    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    sm_weight: Decimal = Decimal(0)  # Σ per-process SM utilization % x sample microseconds
    memory_weight: int = 0  # Σ per-process GPU memory bytes x sample microseconds
    running: bool = False  # False: only the kubelet's assignment (pid 0) names it


def workload_name(process: dict[str, Any]) -> str | None:
    """``namespace/pod`` for a pod, ``host:<command>`` for a bare process, None when nothing identifies it."""
    if process.get("pod"):
        return f"{process.get('namespace') or ''}/{process['pod']}"
    if process.get("command"):
        return f"host:{process['command']}"
    if process.get("pid"):
        return f"host:pid-{process['pid']}"
    return None


def collect_workloads(samples: Iterable[tuple[int, str]]) -> dict[str, Workload]:
    """Workloads of one GPU window from ``(sample microseconds, processes JSON)`` pairs."""
    found: dict[str, Workload] = {}
    for micros, processes_json in samples:
        for process in json.loads(processes_json or "[]"):
            name = workload_name(process)
            if name is None:
                continue
            workload = found.setdefault(name, Workload(name, process.get("namespace") or "", dict(process.get("labels") or {})))
            if process.get("pid", ASSIGNED_IDLE_PID) != ASSIGNED_IDLE_PID:
                workload.running = True
            sm = process.get("sm_utilization_pct")
            if sm is not None and sm == sm and 0 < sm <= 100:  # NaN and out-of-range readings carry no weight
                workload.sm_weight += Decimal(repr(float(sm))) * micros
            memory = process.get("gpu_memory_bytes") or 0
            if memory > 0:
                workload.memory_weight += int(memory) * micros
    return found


def _label(labels: dict[str, str], keys: tuple[str, ...]) -> str | None:
    return next((labels[k] for k in keys if labels.get(k)), None)


def resolve_payer(workload: Workload, node_owner: OrgDirectory, lookup: OrgLookup, keys: LabelKeys) -> tuple[OrgDirectory, str]:
    """The directory entry billed for ``workload`` and where it came from (label | namespace | node)."""
    labels = workload.labels
    org = _label(labels, keys.org)
    if org:
        entry, source = OrgDirectory(kind="label", key=workload.name, org=org), "label"
    elif workload.namespace and (found := lookup("namespace", workload.namespace)) is not None:
        entry, source = found, "namespace"
    else:
        entry, source = node_owner, "node"
    refined = {
        name: value
        for name, value in (
            ("team", _label(labels, keys.team)),
            ("project", _label(labels, keys.project)),
            ("cost_centre", _label(labels, keys.cost_centre)),
        )
        if value
    }
    return (replace(entry, **refined) if refined else entry), source
