"""Who owns a container in Kubernetes: the node's pod list.

The pod list (a v1 PodList, from the API server with ``fieldSelector=spec.nodeName=<node>``
or the kubelet's ``/pods``) maps container ids and pod UIDs to pod, namespace and the
chargeback labels we copy. Which pod holds which GPU comes from the kubelet's
pod-resources API (``collectors.podresources``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

import structlog

log = structlog.get_logger()


@dataclass(frozen=True)
class PodRef:
    """The pod a process or GPU belongs to, with the chargeback labels we keep."""

    pod: str
    namespace: str
    uid: str = ""
    labels: dict[str, str] = field(default_factory=dict)


def strip_runtime(container_id: str) -> str:
    """``containerd://<id>``, ``cri-o://<id>``, ``docker://<id>`` -> ``<id>``."""
    return container_id.split("://", 1)[-1]


def index_pod_list(pod_list: dict[str, Any], label_names: dict[str, str]) -> tuple[dict[str, PodRef], dict[str, PodRef]]:
    """(container id -> pod, pod uid -> pod) from a v1 PodList; ``label_names`` maps our key -> pod label."""
    by_container: dict[str, PodRef] = {}
    by_uid: dict[str, PodRef] = {}
    for item in pod_list.get("items") or []:
        meta = item.get("metadata") or {}
        pod_labels = meta.get("labels") or {}
        ref = PodRef(
            pod=meta.get("name", ""),
            namespace=meta.get("namespace", ""),
            uid=meta.get("uid", ""),
            labels={ours: pod_labels[theirs] for ours, theirs in label_names.items() if theirs in pod_labels},
        )
        if ref.uid:
            by_uid[ref.uid] = ref
        status = item.get("status") or {}
        for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
            for cs in status.get(key) or []:
                if cs.get("containerID"):
                    by_container[strip_runtime(cs["containerID"])] = ref
    return by_container, by_uid


class PodDirectory:
    """Cached view of this node's pods; refreshed on a timer and (rate-limited) on a cache miss."""

    def __init__(
        self,
        url: str | None,
        *,
        label_names: dict[str, str],
        refresh_seconds: float = 30.0,
        token_file: Path | None = None,
        ca_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.label_names = label_names
        self.refresh_seconds = refresh_seconds
        self.token_file = token_file
        self.ca_file = ca_file
        self.clock = clock
        self.by_container: dict[str, PodRef] = {}
        self.by_uid: dict[str, PodRef] = {}
        self.fetched_at: float | None = None
        self.errors = 0

    def _client(self) -> httpx.Client:
        import httpx  # only agents that look pods up pay for it

        headers = {"Accept": "application/json"}
        if self.token_file and self.token_file.is_file():
            headers["Authorization"] = f"Bearer {self.token_file.read_text().strip()}"
        verify: Any = str(self.ca_file) if self.ca_file and self.ca_file.is_file() else True
        return httpx.Client(headers=headers, verify=verify, timeout=5.0)

    def refresh(self, *, force: bool = False) -> None:
        """Fetch the pod list if it is stale (or ``force`` and at least 2 s since the last try)."""
        if self.url is None:
            return
        now = self.clock()
        age = None if self.fetched_at is None else now - self.fetched_at
        if age is not None and age < (2.0 if force else self.refresh_seconds):
            return
        self.fetched_at = now
        import httpx

        try:
            with self._client() as client:
                response = client.get(self.url)
                response.raise_for_status()
                self.by_container, self.by_uid = index_pod_list(response.json(), self.label_names)
        except (httpx.HTTPError, ValueError) as exc:
            self.errors += 1
            log.warning("pod list unavailable; keeping the previous view", url=self.url.split("?")[0], error=str(exc))

    def lookup(self, container_id: str | None, pod_uid: str | None) -> PodRef | None:
        """The pod owning a container (or pod UID), refreshing once if unknown."""
        if container_id is None and pod_uid is None:
            return None
        self.refresh()
        for attempt in range(2):
            ref = self.by_container.get(container_id or "") or self.by_uid.get(pod_uid or "")
            if ref is not None or attempt:
                return ref
            self.refresh(force=True)
        return None
