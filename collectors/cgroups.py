"""pid -> container id (and pod UID) from ``/proc/<pid>/cgroup``, for cgroup v1 and v2.

Covers containerd (``cri-containerd-<id>.scope``), CRI-O (``crio-<id>.scope``), Docker
(``docker-<id>.scope`` and ``/docker/<id>``) and the kubelet's cgroupfs layout
(``/kubepods/<qos>/pod<uid>/<id>``) as well as its systemd layout
(``kubepods-<qos>-pod<uid>.slice``).
"""

from __future__ import annotations

import pwd
import re
from dataclasses import dataclass
from pathlib import Path

HEX64 = r"[0-9a-f]{64}"
CONTAINER_PATTERNS = [
    re.compile(rf"cri-containerd-({HEX64})\.scope"),
    re.compile(rf"crio-({HEX64})\.scope"),
    re.compile(rf"docker-({HEX64})\.scope"),
    re.compile(rf"/docker/({HEX64})(?:/|$)"),
    re.compile(rf"/kubepods[^\n]*/pod[0-9a-f_-]+/({HEX64})(?:/|$)"),
    re.compile(rf"/crio/({HEX64})(?:/|$)"),
    re.compile(rf"/containerd/({HEX64})(?:/|$)"),
]
POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")


@dataclass(frozen=True)
class CgroupInfo:
    """What a process's cgroup path tells about its container."""

    container_id: str | None
    pod_uid: str | None


def parse_cgroup(text: str) -> CgroupInfo:
    """Parse the content of ``/proc/<pid>/cgroup`` (v1: many lines, v2: one ``0::`` line)."""
    container_id = pod_uid = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        path = parts[2]
        if "crio-conmon-" in path:  # CRI-O's monitor process, not the container
            continue
        if container_id is None:
            for pattern in CONTAINER_PATTERNS:
                match = pattern.search(path)
                if match:
                    container_id = match.group(1)
                    break
        if pod_uid is None:
            match = POD_UID.search(path)
            if match:
                pod_uid = match.group(1).replace("_", "-")
        if container_id and pod_uid:
            break
    return CgroupInfo(container_id, pod_uid)


@dataclass(frozen=True)
class ProcInfo:
    """A process as /proc shows it: identity for attribution outside Kubernetes too."""

    pid: int
    command: str | None
    user: str | None
    container_id: str | None
    pod_uid: str | None


def read_proc(proc_root: Path, pid: int) -> ProcInfo:
    """Container, command and user of ``pid``; fields that cannot be read (process gone, hidepid) are None."""
    base = proc_root / str(pid)
    info = CgroupInfo(None, None)
    try:
        info = parse_cgroup((base / "cgroup").read_text())
    except OSError:
        pass
    command = user = None
    try:
        command = (base / "comm").read_text().strip() or None
    except OSError:
        pass
    try:
        for line in (base / "status").read_text().splitlines():
            if line.startswith("Uid:"):
                user = _user_name(int(line.split()[1]))
                break
    except (OSError, ValueError, IndexError):
        pass
    return ProcInfo(pid, command, user, info.container_id, info.pod_uid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
