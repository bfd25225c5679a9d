"""The one settings loader: environment over the YAML file over defaults, unknown keys refused with their path and source,
the older environment names still read, one ``--config`` meaning everywhere, and no writes to ``os.environ``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuledger.kafka import table_topic
from gpuledger.settings import SettingsError, get_settings, load_settings, use_config_file, use_subcommand_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No GPULEDGER_* from the machine, no ./gpuledger.yaml, and no --config left chosen for the next test."""
    for name in [n for n in os.environ if n.startswith("GPULEDGER_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield
    use_config_file(None)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_environment_over_file_over_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(
        tmp_path / "s.yaml",
        "kafka: {bootstrap_servers: 'file:9092'}\nworker: {batch_size: 7}\n"
        "collector: {interval_seconds: 2, spool_dir: /from-file}\nnotifier: {max_attempts: 3}\n",
    )
    monkeypatch.setenv("GPULEDGER_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("GPULEDGER_COLLECTOR__INTERVAL_SECONDS", "3")
    settings = load_settings(config)
    assert settings.kafka.bootstrap_servers == "env:9092" and settings.worker.batch_size == 7  # env wins; the file beats the default
    assert settings.collector.interval_seconds == 3 and settings.collector.spool_dir == Path("/from-file")
    assert settings.notifier.max_attempts == 3 and settings.worker.batch_seconds == 0.25  # untouched: the default
    assert settings.gateway is None  # no gateway section: the gateway refuses to start, nothing else cares


def test_gpuledger_config_names_the_file_and_an_explicit_one_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPULEDGER_CONFIG", str(write(tmp_path / "a.yaml", "currency: EUR\n")))
    assert load_settings().currency == "EUR"
    assert load_settings(write(tmp_path / "b.yaml", "currency: GBP\n")).currency == "GBP"
    write(tmp_path / "gpuledger.yaml", "currency: CHF\n")
    monkeypatch.delenv("GPULEDGER_CONFIG")
    assert load_settings().currency == "CHF"  # ./gpuledger.yaml when nothing else names a file


def test_unknown_keys_are_refused_with_their_path_and_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(
        tmp_path / "s.yaml",
        "kafka: {bootstrap_server: x}\nnotifier:\n  routes: [{name: a, match: acme, url: 'https://h', colour: red}]\n"
        "gateway: {backends: [], models: []}\n",
    )
    monkeypatch.setenv("GPULEDGER_WORKER__BATCH_SIZ", "3")
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert (
        f"kafka.bootstrap_server: unknown key, not a setting (the README's configuration reference lists them all) (in {config})" in message
    )
    assert "notifier.routes.0.colour: unknown key" in message and message.count(f"(in {config})") >= 3
    assert "worker.batch_siz: unknown key, not a setting" in message and "(environment variable GPULEDGER_WORKER__BATCH_SIZ)" in message
    assert "gateway.backends: List should have at least 1 item" in message


def test_a_bad_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=f"settings file {tmp_path / 'missing.yaml'} does not exist"):
        load_settings(tmp_path / "missing.yaml")
    with pytest.raises(SettingsError, match=f"{tmp_path / 'list.yaml'}: expected a mapping of settings"):
        load_settings(write(tmp_path / "list.yaml", "- kafka\n"))
    with pytest.raises(SettingsError, match=f"{tmp_path / 'broken.yaml'}: not valid YAML"):
        load_settings(write(tmp_path / "broken.yaml", "kafka: {bootstrap_servers: [\n"))


def test_the_older_environment_names_are_aliases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GPULEDGER_COLLECTOR_<FIELD> (DaemonSets of earlier releases) and GPULEDGER_METER_<FIELD> (vLLM pods) still work,
    weaker than the GPULEDGER_<SECTION>__<FIELD> names and stronger than the file."""
    config = write(tmp_path / "s.yaml", "collector: {metrics_port: 1111, poll_seconds: 0.5}\nmeter: {queue_size: 5}\n")
    monkeypatch.setenv("GPULEDGER_COLLECTOR_METRICS_PORT", "2222")
    monkeypatch.setenv("GPULEDGER_COLLECTOR_POD_LABEL_KEYS", "team, org")
    monkeypatch.setenv("GPULEDGER_COLLECTOR_POLL_SECONDS", "0.2")
    monkeypatch.setenv("GPULEDGER_COLLECTOR__POLL_SECONDS", "0.3")
    monkeypatch.setenv("GPULEDGER_METER_KEY_HEADER", "X-Caller")
    settings = load_settings(config)
    assert (settings.collector.metrics_port, settings.collector.pod_label_keys, settings.collector.poll_seconds) == (
        2222,
        ["team", "org"],
        0.3,
    )
    assert (settings.meter.key_header, settings.meter.queue_size) == ("X-Caller", 5)
    monkeypatch.setenv("GPULEDGER_COLLECTOR_METRICS_PORT", "not-a-port")
    with pytest.raises(SettingsError, match=r"collector.metrics_port: .*\(environment variable GPULEDGER_COLLECTOR_METRICS_PORT\)"):
        load_settings(config)


def test_reference_topics_are_named_not_derived_from_the_consumer_group(tmp_path: Path) -> None:
    defaults = load_settings()
    assert [table_topic(defaults, t) for t in ("orgs", "prices", "equivalents", "budgets")] == [
        "gpuledger-orgs-changelog",
        "gpuledger-prices-changelog",
        "gpuledger-equivalents-changelog",
        "gpuledger-budgets-changelog",
    ]  # today's data
    renamed = load_settings(write(tmp_path / "s.yaml", "worker: {app_id: other-group}\ntopics: {prices: acme.prices}\n"))
    assert table_topic(renamed, "orgs") == "gpuledger-orgs-changelog" and table_topic(renamed, "prices") == "acme.prices"


def gpuledger(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULEDGER_")} | {"COLUMNS": "300"}
    return subprocess.run(
        [sys.executable, "-m", "gpuledger.commands.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_one_config_option_means_one_file_everywhere(tmp_path: Path) -> None:
    """A subcommand's --config is the global one (`gpuledger notifier status --config X` = `gpuledger --config X notifier status`,
    whose global spelling test_a_bad_setting_exits_2_naming_it runs); two different files are refused."""
    config = write(tmp_path / "s.yaml", f"notifier: {{state_dir: {tmp_path / 'chosen'}}}\n")
    done = gpuledger("notifier", "status", "--config", str(config))
    assert done.returncode == 0 and f"no delivery state yet at {tmp_path / 'chosen'}" in done.stdout, done.stdout + done.stderr
    use_config_file(write(tmp_path / "other.yaml", "currency: EUR\n"))
    with pytest.raises(SettingsError, match="--config given twice with different files"):
        use_subcommand_config(config)
    assert use_subcommand_config(tmp_path / "other.yaml").currency == "EUR"  # the same file twice is fine


def test_choosing_the_file_never_writes_the_environment(tmp_path: Path) -> None:
    config = write(tmp_path / "s.yaml", "currency: EUR\n")
    before = dict(os.environ)
    use_config_file(config)
    assert get_settings().currency == "EUR" and use_subcommand_config(config).currency == "EUR"
    assert dict(os.environ) == before


def test_a_bad_setting_exits_2_naming_it(tmp_path: Path) -> None:
    config = write(tmp_path / "s.yaml", "worker: {batch_sise: 1}\n")
    done = gpuledger("--config", str(config), "stack", "status")
    assert done.returncode == 2 and "worker.batch_sise: unknown key" in done.stdout and str(config) in done.stdout, (
        done.stdout + done.stderr
    )
