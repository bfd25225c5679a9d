"""The Helm chart renders, lints, validates offline, and wires only real commands and settings.

Rendering uses the real ``helm`` binary and the rules the real ``promtool`` (see chart.py for what
happens when one is missing). Nothing here needs a cluster: what a cluster would do (admit the objects,
expand ``$(VAR)`` in env, read ConfigMaps into env) is reproduced from the rendered objects.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from starlette.testclient import TestClient

from gpuledger.settings import Settings, load_settings
from gpuledger.ui.app import create_app, ui_settings
from gpuledger.ui.auth import from_token
from tests.deploy.chart import (
    ALL_ON,
    CHART,
    ROOT,
    container_env,
    gpuledger_containers,
    helm,
    pod_specs,
    render,
    setting_env_names,
    tool,
)

SHARED = setting_env_names(Settings, "GPULEDGER_", "__")  # one tree: every component reads every section
CRDS = {"ServiceMonitor", "PrometheusRule"}
RENDERS = {"defaults": (), "all-on": (ALL_ON,)}


@pytest.fixture(scope="module", params=sorted(RENDERS))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(*RENDERS[request.param])


@pytest.fixture(scope="module")
def all_on() -> list[dict[str, Any]]:
    return render(ALL_ON)


def component(doc_name: str) -> str:
    return doc_name.rsplit("-", 1)[-1]


def misnamed_env(docs: list[dict[str, Any]]) -> list[str]:
    """GPULEDGER_* variables given to a container that its settings classes do not read."""
    return sorted(
        f"{name}: {var}"
        for name, c in gpuledger_containers(docs)
        for var in container_env(docs, c)
        if var.startswith("GPULEDGER_") and var not in SHARED
    )


@pytest.mark.parametrize("values", [(), (ALL_ON,)], ids=["defaults", "all-on"])
def test_helm_lint_is_clean(values: tuple[Path, ...]) -> None:
    out = helm("lint", "--strict", str(CHART), *[a for f in values for a in ("-f", str(f))])
    assert "0 chart(s) failed" in out and "[WARNING]" not in out and "[ERROR]" not in out


def test_every_builtin_object_validates_strictly(rendered: list[dict[str, Any]]) -> None:
    for doc in rendered:
        if doc["kind"] in CRDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)  # raises on any error


def test_all_on_renders_every_component(all_on: list[dict[str, Any]]) -> None:
    kinds = {(d["kind"], component(d["metadata"]["name"])) for d in all_on}
    assert {
        ("DaemonSet", "collector"),
        ("Deployment", "worker"),
        ("Deployment", "gateway"),
        ("Deployment", "notifier"),
        ("Job", "migrate"),
        ("PodDisruptionBudget", "worker"),
        ("HorizontalPodAutoscaler", "gateway"),
        ("Ingress", "gateway"),
        ("Service", "gateway"),
        ("PrometheusRule", "gpuledger"),
        ("Deployment", "ui"),
        ("Service", "ui"),
        ("Ingress", "ui"),
    } <= kinds
    assert {component(d["metadata"]["name"]) for d in all_on if d["kind"] == "NetworkPolicy"} == {
        "collector",
        "worker",
        "gateway",
        "notifier",
        "migrate",
        "ui",
    }
    job = next(d for d in all_on if d["kind"] == "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"


def test_every_rendered_env_var_is_a_setting_and_parses(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert misnamed_env(rendered) == []
    monkeypatch.chdir(tmp_path)  # no ./gpuledger.yaml
    for name, c in gpuledger_containers(rendered):
        env = container_env(rendered, c)
        for var in [v for v in os.environ if v.startswith("GPULEDGER_")]:
            monkeypatch.delenv(var)
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        settings = load_settings()  # the values parse, not only the names
        assert settings.kafka.bootstrap_servers == env["GPULEDGER_KAFKA__BOOTSTRAP_SERVERS"]
        if component(name) == "collector":
            assert str(settings.collector.spool_dir) == env["GPULEDGER_COLLECTOR__SPOOL_DIR"]
        if component(name) == "notifier":
            ns = settings.notifier
            assert ns.default is not None and ns.routes, "the notifier is rendered without a webhook"
            assert all(r.url.get_secret_value().startswith("https://") for r in ns.routes)  # $(WEBHOOK_URL_n) was filled in


def test_a_misnamed_setting_fails_the_env_check() -> None:
    """values.schema.json would refuse these first (test_the_chart_refuses_misuse); without it the env check still does."""
    docs = render(
        ALL_ON,
        sets=(
            "settings.kafka.bootstrap_server=x",
            "collector.settings.intervall_seconds=5",
            "notifier.settings.max_attempt=3",
            "ui.settings.trusted_proxie=x",
        ),
        skip_schema=True,
    )
    wrong = misnamed_env(docs)
    assert "gl-gpuledger-collector: GPULEDGER_COLLECTOR__INTERVALL_SECONDS" in wrong
    assert "gl-gpuledger-notifier: GPULEDGER_NOTIFIER__MAX_ATTEMPT" in wrong
    assert "gl-gpuledger-worker: GPULEDGER_KAFKA__BOOTSTRAP_SERVER" in wrong
    assert "gl-gpuledger-ui: GPULEDGER_UI__TRUSTED_PROXIE" in wrong


def test_the_dashboard_reads_as_its_own_read_only_user_and_its_probe_needs_no_sign_in(
    all_on: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The UI container's env is real settings that parse into what the dashboard needs: its read-only ClickHouse user from
    its own Secret (never the shared, writing one), readonly=1, the rendered token digests; and the probe path answers
    without sign-in while a page does not (the real app, in-process; no ClickHouse call is made on these paths)."""
    [ui] = [c for n, c in gpuledger_containers(all_on) if component(n) == "ui"]
    env = container_env(all_on, ui)
    assert sorted(v for v in env if v.startswith("GPULEDGER_UI__") and v not in SHARED) == []
    secret_refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in ui["env"] if "valueFrom" in e}
    assert secret_refs["GPULEDGER_UI__CLICKHOUSE_USER"] == secret_refs["GPULEDGER_UI__CLICKHOUSE_PASSWORD"] == "gpuledger-ui-clickhouse"
    assert "GPULEDGER_CLICKHOUSE__PASSWORD" not in env and "GPULEDGER_CLICKHOUSE__USER" not in env  # not the writer's credentials
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("GPULEDGER_")]:
        monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    settings = ui_settings(Settings())
    assert settings.clickhouse.readonly is True and settings.clickhouse.user == env["GPULEDGER_UI__CLICKHOUSE_USER"]
    assert from_token("test", settings.ui).admin and from_token("test2", settings.ui).orgs == {"search"}  # the digests in ci/all-on.yaml
    assert settings.ui.trusted_proxies == ["10.244.0.0/16"] and settings.ui.group_orgs["research-leads"] == ["research"]
    port = next(p for p in ui["ports"] if p["name"] == "http")
    assert ui["args"][ui["args"].index("--port") + 1] == str(port["containerPort"])
    probes = {ui["readinessProbe"]["httpGet"]["path"], ui["livenessProbe"]["httpGet"]["path"]}
    with TestClient(create_app(Settings()), follow_redirects=False) as app:
        assert all(app.get(path).status_code == 200 for path in probes)
        assert app.get("/").headers["location"] == "/login" and app.get("/api/overview").status_code == 401


def test_dashboard_tokens_can_come_from_a_secret() -> None:
    """ui.tokensSecret replaces ui.settings.tokens: GPULEDGER_UI__TOKENS is read from the Secret, and not also from the ConfigMap."""
    docs = render(ALL_ON, sets=("ui.settings.tokens=null", "ui.tokensSecret.name=ui-tokens"))
    [ui] = [c for n, c in gpuledger_containers(docs) if component(n) == "ui"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in ui["env"] if "valueFrom" in e}
    assert refs["GPULEDGER_UI__TOKENS"] == {"name": "ui-tokens", "key": "tokens.json"}
    [cm] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-ui")]
    assert "GPULEDGER_UI__TOKENS" not in cm["data"] and cm["data"]["GPULEDGER_CLICKHOUSE__READONLY"] == "true"


def test_rendered_gateway_config_loads_and_its_api_keys_are_fed(all_on: list[dict[str, Any]], tmp_path: Path) -> None:
    [cm] = [d for d in all_on if d["kind"] == "ConfigMap" and component(d["metadata"]["name"]) == "gateway"]
    raw = yaml.safe_load(cm["data"]["gateway.yaml"])
    [(_, gw)] = [(n, c) for n, c in gpuledger_containers(all_on) if component(n) == "gateway"]
    mounted = {m["mountPath"] for m in gw["volumeMounts"]}
    assert str(Path(raw["gateway"]["keys_file"]).parent) in mounted
    assert gw["args"][:3] == ["--config", f"{next(iter(m for m in mounted if m.endswith('/gateway')))}/gateway.yaml", "gateway"]
    (tmp_path / "keys.yaml").write_text("keys:\n  - {id: k1, sha256: " + "b" * 64 + ", org: research}\n")
    raw["gateway"]["keys_file"] = str(tmp_path / "keys.yaml")
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(raw))
    config = load_settings(tmp_path / "gateway.yaml").gateway
    assert config is not None
    assert [k.id for k in config.keys] == ["k1"]
    env = {e["name"] for e in gw["env"]}
    assert {b.api_key_env for b in config.backends if b.api_key_env} <= env


def test_an_api_key_env_without_a_secret_is_refused() -> None:
    done = subprocess.run(
        [tool("helm"), "template", "gl", str(CHART), "--kube-version", "1.33.0", "-f", str(ALL_ON), "--set", "gateway.apiKeys=null"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "reads its API key from $OPENAI_API_KEY, but gateway.apiKeys has no entry" in done.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("settings.clickhouse.password=x", "passwords do not go in values"),
        ("settings.kafka.sasl_password=x", "passwords do not go in values"),
        ("ui.settings.anonymous=admin", "anonymous admin is only allowed on a loopback address"),
        ("ui.clickhouse.existingSecret=", "ui.clickhouse.existingSecret: the dashboard reads ClickHouse as its own read-only user"),
        ("ui.settings.tokens=null,ui.settings.trusted_proxies=null", "ui.enabled: nobody could sign in"),
        ("ui.tokensSecret.name=ui-tokens", "set either ui.settings.tokens or ui.tokensSecret.name, not both"),
        ("ui.settings.clickhouse_password=x", "at '/ui/settings': additional properties 'clickhouse_password' not allowed"),
        ("settings.ui.anonymous=admin", "at '/settings': additional properties 'ui' not allowed"),
        (
            "settings.kafka.bootstrap_server=x",
            "at '/settings/kafka': additional properties 'bootstrap_server' not allowed",
        ),  # values.schema.json
        ("notifier.routes=null", None),
    ],
)
def test_the_chart_refuses_misuse(setting: str, message: str | None) -> None:
    args = [tool("helm"), "template", "gl", str(CHART), "--kube-version", "1.33.0", "-f", str(ALL_ON), "--set", setting]
    if message is None:  # routes gone but the default target stays: still valid
        assert subprocess.run(args, capture_output=True, timeout=120).returncode == 0
        args += ["--set", "notifier.default=null"]
        message = "the notifier needs notifier.default.urlSecret or at least one notifier.routes entry"
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and message in done.stderr


def test_container_commands_exist(all_on: list[dict[str, Any]]) -> None:
    """The image's entry point is the wheel's `gpuledger` script; each container's args are a real subcommand with real options."""
    entry = re.search(r'^ENTRYPOINT \["([^"]+)"\]', (ROOT / "deploy" / "Containerfile").read_text(), re.M)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry and entry.group(1) in scripts and scripts[entry.group(1)] == "gpuledger.commands.cli:app"
    commands = {tuple(c["args"]) for _, c in gpuledger_containers(all_on)}
    commands = {
        args[2:] if args[0] == "--config" else args for args in commands
    }  # the global option first: gpuledger --config FILE <command>
    assert {args[0] for args in commands} == {"collector", "worker", "migrate", "gateway", "notifier", "ui"}
    for args in sorted(commands):
        words = list(itertools.takewhile(lambda a: not a.startswith("-"), args))  # the subcommand, before its options
        done = subprocess.run(
            [sys.executable, "-m", "gpuledger.commands.cli", *words, "--help"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert done.returncode == 0, f"gpuledger {' '.join(words)} --help failed: {done.stderr}"
        assert all(opt in done.stdout for opt in args if opt.startswith("--")), (
            f"{args}: an option is not in `gpuledger {' '.join(words)} --help`"
        )


def test_pods_run_non_root_with_a_read_only_root(rendered: list[dict[str, Any]]) -> None:
    env_paths = ("GPULEDGER_COLLECTOR__SPOOL_DIR", "GPULEDGER_WORKER__DATA_DIR", "GPULEDGER_NOTIFIER__STATE_DIR")
    for name, spec in pod_specs(rendered):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
    for name, c in gpuledger_containers(rendered):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], (
            name
        )
        mounts = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
        env = container_env(rendered, c)
        writes = {"/tmp"} | {
            env[k]
            for k in env_paths
            if k in env
            and component(name) in {"collector", "worker", "notifier"}
            and (k != "GPULEDGER_WORKER__DATA_DIR" or component(name) == "worker")
        }
        assert writes <= mounts, f"{name} writes to {sorted(writes - mounts)} without a writable volume"


def test_service_monitors_select_a_metrics_port(all_on: list[dict[str, Any]]) -> None:
    services = [d for d in all_on if d["kind"] == "Service"]
    monitors = [d for d in all_on if d["kind"] == "ServiceMonitor"]
    assert {component(m["metadata"]["name"]) for m in monitors} == {"collector", "gateway", "worker", "notifier"}
    for sm in monitors:
        [endpoint] = sm["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        matched = [
            s
            for s in services
            if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
            and s["metadata"]["namespace"] in sm["spec"]["namespaceSelector"]["matchNames"]
        ]
        assert matched and all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in matched), sm["metadata"]["name"]


# Fields of monitoring.coreos.com/v1 ServiceMonitor this chart may use (the CRD's schema is not available
# offline; the rules' own fields are checked by promtool, which rejects unknown keys).
SERVICE_MONITOR_FIELDS = {
    "spec": {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels", "podTargetLabels"},
    "endpoint": {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels", "relabelings", "metricRelabelings"},
}


def test_service_monitors_use_only_known_fields(all_on: list[dict[str, Any]]) -> None:
    for sm in [d for d in all_on if d["kind"] == "ServiceMonitor"]:
        assert set(sm) == {"apiVersion", "kind", "metadata", "spec"} and set(sm["spec"]) <= SERVICE_MONITOR_FIELDS["spec"]
        assert all(set(e) <= SERVICE_MONITOR_FIELDS["endpoint"] for e in sm["spec"]["endpoints"])
        assert set(sm["spec"]["namespaceSelector"]) == {"matchNames"} and set(sm["spec"]["selector"]) == {"matchLabels"}


def test_worker_and_notifier_serve_metrics_the_chart_scrapes(all_on: list[dict[str, Any]]) -> None:
    """Both serve /metrics and /healthz: the pod listens on every address at the port its Service and probe name."""
    docs = all_on
    assert {"worker", "notifier"} <= {component(d["metadata"]["name"]) for d in docs if d["kind"] == "ServiceMonitor"}
    for name, prefix, port in (("worker", "GPULEDGER_WORKER__", 9403), ("notifier", "GPULEDGER_NOTIFIER__", 9404)):
        pod = next(d for d in docs if d["kind"] == "Deployment" and component(d["metadata"]["name"]) == name)["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert (env[f"{prefix}METRICS_HOST"], env[f"{prefix}METRICS_PORT"]) == ("0.0.0.0", str(port))
        assert pod["containers"][0]["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
        assert pod["containers"][0]["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    off = render(sets=("worker.metrics.enabled=false",))
    worker = next(d for d in off if d["kind"] == "Deployment" and component(d["metadata"]["name"]) == "worker")["spec"]["template"]["spec"]
    assert {e["name"]: e.get("value") for e in worker["containers"][0]["env"]}["GPULEDGER_WORKER__METRICS_PORT"] == "0"
    assert "ports" not in worker["containers"][0]


def test_network_policies_open_only_each_components_own_port(rendered: list[dict[str, Any]]) -> None:
    """Each policy selects exactly its component's pods and admits traffic only to a port that pod declares."""
    pods = [
        (name, d["spec"]["template"])
        for d in rendered
        if d["kind"] in {"Deployment", "DaemonSet", "Job"}
        for name in [d["metadata"]["name"]]
    ]
    policies = [d for d in rendered if d["kind"] == "NetworkPolicy"]
    assert {component(p["metadata"]["name"]) for p in policies} == {component(name) for name, _ in pods}
    for policy in policies:
        selected = [t for _, t in pods if policy["spec"]["podSelector"]["matchLabels"].items() <= t["metadata"]["labels"].items()]
        assert len(selected) == 1, policy["metadata"]["name"]
        declared = {port["name"] for c in selected[0]["spec"]["containers"] for port in c.get("ports", [])}
        opened = {port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]}
        assert opened <= declared and len(opened) <= 1, f"{policy['metadata']['name']} opens {opened}, pod declares {declared}"
        if component(policy["metadata"]["name"]) in {"worker", "notifier", "migrate"} and not declared:
            assert policy["spec"]["ingress"] == []  # serves nothing: no ingress at all


def exported_metrics() -> set[str]:
    """Metric names the code serves: prometheus_client counters gain ``_total`` in the exposition."""
    names = set()
    for path in [
        *ROOT.glob("collectors/**/*.py"),
        *ROOT.glob("inference/**/*.py"),
        *ROOT.glob("streams/**/*.py"),
        *ROOT.glob("gpuledger/**/*.py"),
    ]:
        for kind, name in re.findall(
            r'\b(Counter|Gauge|Histogram|Summary|CounterMetricFamily|GaugeMetricFamily)\(\s*"(gpuledger_\w+)"', path.read_text()
        ):
            names.add(name + "_total" if kind.startswith("Counter") and not name.endswith("_total") else name)
    return names


def test_prometheus_rules_pass_promtool_and_use_served_metrics(all_on: list[dict[str, Any]], tmp_path: Path) -> None:
    [rule] = [d for d in all_on if d["kind"] == "PrometheusRule"]
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    done = subprocess.run([tool("promtool"), "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    exprs = " ".join(r["expr"] for g in rule["spec"]["groups"] for r in g["rules"])
    used = set(re.findall(r"\bgpuledger_\w+", exprs))
    assert used and used <= exported_metrics(), f"rules use metrics nothing serves: {sorted(used - exported_metrics())}"
    assert not re.findall(r"\bkafka_\w+", exprs), (
        "with their own /metrics on, worker and notifier alerts must not be doubled by kafka_exporter's"
    )
    # With the worker's and notifier's own metrics off, kafka_exporter's series stand in for them.
    [fallback] = [
        d for d in render(ALL_ON, sets=("worker.metrics.enabled=false", "notifier.metrics.enabled=false")) if d["kind"] == "PrometheusRule"
    ]
    kafka_exprs = " ".join(r["expr"] for g in fallback["spec"]["groups"] for r in g["rules"])
    assert {"kafka_consumergroup_lag", "kafka_topic_partition_current_offset"} <= set(re.findall(r"\bkafka_\w+", kafka_exprs))
    assert "gpuledger_worker_" not in kafka_exprs


def test_alert_rules_fire_on_the_series_they_watch(all_on: list[dict[str, Any]], tmp_path: Path) -> None:
    """``promtool test rules``: the rules (annotations left out) fire for a silent collector, a 10 % error gateway,
    dropped usage events, worker lag, dead letters, failing inserts, unloaded reference data and undelivered alerts,
    and stay quiet for a healthy collector."""
    [rule] = [d for d in all_on if d["kind"] == "PrometheusRule"]
    groups = [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]} for g in rule["spec"]["groups"]]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    collector, gateway = (
        {"job": "gl-gpuledger-collector", "namespace": "gpuledger"},
        {"job": "gl-gpuledger-gateway", "namespace": "gpuledger"},
    )

    def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
        return {"series": name + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}", "values": values}

    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    series("gpuledger_collector_last_publish_timestamp_seconds", {**collector, "pod": "stuck"}, "0x30"),
                    series("gpuledger_collector_last_publish_timestamp_seconds", {**collector, "pod": "fine"}, "0+60x30"),  # tracks time()
                    series("gpuledger_gateway_requests_total", {**gateway, "endpoint": "chat", "status": "error"}, "0+10x30"),
                    series("gpuledger_gateway_requests_total", {**gateway, "endpoint": "chat", "status": "ok"}, "0+90x30"),
                    series(
                        "gpuledger_usage_events_dropped_total", {**gateway, "component": "gateway", "reason": "queue_full"}, "0x10 5x20"
                    ),
                    series(
                        "gpuledger_worker_consumer_lag_messages",
                        {"namespace": "gpuledger", "topic": "gpuledger.inference-usage.v1", "partition": "0"},
                        "60000x30",
                    ),
                    series(
                        "gpuledger_worker_dead_letters_total",
                        {"namespace": "gpuledger", "topic": "gpuledger.inference-usage.v1", "stage": "invalid"},
                        "0x5 3x25",
                    ),
                    series("gpuledger_worker_insert_retries_total", {"namespace": "gpuledger", "table": "ledger"}, "0+1x30"),
                    series(
                        "gpuledger_worker_reference_caught_up", {"namespace": "gpuledger", "topic": "gpuledger-prices-changelog"}, "0x30"
                    ),
                    series("gpuledger_notifier_alerts_waiting", {"namespace": "gpuledger", "partition": "0"}, "1x30"),
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "20m",
                        "alertname": "GpuledgerCollectorSilent",
                        "exp_alerts": [{"exp_labels": {**collector, "pod": "stuck", "severity": "warning"}}],
                    },
                    {"eval_time": "25m", "alertname": "GpuledgerGatewayErrorRate", "exp_alerts": [{"exp_labels": {"severity": "warning"}}]},
                    {
                        "eval_time": "12m",
                        "alertname": "GpuledgerUsageEventsDropped",
                        "exp_alerts": [{"exp_labels": {"reason": "queue_full", "severity": "critical"}}],
                    },
                    {"eval_time": "5m", "alertname": "GpuledgerUsageEventsDropped", "exp_alerts": []},
                    {
                        "eval_time": "20m",
                        "alertname": "GpuledgerWorkerLagging",
                        "exp_alerts": [{"exp_labels": {"topic": "gpuledger.inference-usage.v1", "severity": "warning"}}],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "GpuledgerWorkerDeadLetters",
                        "exp_alerts": [
                            {"exp_labels": {"topic": "gpuledger.inference-usage.v1", "stage": "invalid", "severity": "warning"}}
                        ],
                    },
                    {"eval_time": "3m", "alertname": "GpuledgerWorkerDeadLetters", "exp_alerts": []},
                    {
                        "eval_time": "20m",
                        "alertname": "GpuledgerWorkerInsertsFailing",
                        "exp_alerts": [{"exp_labels": {"table": "ledger", "severity": "warning"}}],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "GpuledgerReferenceNotLoaded",
                        "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "GpuledgerAlertsNotDelivered",
                        "exp_alerts": [{"exp_labels": {"severity": "warning"}}],
                    },
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    done = subprocess.run([tool("promtool"), "test", "rules", str(tmp_path / "test.yaml")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_collector_manifest_is_the_charts_rendering() -> None:
    """deploy/k8s/collector.yaml (for kubectl apply without Helm) is generated from the chart, never edited by hand."""
    k8s = ROOT / "deploy" / "k8s"
    fresh = render(k8s / "collector-values.yaml", release="gpuledger")
    shipped = [d for d in yaml.safe_load_all((k8s / "collector.yaml").read_text()) if d]
    assert shipped == fresh, "deploy/k8s/collector.yaml is stale: regenerate it with the command in its first lines"
