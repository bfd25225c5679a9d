"""The collector against a real gRPC server speaking the kubelet's pod-resources API on a unix socket.

No kubelet can run here, so ``tests/collectors/kubelet_grpc.py`` serves the v1
``PodResourcesLister.List`` with grpcio's own server (real HTTP/2, protobuf, unix socket),
sending the upstream fields our .proto subset omits as unknown fields, like a real kubelet.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from structlog.testing import capture_logs

from collectors.agent import Agent
from collectors.attribution import ASSIGNED_IDLE_PID, Attributor
from collectors.kubelet import PodDirectory
from collectors.metrics import AgentCollector
from collectors.podresources import api_pb2
from collectors.podresources.client import DeviceAssignment, PodResourcesClient, device_uuid
from gpuledger.sections.collector import CollectorSettings
from gpuledger.settings import Settings
from schemas import GpuSample
from tests.collectors.conftest import gpu_sample
from tests.collectors.fake_nvml import Clock, make_fake
from tests.collectors.kubelet_grpc import PodResourcesServer, container, pod

ROOT = Path(__file__).resolve().parents[2]

FLEET = [
    pod("research", "idle-reserver", container("c", ("nvidia.com/gpu", ["GPU-idle"]))),
    pod("ml", "trainer-0", container("main", ("nvidia.com/gpu", ["GPU-busy", "GPU-busy-2"]), ("example.com/fpga", ["F-1"]))),
    pod("notebooks", "nb-alice", container("jupyter", ("nvidia.com/mig-3g.40gb", ["MIG-3g"]), numa=1)),
    pod("notebooks", "nb-bob", container("jupyter", ("nvidia.com/mig-1g.10gb", ["MIG-1g"]))),
    # time-sliced GPU: the device plugin hands out replicas "<uuid>::<n>" to two pods
    pod("serving", "embed-a", container("srv", ("nvidia.com/gpu", ["GPU-shared::0"]))),
    pod("serving", "embed-b", container("srv", ("nvidia.com/gpu", ["GPU-shared::1"]))),
]


def sample(uuid: str, pids: Iterable[int] = ()) -> GpuSample:
    return gpu_sample(uuid, pids, gpu_model="NVIDIA A100-SXM4-80GB")


def holders(s: GpuSample) -> list[tuple[int, str | None, str | None]]:
    return [(p.pid, p.namespace, p.pod) for p in s.processes]


def test_device_ids_map_to_nvml_uuids() -> None:
    assert device_uuid("GPU-1f2e") == "GPU-1f2e" and device_uuid("MIG-77aa") == "MIG-77aa"
    assert device_uuid("GPU-1f2e::3") == "GPU-1f2e"  # time-slicing replica


def test_assignments_whole_gpus_mig_and_time_slicing(pod_resources_server: PodResourcesServer, kubelet: tuple[str, list[str]]) -> None:
    pod_resources_server.lister.pods = FLEET
    client = PodResourcesClient(pod_resources_server.socket_path, timeout_seconds=2.0)
    got = client.assignments()
    assert got["GPU-idle"] == [DeviceAssignment("research", "idle-reserver", "c", "nvidia.com/gpu")]
    assert got["GPU-busy"] == got["GPU-busy-2"] == [DeviceAssignment("ml", "trainer-0", "main", "nvidia.com/gpu")]
    assert got["MIG-3g"] == [DeviceAssignment("notebooks", "nb-alice", "jupyter", "nvidia.com/mig-3g.40gb")]
    assert got["MIG-1g"] == [DeviceAssignment("notebooks", "nb-bob", "jupyter", "nvidia.com/mig-1g.10gb")]
    assert [(h.pod) for h in got["GPU-shared"]] == ["embed-a", "embed-b"]
    assert "F-1" not in got  # not an nvidia.com/ resource
    assert set(got) == {"GPU-idle", "GPU-busy", "GPU-busy-2", "MIG-3g", "MIG-1g", "GPU-shared"}
    assert client.stats.errors == {} and client.stats.last_success > 0

    # Through the attributor: a placeholder (pid 0) for each holding pod without a process there, labels from the pod list.
    pods = PodDirectory(kubelet[0] + "/pods", label_names=CollectorSettings().label_map())
    attributor = Attributor(None, pods, client)
    busy, idle, mig3, mig1, shared, free = attributor.attribute(
        [sample("GPU-busy", [10]), sample("GPU-idle"), sample("MIG-3g"), sample("MIG-1g"), sample("GPU-shared"), sample("GPU-free")]
    )
    [reserved] = idle.processes
    assert (reserved.pid, reserved.namespace, reserved.pod, reserved.labels) == (
        ASSIGNED_IDLE_PID,
        "research",
        "idle-reserver",
        {"team": "research", "project": "p9"},
    )
    assert holders(busy) == [
        (10, None, None),
        (ASSIGNED_IDLE_PID, "ml", "trainer-0"),
    ]  # pid 10 not attributed (no /proc): the pod is still named
    assert holders(mig3) == [(ASSIGNED_IDLE_PID, "notebooks", "nb-alice")] and mig3.processes[0].labels == {}  # not in the pod list
    assert holders(mig1) == [(ASSIGNED_IDLE_PID, "notebooks", "nb-bob")]
    assert holders(shared) == [(ASSIGNED_IDLE_PID, "serving", "embed-a"), (ASSIGNED_IDLE_PID, "serving", "embed-b")]
    assert free.processes == []
    assert pod_resources_server.lister.calls == 2
    client.close()


def test_socket_missing_keeps_sampling_logs_once_and_counts(tmp_path: Path) -> None:
    client = PodResourcesClient(tmp_path / "no-kubelet" / "kubelet.sock")
    attributor = Attributor(None, None, client)
    with capture_logs() as logs:
        for _ in range(3):
            [out] = attributor.attribute([sample("GPU-x", [5])])
            assert holders(out) == [(5, None, None)]
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["reason"] == "socket_missing" and "kubelet.sock" in warnings[0]["socket"]
    assert client.stats.errors == {"socket_missing": 3} and client.stats.calls == 3


def test_kubelet_restart_is_survived_without_restarting_the_collector(pod_resources_server: PodResourcesServer) -> None:
    clock = Clock(1_000.0)
    pod_resources_server.lister.pods = FLEET[:1]
    client = PodResourcesClient(pod_resources_server.socket_path, timeout_seconds=2.0, max_age_seconds=30.0, clock=clock)
    assert list(client.assignments()) == ["GPU-idle"]
    with capture_logs() as logs:
        pod_resources_server.stop()  # kubelet restarting: socket gone
        clock.tick(5)
        assert list(client.assignments()) == ["GPU-idle"]  # the last good answer stands in while fresh
        clock.tick(30)
        assert client.assignments() == {}  # too old to trust
        pod_resources_server.lister.pods = FLEET[:2]
        pod_resources_server.start()  # back, on the same path, with a new socket
        clock.tick(5)
        assert set(client.assignments()) == {"GPU-idle", "GPU-busy", "GPU-busy-2"}
    assert [(e["log_level"], e.get("reason")) for e in logs] == [("warning", "socket_missing"), ("info", None)]
    assert client.stats.errors == {"socket_missing": 2}


def test_kubelet_dying_mid_connection_then_coming_back(pod_resources_server: PodResourcesServer) -> None:
    """A killed kubelet leaves its socket file behind: connecting is refused (gRPC UNAVAILABLE); its next start is found."""
    pod_resources_server.lister.pods = FLEET[:1]
    client = PodResourcesClient(pod_resources_server.socket_path, timeout_seconds=2.0, max_age_seconds=0.0)
    assert client.assignments()
    pod_resources_server.stop()
    with socket.socket(socket.AF_UNIX) as stale:  # bound, never listening: what SIGKILL leaves on disk
        stale.bind(str(pod_resources_server.socket_path))
    assert client.assignments() == {}
    pod_resources_server.start()
    assert list(client.assignments()) == ["GPU-idle"]
    assert client.stats.errors == {"unavailable": 1}


def test_a_hung_kubelet_costs_one_short_deadline(pod_resources_server: PodResourcesServer) -> None:
    pod_resources_server.lister.delay = 1.5
    client = PodResourcesClient(pod_resources_server.socket_path, timeout_seconds=0.2)
    started = time.monotonic()
    assert client.assignments() == {}
    assert time.monotonic() - started < 1.0
    assert client.stats.errors == {"deadline_exceeded": 1}


def test_agent_wires_the_socket_and_exports_the_errors(tmp_path: Path, pod_resources_server: PodResourcesServer) -> None:
    """No GPU here: the agent samples ``tests/collectors/fake_nvml.py`` (pynvml's names, ctypes structs and exceptions),
    and attributes through the real gRPC pod-resources server on its unix socket."""
    pod_resources_server.lister.pods = FLEET[:1]
    fake = make_fake(1)
    fake.devices[0].uuid = "GPU-idle"
    cfg = CollectorSettings(
        node="n",
        spool_dir=tmp_path / "spool",
        metrics_port=0,
        proc_root=tmp_path,
        pod_resources_socket=pod_resources_server.socket_path,
        pod_resources_timeout_seconds=0.5,
    )
    agent = Agent(cfg, Settings(), nvml=fake, clock=fake.clock)
    assert agent.attributor.may_block and agent.attributor.pod_resources is not None
    agent.sampler.start()
    agent.sampler.begin(fake.clock())
    agent.sampler.poll()
    [out] = agent.attributor.attribute(agent.sampler.finish(fake.clock.tick(5)))
    assert holders(out) == [(ASSIGNED_IDLE_PID, "research", "idle-reserver")]
    pod_resources_server.stop()
    agent.attributor.attribute([])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent.sampler, agent.publisher, agent.attributor))
    text = generate_latest(registry).decode()
    assert 'gpuledger_collector_pod_resources_errors_total{reason="socket_missing"} 1.0' in text
    assert "gpuledger_collector_pod_resources_calls_total 2.0" in text
    assert "gpuledger_collector_pod_resources_last_success_timestamp_seconds 1.800000005e+09" in text  # T0 + 5 s, the agent's clock
    agent.attributor.close()


def test_simulated_source_does_not_ask_the_kubelet(tmp_path: Path) -> None:
    cfg = CollectorSettings(source="simulated", spool_dir=tmp_path / "spool", metrics_port=0)
    assert Agent(cfg, Settings()).attributor.pod_resources is None
    assert CollectorSettings(pod_resources_socket="").pod_resources_socket is None  # type: ignore[arg-type]


def test_committed_generated_code_matches_the_proto(tmp_path: Path) -> None:
    """api_pb2*.py are what grpcio-tools makes of api.proto today (the command in api.proto's header)."""
    from grpc_tools import protoc

    proto = "collectors/podresources/api.proto"
    assert (
        protoc.main(
            [
                "protoc",
                f"-I{ROOT}",
                f"-I{Path(protoc.__file__).parent / '_proto'}",
                f"--python_out={tmp_path}",
                f"--pyi_out={tmp_path}",
                f"--grpc_python_out={tmp_path}",
                str(ROOT / proto),
            ]
        )
        == 0
    )
    for name in ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py"):
        generated = (tmp_path / "collectors" / "podresources" / name).read_text()
        assert generated == (ROOT / "collectors" / "podresources" / name).read_text(), f"{name} is stale: regenerate it"


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        ("ListPodResourcesResponse", {"pod_resources": 1}),
        ("PodResources", {"name": 1, "namespace": 2, "containers": 3}),
        ("ContainerResources", {"name": 1, "devices": 2}),
        ("ContainerDevices", {"resource_name": 1, "device_ids": 2, "topology": 3}),
        ("TopologyInfo", {"nodes": 1}),
        ("NUMANode", {"ID": 1}),
    ],
)
def test_field_numbers_are_upstreams(message: str, fields: dict[str, int]) -> None:
    """Upstream's numbers (k8s.io/kubelet/pkg/apis/podresources/v1/api.proto); a renumbering would misread the kubelet."""
    descriptor = getattr(api_pb2, message).DESCRIPTOR
    assert descriptor.full_name == f"v1.{message}"
    assert {f.name: f.number for f in descriptor.fields} == fields
    assert api_pb2.DESCRIPTOR.services_by_name["PodResourcesLister"].methods_by_name["List"].full_name == "v1.PodResourcesLister.List"
