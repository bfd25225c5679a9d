"""Rendering the Helm chart and reading what it sets: the helpers the deploy tests share.

Helm and promtool are real binaries (``.ci/run`` builds Helm and installs promtool). A missing one
fails the test with how to get it; only ``GPULEDGER_DEPLOY_TOOLS=absent`` turns that into a skip,
and CI never sets it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "gpuledger"
ALL_ON = CHART / "ci" / "all-on.yaml"
KUBE_VERSION = "1.33.0"  # a Go-built helm reports v1.20 by default, below the chart's kubeVersion
GPULEDGER_IMAGE = re.compile(r"/gpuledger:")
INSTALL_HINT = {
    "helm": "run deploy/helm/install-tools.sh (as make test and .ci/run do; it builds helm once) and put the folder it prints on PATH",
    "promtool": "apt-get install -y prometheus (Debian's package ships promtool)",
}


def tool(name: str) -> str:
    """The path of ``helm`` / ``promtool``, or a failure that says how to get it."""
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("GPULEDGER_DEPLOY_TOOLS") == "absent":
        pytest.skip(f"{name} is not installed and GPULEDGER_DEPLOY_TOOLS=absent says so")
    pytest.fail(f"{name} is not on PATH: {INSTALL_HINT[name]}. (Set GPULEDGER_DEPLOY_TOOLS=absent to skip deliberately; CI must not.)")


def helm(*args: str) -> str:
    """Run helm; a failure shows its stderr."""
    done = subprocess.run([tool("helm"), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"helm {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def render(
    *values_files: Path, release: str = "gl", namespace: str = "gpuledger", sets: tuple[str, ...] = (), skip_schema: bool = False
) -> list[dict[str, Any]]:
    """``helm template`` of the chart: every object it renders."""
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    if skip_schema:
        args.append("--skip-schema-validation")
    for f in values_files:
        args += ["-f", str(f)]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(*args)) if d]


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) of every workload."""
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in docs if d["kind"] in {"Deployment", "DaemonSet", "Job"}]


def gpuledger_containers(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(object name, container) of every container running the gpuledger image (not the busybox init container)."""
    return [(name, c) for name, spec in pod_specs(docs) for c in spec["containers"] if GPULEDGER_IMAGE.search(c["image"])]


def container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The environment Kubernetes would give the container: envFrom ConfigMaps, then env (secrets as placeholders,
    ``$(VAR)`` expanded the way the kubelet does)."""
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), var["value"])
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = f"https://hooks.example.invalid/{ref['name']}/{ref['key']}"  # stands in for the Secret's value
        else:
            env[var["name"]] = "node-1"  # fieldRef: spec.nodeName
    return env


def setting_env_names(model: type[BaseModel], prefix: str, nested: str | None) -> set[str]:
    """Every environment variable a pydantic-settings class reads: PREFIX<FIELD>, and PREFIX<SECTION><nested><FIELD> at any depth."""
    names = set()
    for name, field in model.model_fields.items():
        names.add(f"{prefix}{name.upper()}")
        if nested and (section := _section(field.annotation)):
            names |= setting_env_names(section, f"{prefix}{name.upper()}{nested}", nested)
    return names


def _section(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (``KafkaSettings``, ``Target | None``), which env vars can reach field by field; not lists."""
    if get_origin(annotation) in (Union, UnionType):
        return next((m for arg in get_args(annotation) if (m := _section(arg))), None)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
