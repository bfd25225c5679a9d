"""Asks the kubelet which pod holds each GPU (or MIG instance), over its pod-resources unix socket.

One ``List`` call per sample interval, with a short deadline so a hung kubelet costs at most
``timeout_seconds`` of a worker thread. A failed call (socket missing, kubelet restarting,
deadline) is counted by reason, logged once per outage, and answered with the last good
answer while it is younger than ``max_age_seconds`` (assignments change rarely; an old one
could charge a GPU to a pod that has gone). The channel is rebuilt after every failure, so a
kubelet that comes back on the same path is reached at the next interval, not after gRPC's
reconnect backoff.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    import grpc

    from collectors.podresources.api_pb2 import ListPodResourcesResponse
    from collectors.podresources.api_pb2_grpc import PodResourcesListerStub

log = structlog.get_logger()

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # the kubelet's own client helper allows 16 MiB answers
TIME_SLICING_SEPARATOR = "::"  # NVIDIA device plugin time-slicing replicas: "GPU-<uuid>::<replica>"


@dataclass(frozen=True)
class DeviceAssignment:
    """One pod container holding one device (a whole GPU, a MIG instance, or a time-sliced replica)."""

    namespace: str
    pod: str
    container: str
    resource_name: str


@dataclass
class PodResourcesStats:
    """Counters the metrics endpoint exports."""

    calls: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # reason -> failed calls
    last_success: float = 0.0  # wall time of the last answer


def device_uuid(device_id: str) -> str:
    """The NVML uuid behind a device-plugin id: ``GPU-…``/``MIG-…`` as is, minus a time-slicing ``::N`` suffix."""
    return device_id.split(TIME_SLICING_SEPARATOR, 1)[0]


def index_assignments(response: ListPodResourcesResponse, resource_prefix: str = "nvidia.com/") -> dict[str, list[DeviceAssignment]]:
    """Device uuid -> the pod containers holding it, for resources named ``resource_prefix…``.

    ``nvidia.com/gpu`` and ``nvidia.com/mig-3g.40gb`` both qualify; several pods appear under one
    uuid when the device plugin time-slices a GPU.
    """
    out: dict[str, list[DeviceAssignment]] = {}
    for pod in response.pod_resources:
        for container in pod.containers:
            for devices in container.devices:
                if not devices.resource_name.startswith(resource_prefix):
                    continue
                holder = DeviceAssignment(pod.namespace, pod.name, container.name, devices.resource_name)
                for device_id in devices.device_ids:
                    holders = out.setdefault(device_uuid(device_id), [])
                    if holder not in holders:
                        holders.append(holder)
    return out


class PodResourcesClient:
    """``PodResourcesLister.List`` over ``unix://<socket_path>``, failing fast and recovering by itself."""

    def __init__(
        self,
        socket_path: Path,
        *,
        timeout_seconds: float = 1.0,
        max_age_seconds: float = 30.0,
        resource_prefix: str = "nvidia.com/",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.socket_path = socket_path
        self.timeout_seconds = timeout_seconds
        self.max_age_seconds = max_age_seconds
        self.resource_prefix = resource_prefix
        self.clock = clock
        self.stats = PodResourcesStats()
        self._channel: grpc.Channel | None = None
        self._stub: PodResourcesListerStub | None = None
        self._last: dict[str, list[DeviceAssignment]] = {}
        self._failing: str | None = None  # reason of the outage in progress, if any

    def _connect(self) -> PodResourcesListerStub:
        import grpc  # only agents that read pod-resources pay for it

        from collectors.podresources.api_pb2_grpc import PodResourcesListerStub

        if self._stub is None:
            self._channel = grpc.insecure_channel(
                f"unix:{self.socket_path.absolute()}",
                options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.enable_retries", 0)],
            )
            self._stub = PodResourcesListerStub(self._channel)
        return self._stub

    def assignments(self) -> dict[str, list[DeviceAssignment]]:
        """Device uuid -> holders; on failure the last good answer while fresh, else nothing."""
        import grpc

        from collectors.podresources.api_pb2 import ListPodResourcesRequest

        self.stats.calls += 1
        if not self.socket_path.exists():
            return self._failed("socket_missing", f"{self.socket_path} does not exist (kubelet down, or the hostPath not mounted)")
        try:
            response = self._connect().List(ListPodResourcesRequest(), timeout=self.timeout_seconds)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            return self._failed(
                code.name.lower() if code is not None else "rpc_error", exc.details() if hasattr(exc, "details") else str(exc)
            )
        self._last = index_assignments(response, self.resource_prefix)
        self.stats.last_success = self.clock()
        if self._failing is not None:
            log.info("pod-resources API answering again", socket=str(self.socket_path), after=self._failing)
            self._failing = None
        return self._last

    def _failed(self, reason: str, detail: str | None) -> dict[str, list[DeviceAssignment]]:
        self.close()  # a fresh channel next time: the kubelet comes back on a new socket, no reconnect backoff to wait out
        self.stats.errors[reason] += 1
        if reason != self._failing:
            log.warning(
                "pod-resources API unavailable; idle GPUs held by pods are not attributed until it answers",
                socket=str(self.socket_path),
                reason=reason,
                detail=detail,
                serving_last_answer_for_seconds=self.max_age_seconds,
            )
            self._failing = reason
        if self.stats.last_success and self.clock() - self.stats.last_success <= self.max_age_seconds:
            return self._last
        return {}

    def close(self) -> None:
        """Drop the channel (the next call opens a new one)."""
        if self._channel is not None:
            self._channel.close()
        self._channel = self._stub = None
