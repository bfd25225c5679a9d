"""A real gRPC server speaking the kubelet's pod-resources API (v1 ``PodResourcesLister.List``) on a unix socket.

It is grpcio's own server with the generated servicer, so the collector's client goes through
real HTTP/2 framing, protobuf encoding and unix-socket connects, exactly as against a kubelet.
Containers are sent with the fields a real kubelet adds and our subset leaves out
(``cpu_ids = 3``, ``memory = 4``), as unknown fields on the wire.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

from collectors.podresources import api_pb2, api_pb2_grpc

# ContainerResources field 3 (cpu_ids, packed int64 [2, 3]) and field 4 (memory: ContainerMemory
# {memory_type = "memory", size = 1 GiB}) encoded by hand, as the kubelet's Go code would.
_MEMORY = b"\x0a\x06memory\x10" + bytes([0x80, 0x80, 0x80, 0x80, 0x04])
UPSTREAM_ONLY_FIELDS = b"\x1a\x02\x02\x03" + b"\x22" + bytes([len(_MEMORY)]) + _MEMORY


def container(name: str, *devices: tuple[str, list[str]], numa: int = 0) -> api_pb2.ContainerResources:
    """A container holding ``(resource_name, device_ids)`` devices, with the upstream-only fields appended."""
    msg = api_pb2.ContainerResources(
        name=name,
        devices=[
            api_pb2.ContainerDevices(resource_name=r, device_ids=ids, topology=api_pb2.TopologyInfo(nodes=[api_pb2.NUMANode(ID=numa)]))
            for r, ids in devices
        ],
    )
    wire = msg.SerializeToString() + UPSTREAM_ONLY_FIELDS
    out = api_pb2.ContainerResources()
    out.ParseFromString(wire)  # keeps the unknown fields, and re-sends them
    return out


def pod(namespace: str, name: str, *containers: api_pb2.ContainerResources) -> api_pb2.PodResources:
    return api_pb2.PodResources(namespace=namespace, name=name, containers=list(containers))


class Lister(api_pb2_grpc.PodResourcesListerServicer):
    """Answers ``List`` with ``pods``; ``delay`` seconds late when set (a kubelet under load)."""

    def __init__(self) -> None:
        self.pods: list[api_pb2.PodResources] = []
        self.delay = 0.0
        self.calls = 0
        self._lock = threading.Lock()

    def List(self, request: api_pb2.ListPodResourcesRequest, context: grpc.ServicerContext) -> api_pb2.ListPodResourcesResponse:  # noqa: N802
        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return api_pb2.ListPodResourcesResponse(pod_resources=self.pods)


class PodResourcesServer:
    """The kubelet's pod-resources endpoint; ``stop``/``start`` mimic a kubelet restart on the same path."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.lister = Lister()
        self._server: grpc.Server | None = None

    def start(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        api_pb2_grpc.add_PodResourcesListerServicer_to_server(self.lister, server)
        if server.add_insecure_port(f"unix:{self.socket_path}") == 0:
            raise RuntimeError(f"could not listen on {self.socket_path}")
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None
        self.socket_path.unlink(missing_ok=True)  # the kubelet's socket goes away while it restarts
