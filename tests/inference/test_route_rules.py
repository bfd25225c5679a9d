"""Which rule chose a request's backend and what it is compared against: the Router on its own, no server needed."""

from __future__ import annotations

from typing import Any

from gpuledger.sections.gateway import GatewayConfig
from inference.gateway.routing import Router

CONFIG = GatewayConfig.model_validate(
    {
        "backends": [
            {"name": "small", "kind": "openai", "base_url": "http://small/v1"},
            {"name": "big", "kind": "openai", "base_url": "http://big/v1"},
        ],
        "models": [
            {"name": "mini", "targets": [{"backend": "small", "model": "gpt-mini"}, {"backend": "big", "model": "gpt-big"}]},
            {"name": "large", "targets": [{"backend": "big", "model": "gpt-big"}]},
        ],
        "aliases": [
            {
                "name": "auto",
                "default": "mini",
                "baseline": "large",
                "rules": [
                    {"name": "long-prompt", "model": "large", "messages_chars_gt": 20},
                    {"model": "large", "header": {"X-Tier": "large"}},
                ],
            },
            {"name": "plain", "default": "mini"},
        ],
    }
)
SCOPE: dict[str, Any] = {"headers": []}


def chat(content: str) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": content}]}


def test_rule_default_forced_and_baseline() -> None:
    router = Router(CONFIG)
    long = router.resolve("auto", chat("x" * 21), SCOPE)
    short = router.resolve("auto", chat("hi"), SCOPE)
    tiered = router.resolve("auto", chat("hi"), {"headers": [(b"x-tier", b"large")]})
    direct = router.resolve("mini", chat("hi"), SCOPE)
    assert long is not None and (long.model, long.rule, long.baseline) == ("large", "long-prompt", "gpt-big")
    assert short is not None and (short.model, short.rule, short.baseline) == ("mini", "default", "gpt-big")
    assert tiered is not None and tiered.rule == "rule-2"  # unnamed: its 1-based position
    assert direct is not None and (direct.rule, direct.baseline) == ("forced", "gpt-mini")  # no tiering: its own first target
    plain = router.resolve("plain", chat("hi"), SCOPE)
    assert plain is not None and plain.baseline == ""  # no baseline configured: no savings measured
    assert router.resolve("nope", chat("hi"), SCOPE) is None


def test_a_fallback_target_names_its_position() -> None:
    router = Router(CONFIG)
    route = router.resolve("auto", chat("hi"), SCOPE)
    assert route is not None
    assert router.rule_after(route, route.upstreams[0]) == "default"
    assert router.rule_after(route, route.upstreams[1]) == "fallback:1"
