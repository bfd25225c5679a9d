"""Gateway YAML validation: the shipped example loads, and broken references say what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from inference.gateway_config import GatewayConfig, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "inference" / "gateway.example.yaml"


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert {a.name for a in config.aliases} == {"auto"} and config.backends[2].api_key_env == "OPENAI_API_KEY"


@pytest.mark.parametrize(("change", "message"), [
    ({"models": [{"name": "m", "targets": [{"backend": "missing"}]}]}, "unknown backend 'missing'"),
    ({"aliases": [{"name": "auto", "default": "nope"}]}, "unknown model 'nope'"),
    ({"aliases": [{"name": "m", "default": "m"}]}, "shadows a model"),
    ({"forward_headers": ["x-request-id", "Authorization"]}, "may not include \\['authorization'\\]"),
])
def test_broken_references_are_explained(change: dict[str, object], message: str) -> None:
    base = {"backends": [{"name": "b", "kind": "vllm", "base_url": "http://x/v1"}], "models": [{"name": "m", "targets": [{"backend": "b"}]}]}
    with pytest.raises(ValidationError, match=message):
        GatewayConfig.model_validate({**base, **change})
