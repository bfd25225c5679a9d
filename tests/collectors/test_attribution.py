"""pid -> container -> pod attribution against fixture /proc trees and real servers playing the kubelet (HTTP pod list, gRPC pod-resources)."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.attribution import ASSIGNED_IDLE_PID, Attributor
from collectors.cgroups import parse_cgroup, read_proc
from collectors.kubelet import PodDirectory, index_pod_list
from collectors.podresources.client import PodResourcesClient
from gpuledger.sections.collector import DEFAULT_POD_LABEL_KEYS, CollectorSettings
from gpuledger.settings import load_settings
from tests.collectors.conftest import CID, CID2, POD_UID, POD_UID_US, gpu_sample
from tests.collectors.kubelet_grpc import PodResourcesServer, container, pod

CGROUP_CASES = {
    "containerd v2 systemd": (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_UID_US}.slice/cri-containerd-{CID}.scope\n",
        CID,
        POD_UID,
    ),
    "crio v2 systemd besteffort": (
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_UID_US}.slice/crio-{CID}.scope\n",
        CID,
        POD_UID,
    ),
    "guaranteed v2 systemd": (f"0::/kubepods.slice/kubepods-pod{POD_UID_US}.slice/cri-containerd-{CID}.scope\n", CID, POD_UID),
    "docker scope": (f"0::/system.slice/docker-{CID}.scope\n", CID, None),
    "docker v1": (f"12:memory:/docker/{CID}\n11:cpu,cpuacct:/docker/{CID}\n1:name=systemd:/docker/{CID}\n", CID, None),
    "kubepods v1 cgroupfs burstable": (
        f"12:pids:/kubepods/burstable/pod{POD_UID}/{CID}\n4:memory:/kubepods/burstable/pod{POD_UID}/{CID}\n0::/\n",
        CID,
        POD_UID,
    ),
    "kubepods v1 cgroupfs besteffort": (f"5:cpuset:/kubepods/besteffort/pod{POD_UID}/{CID}\n", CID, POD_UID),
    "kubepods v1 guaranteed": (f"5:devices:/kubepods/pod{POD_UID}/{CID}\n", CID, POD_UID),
    "crio conmon is not the container": (f"0::/kubepods.slice/kubepods-pod{POD_UID_US}.slice/crio-conmon-{CID2}.scope\n", None, None),
    "plain host process": ("0::/user.slice/user-1000.slice/session-3.scope\n", None, None),
}


@pytest.mark.parametrize("case", list(CGROUP_CASES))
def test_cgroup_formats(case: str) -> None:
    text, container, pod_uid = CGROUP_CASES[case]
    info = parse_cgroup(text)
    assert info.container_id == container
    if case != "crio conmon is not the container":
        assert info.pod_uid == pod_uid


def make_proc(root: Path, pid: int, cgroup: str, comm: str, uid: int) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "cgroup").write_text(cgroup)
    (d / "comm").write_text(comm + "\n")
    (d / "status").write_text(f"Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t0\t0\t0\t0\n")


def test_read_proc_outside_kubernetes_gives_user_and_command(tmp_path: Path) -> None:
    make_proc(tmp_path, 77, "0::/user.slice/session-1.scope\n", "python3", 0)
    make_proc(tmp_path, 78, "0::/user.slice/session-1.scope\n", "train", 54321)
    assert read_proc(tmp_path, 77).user == "root" and read_proc(tmp_path, 77).command == "python3"
    assert read_proc(tmp_path, 78).user == "54321"  # unknown uid: the number, not a crash
    gone = read_proc(tmp_path, 99)
    assert (gone.command, gone.user, gone.container_id) == (None, None, None)


def test_processes_attributed_to_pods_through_the_kubelet(
    tmp_path: Path, kubelet: tuple[str, list[str]], pod_resources_server: PodResourcesServer
) -> None:
    base, seen = kubelet
    proc = tmp_path / "proc"
    make_proc(proc, 10, CGROUP_CASES["containerd v2 systemd"][0], "python", 0)
    make_proc(proc, 11, f"0::/kubepods.slice/kubepods-pod0000aaaa_0000_0000_0000_000000000001.slice/crio-{CID2}.scope\n", "vllm", 1000)
    make_proc(proc, 12, "0::/user.slice/session-2.scope\n", "bench", 0)
    pod_resources_server.lister.pods = [
        pod("research", "idle-reserver", container("c", ("nvidia.com/gpu", ["GPU-idle"]))),
        pod("ml", "trainer-0", container("main", ("nvidia.com/gpu", ["GPU-busy"]))),
    ]
    pods = PodDirectory(
        base + "/pods?fieldSelector=spec.nodeName={node}".replace("{node}", "gpu-7"), label_names={"team": "team", "project": "project"}
    )
    attributor = Attributor(proc, pods, PodResourcesClient(pod_resources_server.socket_path))
    busy, idle, host = attributor.attribute([gpu_sample("GPU-busy", [10, 11]), gpu_sample("GPU-idle", []), gpu_sample("GPU-host", [12])])

    trainer, vllm = busy.processes
    assert (trainer.pod, trainer.namespace, trainer.container_id, trainer.command, trainer.user) == (
        "trainer-0",
        "ml",
        CID,
        "python",
        "root",
    )
    assert trainer.labels == {"team": "vision", "project": "detector"} and trainer.gpu_memory_bytes == 100
    assert (vllm.pod, vllm.namespace, vllm.labels) == ("vllm-1", "serving", {})
    assert len(busy.processes) == 2  # the assigned pod already has a process: no placeholder
    [reserved] = idle.processes
    assert (reserved.pid, reserved.pod, reserved.namespace, reserved.labels) == (
        ASSIGNED_IDLE_PID,
        "idle-reserver",
        "research",
        {"team": "research", "project": "p9"},
    )
    [plain] = host.processes
    assert (plain.pod, plain.container_id, plain.command, plain.user) == (None, None, "bench", "root")
    assert seen and all(p == "/pods?fieldSelector=spec.nodeName=gpu-7" for p in seen)
    # a second interval within the refresh period does not hit the kubelet again
    calls = len(seen)
    attributor.attribute([gpu_sample("GPU-busy", [10])])
    assert len(seen) == calls


def test_unknown_container_refreshes_once_then_gives_up(tmp_path: Path, kubelet: tuple[str, list[str]]) -> None:
    base, seen = kubelet
    pods = PodDirectory(base + "/pods", label_names={})
    assert pods.lookup("f" * 64, None) is None
    assert len(seen) == 1  # forced refresh is rate-limited (2 s) right after the first fetch
    assert pods.lookup(CID, None) is not None


def test_kubelet_down_keeps_previous_view(tmp_path: Path) -> None:
    pods = PodDirectory("http://127.0.0.1:9/pods", label_names={})
    assert pods.lookup(CID, None) is None and pods.errors == 1


def test_default_label_keys_are_copied_as_they_are_and_aliases_still_work() -> None:
    labels = {
        "gpuledger.dev/org": "acme",
        "gpuledger.dev/team": "vision",
        "team": "old-team",
        "cost-center": "CC-17",
        "gpuledger.dev/cost-centre": "CC-18",
        "costcenter": "CC-19",
        "squad": "llm",
        "app": "x",
        "project": "p1",
    }
    pods = {"items": [{"metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": labels}, "status": {}}]}
    _, by_uid = index_pod_list(pods, CollectorSettings().label_map())
    assert by_uid["u"].labels == {k: v for k, v in labels.items() if k not in ("squad", "app")}
    assert (
        CollectorSettings().pod_label_keys
        == list(DEFAULT_POD_LABEL_KEYS)
        == [
            "gpuledger.dev/org",
            "org",
            "gpuledger.dev/team",
            "team",
            "gpuledger.dev/project",
            "project",
            "gpuledger.dev/cost-centre",
            "cost-center",
            "cost-centre",
            "cost_centre",
            "costcenter",
        ]
    )
    # the deprecated settings still read a custom label into 'team' / 'project', as before
    legacy = CollectorSettings(pod_label_keys=["team", "project"], team_label="squad", project_label="app")
    _, by_uid = index_pod_list(pods, legacy.label_map())
    assert by_uid["u"].labels == {"team": "llm", "project": "x"}


def test_label_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no ./gpuledger.yaml
    monkeypatch.delenv("GPULEDGER_CONFIG", raising=False)
    monkeypatch.setenv("GPULEDGER_COLLECTOR__POD_LABEL_KEYS", "team, example.com/owner")
    assert load_settings().collector.pod_label_keys == ["team", "example.com/owner"]
    monkeypatch.setenv("GPULEDGER_COLLECTOR__POD_LABEL_KEYS", '["org", "cost-center"]')
    assert load_settings().collector.pod_label_keys == ["org", "cost-center"]
    monkeypatch.delenv("GPULEDGER_COLLECTOR__POD_LABEL_KEYS")
    monkeypatch.setenv("GPULEDGER_COLLECTOR_POD_LABEL_KEYS", "team")  # the DaemonSets' older name, still read
    assert load_settings().collector.pod_label_keys == ["team"]
