"""The local stack's promises: idempotent up, clear errors, and down stops only what it started."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpuledger.settings import Settings, StackSettings
from gpuledger.stack import kafka, local
from gpuledger.stack.processes import Managed, StackError
from tests.conftest import TEST_STACK

pytestmark = pytest.mark.engines


def test_up_twice_is_harmless_and_reuses_the_running_engines(stack_settings: Settings) -> None:
    before = {e.name: e.pid for e in local.status(TEST_STACK)}
    after = {e.name: e.pid for e in local.up(TEST_STACK)}
    assert before == after and all(after.values())


def test_a_taken_port_is_refused_with_a_clear_message(stack_settings: Settings, tmp_path: Path) -> None:
    clash = StackSettings(data_dir=tmp_path, kafka_port=TEST_STACK.kafka_port, jars_dir=TEST_STACK.jars_dir)
    with pytest.raises(StackError, match=rf"port 127.0.0.1:{TEST_STACK.kafka_port} is already taken"):
        kafka.start(clash)


def test_missing_java_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "java" else real_which(tool))
    with pytest.raises(StackError, match="'java' is not on PATH"):
        kafka.start(StackSettings(data_dir=tmp_path, kafka_port=1, kafka_controller_port=2))


def test_down_never_stops_a_process_it_did_not_start(tmp_path: Path) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd="/")
    try:
        engine = Managed("kafka", tmp_path / "kafka", 1)
        engine.workdir.mkdir(parents=True)
        engine.pid_file.write_text(str(stranger.pid))  # a stale pid file whose pid now belongs to someone else
        assert engine.pid() is None
        assert local.down(StackSettings(data_dir=tmp_path)) == []
        assert stranger.poll() is None
    finally:
        stranger.kill()


def test_an_engine_that_dies_at_start_reports_its_log(tmp_path: Path) -> None:
    engine = Managed("broken", tmp_path, 1)
    proc = engine.start([sys.executable, "-c", "import sys; print('bad config: no listeners'); sys.exit(3)"], cwd=tmp_path)
    with pytest.raises(StackError, match="(?s)broken exited during start-up.*bad config: no listeners"):
        engine.wait_ready(proc, lambda: False, timeout=10)
