"""Shared by the collector tests: container and pod ids, and real servers playing the kubelet (HTTP pod list, gRPC pod-resources)."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from schemas import GpuProcess, GpuSample
from tests.collectors.kubelet_grpc import PodResourcesServer

CID = "3f4e" + "a" * 60
CID2 = "9b1c" + "b" * 60
POD_UID = "1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718"
POD_UID_US = POD_UID.replace("-", "_")


def gpu_sample(uuid: str, pids: Iterable[int] = (), gpu_model: str = "H100") -> GpuSample:
    """One idle sample of ``uuid`` on node ``n`` whose processes (``pid`` x 10 bytes each) are not yet attributed:
    the input the attribution tests hand the ``Attributor``."""
    t = datetime(2027, 1, 1, tzinfo=UTC)
    return GpuSample(
        sample_id=f"n/{uuid}/0",
        node="n",
        gpu_uuid=uuid,
        gpu_index=0,
        gpu_model=gpu_model,
        interval_start=t,
        interval_end=t,
        utilization_pct=0,
        memory_used_bytes=0,
        memory_total_bytes=1,
        power_watts=0,
        processes=[GpuProcess(pid=p, gpu_memory_bytes=p * 10) for p in pids],
    )


POD_LIST = {
    "kind": "PodList",
    "apiVersion": "v1",
    "items": [
        {
            "metadata": {
                "name": "trainer-0",
                "namespace": "ml",
                "uid": POD_UID,
                "labels": {"team": "vision", "project": "detector", "app": "x"},
            },
            "status": {"containerStatuses": [{"name": "main", "containerID": f"containerd://{CID}"}]},
        },
        {
            "metadata": {
                "name": "vllm-1",
                "namespace": "serving",
                "uid": "0000aaaa-0000-0000-0000-000000000001",
                "labels": {"squad": "llm"},
            },
            "status": {"containerStatuses": [{"name": "vllm", "containerID": f"cri-o://{CID2}"}]},
        },
        {
            "metadata": {
                "name": "idle-reserver",
                "namespace": "research",
                "uid": "0000aaaa-0000-0000-0000-000000000002",
                "labels": {"team": "research", "project": "p9"},
            },
            "status": {},
        },
    ],
}


@pytest.fixture
def kubelet() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on 127.0.0.1 answering /pods with a PodList; records the request paths."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.path)
            body = json.dumps(POD_LIST).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def pod_resources_server() -> Iterator[PodResourcesServer]:
    """A real gRPC kubelet pod-resources server on a unix socket in a fresh short temp dir (paths must stay < 108 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="podres-"))
    server = PodResourcesServer(folder / "kubelet.sock")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
