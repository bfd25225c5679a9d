"""The chart's rendered settings drive the real commands against the real engines.

The migration Job's env, the collector DaemonSet's env, the gateway's env + rendered gateway.yaml and the
dashboard's env are taken from ``helm template`` (Kafka and ClickHouse pointed at the test stack) and the
container's own args are run as processes. Only what exists inside a pod alone is swapped for local stand-ins:
host paths (spool, /proc, the kubelet socket), the API server URL, the listen address (tests bind 127.0.0.1)
and the values of Secrets (the dashboard's ClickHouse user is the test stack's).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpuledger.clickhouse import connect
from gpuledger.settings import Settings
from gpuledger.ui.auth import token_digest
from tests.conftest import BASE
from tests.deploy.chart import ROOT, container_env, gpuledger_containers, render

pytestmark = pytest.mark.engines
UI_TOKEN = "chart-test-token"


@pytest.fixture(scope="module")
def database() -> str:
    return f"chart_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def docs(stack_settings: Settings, database: str) -> list[dict[str, Any]]:
    return render(
        sets=(
            f"settings.kafka.bootstrap_servers={stack_settings.kafka.bootstrap_servers}",
            f"settings.clickhouse.url={stack_settings.clickhouse.url}",
            f"settings.clickhouse.database={database}",
            "settings.topics.replication_factor=1",
            "gateway.enabled=true",
            "ui.enabled=true",
            "ui.clickhouse.existingSecret=ui-clickhouse",
            "ui.settings.tokens[0].name=ci",
            f"ui.settings.tokens[0].sha256={token_digest(UI_TOKEN)}",
            "ui.settings.tokens[0].admin=true",
        )
    )


def run_env(docs: list[dict[str, Any]], component: str, **local: str) -> tuple[list[str], dict[str, str]]:
    """The container's args and the process env: the machine's, without GPULEDGER_*, plus the pod's."""
    [container] = [c for name, c in gpuledger_containers(docs) if name.endswith(f"-{component}")]
    base = {k: v for k, v in os.environ.items() if not k.startswith("GPULEDGER_")}
    env = {**base, **container_env(docs, container), **local}
    return list(container["args"]), {k: v for k, v in env.items() if v != ""}


def gpuledger(args: list[str], env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpuledger.commands.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_migration_job_env_migrates_a_fresh_database(docs: list[dict[str, Any]], stack_settings: Settings, database: str) -> None:
    args, env = run_env(docs, "migrate")
    done = gpuledger(args, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "applied" in done.stdout
    client = connect(stack_settings.clickhouse)
    try:
        tables = {r[0] for r in client.query(f"SHOW TABLES FROM {database}").result_rows}
        assert {"ledger", "usage_events", "gpu_samples", "schema_migrations"} <= tables
    finally:
        client.command(f"DROP DATABASE IF EXISTS {database}")


def test_collector_env_publishes_to_kafka(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    args, env = run_env(
        docs,
        "collector",
        GPULEDGER_COLLECTOR__SPOOL_DIR=str(tmp_path / "spool"),
        GPULEDGER_COLLECTOR__PROC_ROOT="/proc",
        GPULEDGER_COLLECTOR__POD_LIST_URL="",
        GPULEDGER_COLLECTOR__METRICS_PORT="0",
        GPULEDGER_COLLECTOR__INTERVAL_SECONDS="0.5",
    )
    assert env["GPULEDGER_COLLECTOR__SOURCE"] == "nvml" and env["NODE_NAME"]
    done = gpuledger([*args, "--source", "simulated", "--gpus", "2", "--once"], env)  # no GPU here: the simulated source
    assert done.returncode == 0, done.stdout + done.stderr  # 4 would mean spooled: Kafka not reached
    assert "published 2" in done.stderr


def serve(args: list[str], env: dict[str, str], url: str) -> tuple[subprocess.Popen[str], httpx.Response | None]:
    """Start the container's command as a process and wait (30 s at most) until ``url`` answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuledger.commands.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            return proc, httpx.get(url, timeout=1)
        except httpx.HTTPError:
            time.sleep(0.2)
    return proc, None


def test_gateway_env_and_config_serve(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    [config] = [d["data"]["gateway.yaml"] for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-gateway")]
    (tmp_path / "gateway.yaml").write_text(config)
    args, env = run_env(docs, "gateway")
    port = BASE + 310
    assert args[args.index("--host") + 1] == "0.0.0.0"
    args[args.index("--config") + 1], args[args.index("--host") + 1], args[args.index("--port") + 1] = (
        str(tmp_path / "gateway.yaml"),
        "127.0.0.1",
        str(port),
    )
    proc, health = serve(args, env, f"http://127.0.0.1:{port}/health")
    try:
        assert health is not None and health.status_code == 200 and health.text == "ok", f"gateway did not serve: {proc.poll()}"
        assert (
            'gpuledger_usage_events_published_total{component="gateway"}' in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        )
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert '"event": "gateway_started"' in out, out  # GPULEDGER_LOG_FORMAT=json from the chart


def test_dashboard_env_serves_the_ledger_read_only(docs: list[dict[str, Any]], stack_settings: Settings) -> None:
    """The UI's rendered env and args run the real dashboard: its probe path answers without sign-in, a page answers the
    rendered token and refuses anyone else, reading the test ClickHouse as the user the UI's Secret would hold."""
    port = BASE + 311
    args, env = run_env(
        docs,
        "ui",
        GPULEDGER_UI__CLICKHOUSE_USER=stack_settings.clickhouse.user,
        GPULEDGER_UI__CLICKHOUSE_PASSWORD=stack_settings.clickhouse.password.get_secret_value(),
        GPULEDGER_CLICKHOUSE__DATABASE=stack_settings.clickhouse.database,
    )  # the migrated one; the module's is dropped
    assert env["GPULEDGER_CLICKHOUSE__READONLY"] == "true" and args[args.index("--host") + 1] == "0.0.0.0"
    args[args.index("--host") + 1], args[args.index("--port") + 1] = "127.0.0.1", str(port)
    proc, health = serve(args, env, f"http://127.0.0.1:{port}/healthz")
    try:
        assert health is not None and health.status_code == 200 and health.text == "ok", f"dashboard did not serve: {proc.poll()}"
        page = httpx.get(f"http://127.0.0.1:{port}/api/drill", headers={"Authorization": f"Bearer {UI_TOKEN}"}, timeout=30)
        assert page.status_code == 200 and "tables" in page.json(), page.text
        assert httpx.get(f"http://127.0.0.1:{port}/api/drill", timeout=5).status_code == 401
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
