"""Every key in the chart's values that configures gpuledger is a real setting (no Helm needed).

The values tree spells settings as the settings classes' field names. deploy/helm/values_schema.py turns the
classes into the chart's values.schema.json, which Helm enforces on every install; here the same schema,
built fresh from the classes, is applied to the shipped values files, and the committed file must match it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from deploy.helm.values_schema import SCHEMA, render, schema
from gpuledger.sections.gateway import GatewayConfig
from tests.deploy.chart import ALL_ON, CHART


def values(path: Path) -> dict[str, Any]:
    """The chart defaults, overridden by ``path`` (maps merge, lists replace: as Helm does)."""
    merged = yaml.safe_load((CHART / "values.yaml").read_text())
    if path != CHART / "values.yaml":
        _merge(merged, yaml.safe_load(path.read_text()))
    return merged


def _merge(base: dict[str, Any], override: dict[str, Any]) -> None:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def misnamed(v: dict[str, Any]) -> list[str]:
    """Where a values tree names a key that no settings class has, and which key."""
    return sorted(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in jsonschema.Draft7Validator(schema()).iter_errors(v))


@pytest.mark.parametrize("path", [CHART / "values.yaml", ALL_ON], ids=["defaults", "all-on"])
def test_every_values_setting_exists(path: Path) -> None:
    v = values(path)
    assert misnamed(v) == []
    GatewayConfig.model_validate(v["gateway"]["config"])  # the gateway YAML the chart writes is valid as well


def test_the_charts_values_schema_is_current() -> None:
    assert SCHEMA.read_text() == render(), "a settings class changed: regenerate with `python deploy/helm/values_schema.py`"


@pytest.mark.parametrize(
    ("where", "bogus"),
    [
        (("settings", "kafka"), "bootstrap_server"),
        (("settings",), "log_levels"),
        (("collector", "settings"), "intervall_seconds"),
        (("notifier", "settings"), "max_attempt"),
        (("gateway", "config"), "enforce_budget"),
        (("ui", "settings"), "trusted_proxie"),
    ],
)
def test_a_misspelt_setting_is_caught(where: tuple[str, ...], bogus: str) -> None:
    v = copy.deepcopy(values(ALL_ON))
    node = v
    for key in where:
        node = node[key]
    node[bogus] = "1"
    assert misnamed(v) == [f"{'.'.join(where)}: Additional properties are not allowed ('{bogus}' was unexpected)"]


def test_a_misspelt_nested_key_is_caught() -> None:
    v = copy.deepcopy(values(ALL_ON))
    v["gateway"]["config"]["backends"][1]["api_key"] = "OPENAI_API_KEY"
    v["notifier"]["routes"][0]["matches"] = "research"
    v["notifier"]["default"]["url"] = "https://hooks.slack.com/services/T/B/secret"  # URLs belong in a Secret
    assert misnamed(v) == [
        "gateway.config.backends.1: Additional properties are not allowed ('api_key' was unexpected)",
        "notifier.default: Additional properties are not allowed ('url' was unexpected)",
        "notifier.routes.0: Additional properties are not allowed ('matches' was unexpected)",
    ]
