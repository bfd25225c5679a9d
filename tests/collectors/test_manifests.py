"""Every manifest in deploy/k8s validates offline against the Kubernetes schemas; the CRD is checked by hand.

deploy/k8s/collector.yaml is rendered from the Helm chart (tests/deploy checks it is current); these tests read
the file itself, so they need no Helm.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gpuledger.sections.collector import DEFAULT_POD_LABEL_KEYS, CollectorSettings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def documents() -> list[dict[str, Any]]:
    docs = [
        d for f in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d and "apiVersion" in d
    ]  # not collector-values.yaml
    assert docs, "no manifests found"
    return docs


def by_kind(kind: str, name: str | None = None) -> dict[str, Any]:
    [doc] = [d for d in documents() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return doc


@pytest.mark.parametrize("doc", [d for d in documents() if d["apiVersion"] != "monitoring.coreos.com/v1"], ids=lambda d: d["kind"])
def test_builtin_kinds_validate_strictly(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)  # raises on any error


def test_only_the_service_monitor_is_a_crd() -> None:
    kinds = sorted(d["kind"] for d in documents())
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "ConfigMap",
        "DaemonSet",
        "NetworkPolicy",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(by_kind("ServiceMonitor"), kubernetes_validate.latest_version(), strict=True)


def test_service_monitor_selects_the_service_metrics_port() -> None:
    sm, svc = by_kind("ServiceMonitor"), by_kind("Service")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm) == {"apiVersion", "kind", "metadata", "spec"}
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [svc["metadata"]["namespace"]]
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]} and endpoint["path"] == "/metrics"


def test_daemonset_is_locked_down_and_wired_for_gpus() -> None:
    ds = by_kind("DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert pod["runtimeClassName"] == "nvidia" and pod["serviceAccountName"] == by_kind("ServiceAccount")["metadata"]["name"]
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and c["securityContext"]["allowPrivilegeEscalation"] is False
    # uid 0 for the root-owned 0755 kubelet socket, but with every capability dropped and none added
    assert c["securityContext"]["runAsUser"] == 0 and c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    [spool_owner] = pod["initContainers"]
    assert "chown 0:0 /var/lib/gpuledger/spool" in spool_owner["command"][-1]  # the spool belongs to the collector's uid
    assert c["resources"]["requests"] and c["resources"]["limits"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["pod-resources"]["hostPath"]["path"] == "/var/lib/kubelet/pod-resources" and mounts["pod-resources"]["readOnly"]
    assert volumes["host-proc"]["hostPath"]["path"] == "/proc" and mounts["host-proc"]["readOnly"]
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    port = c["ports"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["port"] == port["name"]
    # the ConfigMap configures exactly what the agent reads: every key is a real setting
    config = by_kind("ConfigMap", "gpuledger-collector")["data"]
    assert [f["configMapRef"]["name"] for f in c["envFrom"]] == ["gpuledger-settings", "gpuledger-collector"]
    assert config["GPULEDGER_COLLECTOR__PROC_ROOT"] == mounts["host-proc"]["mountPath"]
    assert config["GPULEDGER_COLLECTOR__SPOOL_DIR"] == mounts["spool"]["mountPath"]
    assert int(config["GPULEDGER_COLLECTOR__METRICS_PORT"]) == port["containerPort"]
    assert "spec.nodeName={node}" in config["GPULEDGER_COLLECTOR__POD_LIST_URL"]
    assert Path(config["GPULEDGER_COLLECTOR__POD_RESOURCES_SOCKET"]).parent == Path(mounts["pod-resources"]["mountPath"])
    keys = config["GPULEDGER_COLLECTOR__POD_LABEL_KEYS"]  # the chart renders lists as JSON; the agent also takes a, b, c
    assert (json.loads(keys) if keys.startswith("[") else keys.split(",")) == list(DEFAULT_POD_LABEL_KEYS)
    fields = {f"GPULEDGER_COLLECTOR__{name.upper()}" for name in CollectorSettings.model_fields}
    assert {k for k in config if k.startswith("GPULEDGER_COLLECTOR")} <= fields


def test_rbac_is_read_only_pods() -> None:
    role, binding = by_kind("ClusterRole"), by_kind("ClusterRoleBinding")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == by_kind("ServiceAccount")["metadata"]["name"]
