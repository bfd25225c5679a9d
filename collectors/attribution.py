"""Fills each sample's processes with container, pod, namespace and chargeback labels.

Order of evidence: the process's cgroup -> container id -> pod list; outside Kubernetes,
user and command from /proc. A GPU (or MIG instance) the kubelet assigned to a pod with no
process of that pod on it gets a placeholder process (pid 0) naming that pod, with the pod's
labels when the pod list is configured, so idle-but-reserved GPUs are charged to their holder.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from collectors.cgroups import ProcInfo, read_proc
from collectors.kubelet import PodDirectory, PodRef
from collectors.podresources.client import DeviceAssignment, PodResourcesClient
from schemas import GpuProcess, GpuSample

ASSIGNED_IDLE_PID = 0


class Attributor:
    """Enriches ``GpuSample.processes``; caches /proc lookups by pid (reset when a pid disappears)."""

    def __init__(self, proc_root: Path | None, pods: PodDirectory | None = None, pod_resources: PodResourcesClient | None = None) -> None:
        self.proc_root = proc_root
        self.pods = pods
        self.pod_resources = pod_resources
        self._procs: dict[int, ProcInfo] = {}

    @property
    def may_block(self) -> bool:
        """True when attributing calls the network (API server, kubelet): run it off the event loop."""
        return self.pods is not None or self.pod_resources is not None

    def _proc(self, pid: int) -> ProcInfo:
        info = self._procs.get(pid)
        if info is None or info.command is None:
            assert self.proc_root is not None
            info = self._procs[pid] = read_proc(self.proc_root, pid)
        return info

    def attribute(self, samples: list[GpuSample]) -> list[GpuSample]:
        """Return the samples with every process identified as far as the evidence allows."""
        assignments = self.pod_resources.assignments() if self.pod_resources is not None else {}
        pods_by_name: dict[tuple[str, str], PodRef] = {}
        if self.pods is not None and assignments:
            self.pods.refresh()
            pods_by_name = {(r.namespace, r.pod): r for r in self.pods.by_uid.values()}
        live: set[int] = set()
        out = []
        for sample in samples:
            processes = []
            for proc in sample.processes:
                live.add(proc.pid)
                processes.append(self._one(proc))
            processes += placeholders(processes, assignments.get(sample.gpu_uuid, []), pods_by_name)
            out.append(replace(sample, processes=processes))
        for pid in set(self._procs) - live:
            del self._procs[pid]
        return out

    def _one(self, proc: GpuProcess) -> GpuProcess:
        if self.proc_root is None:  # simulated GPUs: their pids are not this machine's processes
            return proc
        info = self._proc(proc.pid)
        ref = self.pods.lookup(info.container_id, info.pod_uid) if self.pods is not None else None
        return replace(
            proc,
            command=info.command,
            user=info.user,
            container_id=info.container_id,
            pod=ref.pod if ref else None,
            namespace=ref.namespace if ref else None,
            labels=dict(ref.labels) if ref else {},
        )

    def close(self) -> None:
        if self.pod_resources is not None:
            self.pod_resources.close()


def placeholders(
    processes: list[GpuProcess], holders: list[DeviceAssignment], pods_by_name: dict[tuple[str, str], PodRef]
) -> list[GpuProcess]:
    """One pid-0 process per pod holding the device that has no process of its own on it."""
    present = {(p.namespace, p.pod) for p in processes}
    out = []
    for holder in holders:
        key = (holder.namespace, holder.pod)
        if key in present:
            continue
        present.add(key)
        ref = pods_by_name.get(key)
        out.append(GpuProcess(pid=ASSIGNED_IDLE_PID, namespace=holder.namespace, pod=holder.pod, labels=dict(ref.labels) if ref else {}))
    return out
