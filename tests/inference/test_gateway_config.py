"""Gateway settings validation: the shipped example loads, and broken references say what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gpuledger.settings import GatewayConfig, SettingsError, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "inference" / "gateway" / "gateway.example.yaml"


def load_config(path: Path) -> GatewayConfig:
    """The ``gateway:`` section of a settings file, through the one loader."""
    config = load_settings(path).gateway
    assert config is not None
    return config


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert {a.name for a in config.aliases} == {"auto"} and config.backends[2].api_key_env == "OPENAI_API_KEY"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"models": [{"name": "m", "targets": [{"backend": "missing"}]}]}, "unknown backend 'missing'"),
        ({"aliases": [{"name": "auto", "default": "nope"}]}, "unknown model 'nope'"),
        ({"aliases": [{"name": "m", "default": "m"}]}, "shadows a model"),
        ({"forward_headers": ["x-request-id", "Authorization"]}, "may not include \\['authorization'\\]"),
        ({"aliases": [{"name": "auto", "default": "m", "baseline": "gpt-5"}]}, "baseline 'gpt-5', which is not a model"),
        (
            {"aliases": [{"name": "auto", "default": "m", "rules": [{"model": "m", "name": "x"}, {"model": "m", "name": "x"}]}]},
            "named \\['x'\\] more than once",
        ),
        ({"aliases": [{"name": "auto", "default": "m", "rules": [{"model": "m", "name": "fallback:1"}]}]}, "may not be empty"),
        ({"aliases": [{"name": "auto", "default": "m", "rules": [{"model": "m", "name": "default"}]}]}, "may not be empty"),
    ],
)
def test_broken_references_are_explained(change: dict[str, object], message: str) -> None:
    base = {
        "backends": [{"name": "b", "kind": "vllm", "base_url": "http://x/v1"}],
        "models": [{"name": "m", "targets": [{"backend": "b"}]}],
    }
    with pytest.raises(ValidationError, match=message):
        GatewayConfig.model_validate({**base, **change})


def test_keys_file_adds_virtual_keys_and_refuses_duplicates(tmp_path: Path) -> None:
    """The Helm chart mounts virtual keys from a Secret as a separate file named by ``keys_file``."""
    digest = "a" * 64
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"keys:\n  - {{id: key-finance, sha256: {digest}, org: finance}}\n")
    config = tmp_path / "gateway.yaml"
    config.write_text(EXAMPLE.read_text() + f"  keys_file: {keys}\n")
    loaded = load_config(config)
    assert [k.id for k in loaded.keys] == ["key-search-ranker", "key-finance"] and loaded.keys[1].sha256 == digest
    keys.write_text(f"keys:\n  - {{id: key-search-ranker, sha256: {digest}, org: finance}}\n")
    with pytest.raises(
        SettingsError,
        match=rf"gateway: .*virtual key id \['key-search-ranker'\] appears more than once in keys and its keys_file .*\(in {config}\)",
    ):
        load_config(config)
    keys.write_text("- {id: k, sha256: x}\n")
    with pytest.raises(ValueError, match="expected a YAML mapping with a `keys:` list"):
        load_config(config)


def test_inline_keys_with_the_same_digest_are_refused() -> None:
    """Two inline keys sharing a sha256 would make the caller ambiguous; refused without any keys_file."""
    base = {
        "backends": [{"name": "b", "kind": "vllm", "base_url": "http://x/v1"}],
        "models": [{"name": "m", "targets": [{"backend": "b"}]}],
    }
    digest = "b" * 64
    keys = [{"id": "key-a", "sha256": digest, "org": "finance"}, {"id": "key-b", "sha256": digest, "org": "search"}]
    with pytest.raises(ValidationError, match=rf"virtual key sha256 \['{digest}'\] appears more than once in keys \["):
        GatewayConfig.model_validate({**base, "keys": keys})
    keys[1]["sha256"] = "c" * 64
    assert [k.id for k in GatewayConfig.model_validate({**base, "keys": keys}).keys] == ["key-a", "key-b"]
