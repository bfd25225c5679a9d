"""Every key in the chart's values that configures gpuledger is a real setting (no Helm needed).

The values tree spells settings as the settings classes' field names; a typo would otherwise be an
environment variable or YAML key that nothing reads.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from collectors.settings import CollectorSettings
from gpuledger.settings import Settings
from inference.gateway_config import GatewayConfig
from streams.notifier.settings import NotifierSettings, Route, Target
from tests.deploy.chart import ALL_ON, CHART, unknown_keys


def values(path: Path) -> dict[str, Any]:
    """The chart defaults, overridden by ``path`` (a shallow-enough merge for these files)."""
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
    """Every settings key in a values tree that no settings class has."""
    found = unknown_keys(Settings, v["settings"], "settings")
    found += unknown_keys(CollectorSettings, v["collector"]["settings"], "collector.settings")
    found += unknown_keys(NotifierSettings, v["notifier"]["settings"], "notifier.settings")
    found += unknown_keys(GatewayConfig, v["gateway"]["config"], "gateway.config")
    targets = [("notifier.default", Target, v["notifier"]["default"])] if v["notifier"]["default"] else []
    targets += [(f"notifier.routes[{i}]", Route, r) for i, r in enumerate(v["notifier"]["routes"])]
    for where, model, target in targets:  # urlSecret is the chart's own: it names the Secret that holds `url`
        found += unknown_keys(model, {k: x for k, x in target.items() if k != "urlSecret"}, where)
    return found


@pytest.mark.parametrize("path", [CHART / "values.yaml", ALL_ON], ids=["defaults", "all-on"])
def test_every_values_setting_exists(path: Path) -> None:
    v = values(path)
    assert misnamed(v) == []
    GatewayConfig.model_validate(v["gateway"]["config"])  # the gateway YAML the chart writes is valid as well


@pytest.mark.parametrize(("where", "bogus"), [
    (("settings", "kafka"), "bootstrap_server"),
    (("settings",), "log_levels"),
    (("collector", "settings"), "intervall_seconds"),
    (("notifier", "settings"), "max_attempt"),
    (("gateway", "config"), "enforce_budget"),
])
def test_a_misspelt_setting_is_caught(where: tuple[str, ...], bogus: str) -> None:
    v = copy.deepcopy(values(ALL_ON))
    node = v
    for key in where:
        node = node[key]
    node[bogus] = "1"
    assert misnamed(v) == [".".join(where) + f".{bogus}"]


def test_a_misspelt_nested_gateway_key_is_caught() -> None:
    v = copy.deepcopy(values(ALL_ON))
    v["gateway"]["config"]["backends"][1]["api_key"] = "OPENAI_API_KEY"
    v["notifier"]["routes"][0]["matches"] = "research"
    assert misnamed(v) == ["gateway.config.backends[1].api_key", "notifier.routes[0].matches"]
