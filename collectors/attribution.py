"""Fills each sample's processes with container, pod, namespace and chargeback labels.

Order of evidence: the process's cgroup -> container id -> pod list; outside Kubernetes,
user and command from /proc. A GPU the kubelet assigned to a pod but with no process on
it gets a placeholder process (pid 0) naming that pod, so idle-but-reserved GPUs are charged.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from collectors.cgroups import ProcInfo, read_proc
from collectors.kubelet import PodDirectory, read_gpu_assignments
from schemas import GpuProcess, GpuSample

ASSIGNED_IDLE_PID = 0


class Attributor:
    """Enriches ``GpuSample.processes``; caches /proc lookups by pid (reset when a pid disappears)."""

    def __init__(self, proc_root: Path | None, pods: PodDirectory | None = None, pod_resources_json: Path | None = None) -> None:
        self.proc_root = proc_root
        self.pods = pods
        self.pod_resources_json = pod_resources_json
        self._procs: dict[int, ProcInfo] = {}

    def _proc(self, pid: int) -> ProcInfo:
        info = self._procs.get(pid)
        if info is None or info.command is None:
            assert self.proc_root is not None
            info = self._procs[pid] = read_proc(self.proc_root, pid)
        return info

    def attribute(self, samples: list[GpuSample]) -> list[GpuSample]:
        """Return the samples with every process identified as far as the evidence allows."""
        assignments = read_gpu_assignments(self.pod_resources_json)
        pods_by_name = {}
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
            owner = assignments.get(sample.gpu_uuid)
            if owner and not any(p.pod == owner[1] and p.namespace == owner[0] for p in processes):
                ref = pods_by_name.get(owner)
                processes.append(GpuProcess(pid=ASSIGNED_IDLE_PID, namespace=owner[0], pod=owner[1],
                                            labels=dict(ref.labels) if ref else {}))
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
            proc, command=info.command, user=info.user, container_id=info.container_id,
            pod=ref.pod if ref else None, namespace=ref.namespace if ref else None,
            labels=dict(ref.labels) if ref else {},
        )
