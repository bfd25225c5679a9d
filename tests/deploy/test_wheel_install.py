"""The wheel, installed outside the source tree, runs every command: what the image and `pip install gpuledger` get.

Editable installs and pytest's ``pythonpath`` hide a package or data file the wheel leaves out (``streams.budgets``
once was: `gpuledger worker` died with ImportError in the container while every source-tree test passed). Here the
wheel is built from a copy of the sources with pip (``--no-build-isolation``: nothing downloaded), installed with
``--no-deps`` into a fresh venv whose dependencies come from this interpreter's site-packages through a ``.pth``
file, and every command runs from that venv with its working directory outside the source tree. The image itself
cannot be built here (no container engine).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import tomllib
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gpuledger.settings import Settings
from tests.conftest import BASE
from tests.support import ROOT, isolated, settings_env

ROOTS = [
    pattern.rstrip("*")
    for pattern in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
]


@dataclass(frozen=True)
class Install:
    wheel: Path
    bin: Path
    home: Path  # the working directory of every command: no source tree there

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]], cwd=self.home, env=env or clean_env(), capture_output=True, text=True, timeout=timeout
        )

    def start(self, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(self.bin / "gpuledger"), *args], cwd=self.home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )


def clean_env(**extra: str) -> dict[str, str]:
    """The machine's environment without the test session's settings or PYTHONPATH (which could point at the sources)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GPULEDGER_") and k != "PYTHONPATH"}
    return {**base, "GPULEDGER_LOG_FORMAT": "json", **extra}


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"  # a copy: an in-tree build leaves build/ behind, whose stale files would ship in later wheels
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ROOTS:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root / "dist"), str(src)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    [wheel] = (root / "dist").glob("gpuledger-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}  # after the venv's own: the wheel's code wins
    (site / "zz_shared_dependencies.pth").write_text("".join(f"{path}\n" for path in sorted(shared)))
    subprocess.run(
        [*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (root / "home").mkdir()
    return Install(wheel, venv / "bin", root / "home")


def test_the_wheel_holds_every_package_and_data_file(install: Install) -> None:
    """Every package of the source roots, and every file in them that is not Python, is in the wheel."""
    shipped = set(zipfile.ZipFile(install.wheel).namelist())
    in_tree = {
        str(path.relative_to(ROOT))
        for package in ROOTS
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert in_tree - shipped == set(), "add them to [tool.setuptools.package-data] in pyproject.toml"
    assert {
        "gpuledger/data/demo/orgs.yaml",
        "gpuledger/data/kafka/pom.xml",
        "inference/gateway/gateway.example.yaml",
        "sql/migrations/0001_raw_events.sql",
        "schemas/avro/price.v1.avsc",
        "gpuledger/ui/static/app.js",
    } <= shipped


HELP_OF_EVERY_COMMAND = """
import sys, typer.main
from typer.testing import CliRunner
import collectors, gpuledger, inference, schemas, sql, streams
from gpuledger.commands.cli import app
from gpuledger.data import DEMO, KAFKA_POM
from gpuledger.migrate import load_migrations
from schemas import codec_for, Price

assert all(m.__file__.startswith(sys.prefix) for m in (collectors, gpuledger, inference, schemas, sql, streams)), gpuledger.__file__
assert (DEMO / "orgs.yaml").is_file() and KAFKA_POM.is_file() and len(load_migrations()) >= 9 and codec_for(Price)
runner, seen = CliRunner(), []

def walk(command, path):
    done = runner.invoke(app, [*path, "--help"])
    assert done.exit_code == 0, (path, done.output, done.exception)
    assert "Usage:" in done.output, (path, done.output)
    seen.append(" ".join(path) or "gpuledger")
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        walk(sub, [*path, name])

walk(typer.main.get_command(app), [])
print("\\n".join(seen))
"""


def test_every_command_answers_help_from_the_install(install: Install) -> None:
    script = install.run("gpuledger", "--help")
    assert script.returncode == 0 and "Usage: gpuledger" in script.stdout, script.stdout + script.stderr
    done = install.run("python", "-c", HELP_OF_EVERY_COMMAND)
    assert done.returncode == 0, done.stdout + done.stderr
    seen = set(done.stdout.split("\n"))
    assert {
        "gpuledger",
        "worker",
        "simulate",
        "demo",
        "collector",
        "gateway",
        "notifier run",
        "stack up",
        "budgets set",
        "orgs import",
    } <= seen, seen
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"gpuledger"}, "a new console script: run its --help here too"


def wait_for(url: str, proc: subprocess.Popen[str], timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: httpx.Response | str = "no answer"
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            last = httpx.get(url, timeout=1)
            if last.status_code == 200:
                return last
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"{url} not healthy (exit {proc.poll()}): {last!r}\n{proc.communicate()[0][-3000:]}")


def stopped(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        output = proc.communicate(timeout=30)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        output = proc.communicate()[0]
    return proc.returncode, output


@pytest.mark.engines
def test_the_worker_runs_from_the_install_until_healthy(install: Install, stack_settings: Settings) -> None:
    settings = isolated(stack_settings, f"wheel{uuid.uuid4().hex[:6]}")
    port = BASE + 320
    env = clean_env(**{**settings_env(settings, install.home / "worker"), "GPULEDGER_WORKER__METRICS_PORT": str(port)})
    proc = install.start("worker", env=env)
    health = wait_for(f"http://127.0.0.1:{port}/healthz", proc, timeout=90)
    assert health.json()["kafka_ok"] is True
    code, output = stopped(proc)
    assert code == 0, output
    assert "ImportError" not in output and "Traceback" not in output, output


@pytest.mark.engines
def test_gateway_collector_and_notifier_start_from_the_install(install: Install, stack_settings: Settings) -> None:
    """The gateway serves the example config shipped in the wheel, the notifier answers /healthz, the collector publishes."""
    kafka = {
        "GPULEDGER_KAFKA__BOOTSTRAP_SERVERS": stack_settings.kafka.bootstrap_servers,
        "GPULEDGER_CLICKHOUSE__URL": stack_settings.clickhouse.url,
    }
    example = install.run(
        "python", "-c", "from importlib import resources; print(resources.files('inference.gateway') / 'gateway.example.yaml')"
    ).stdout.strip()
    assert example.startswith(str(install.bin.parent)), example
    config = install.home / "notifier.yaml"
    config.write_text(
        f"topics: {{budget_alerts: wheel-alerts-{uuid.uuid4().hex[:6]}}}\nnotifier:\n  state_dir: {install.home / 'notifier'}\n"
        f"  metrics_port: {BASE + 322}\n  default: {{name: ops, url: 'http://127.0.0.1:9/hook'}}\n"
    )
    gateway = install.start("gateway", "--config", example, "--port", str(BASE + 321), env=clean_env(**kafka))
    notifier = install.start("notifier", "run", "--config", str(config), env=clean_env(**kafka))
    try:  # the three start side by side: the test waits once for the slowest
        collector = install.run(
            "gpuledger",
            "collector",
            "--source",
            "simulated",
            "--gpus",
            "1",
            "--once",
            "--metrics-port",
            "0",
            "--spool-dir",
            str(install.home / "spool"),
            env=clean_env(**kafka),
        )
        assert collector.returncode == 0, collector.stdout + collector.stderr  # 4: spooled, Kafka not reached
        assert "published 1" in collector.stderr
        wait_for(f"http://127.0.0.1:{BASE + 321}/health", gateway, timeout=30)
        wait_for(f"http://127.0.0.1:{BASE + 322}/healthz", notifier, timeout=60)
    finally:
        (gateway_code, gateway_out), (notifier_code, notifier_out) = stopped(gateway), stopped(notifier)
    assert gateway_code in (0, -signal.SIGTERM) and "gateway_started" in gateway_out and "Traceback" not in gateway_out, (
        gateway_out
    )  # uvicorn re-raises SIGTERM
    assert notifier_code == 0, notifier_out
