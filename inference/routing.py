"""Which upstreams serve a request: alias rules pick a model, the model lists its targets in fallback order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inference.asgi_body import Scope, header
from inference.events import Placement
from inference.gateway_config import Alias, Backend, GatewayConfig, Rule
from inference.openai_usage import prompt_chars


@dataclass(frozen=True, slots=True)
class Upstream:
    """One attempt: where to send it, under which model name, and how the event describes it."""

    backend: Backend
    model: str
    url_base: str
    auth: tuple[str, str] | None  # the header carrying the backend's own key
    placement: Placement


class Router:
    """Resolves a requested model name to an ordered list of upstreams."""

    def __init__(self, config: GatewayConfig) -> None:
        backends = {b.name: b for b in config.backends}
        self._aliases: dict[str, Alias] = {a.name: a for a in config.aliases}
        self._models: dict[str, list[Upstream]] = {}
        for model in config.models:
            self._models[model.name] = [self._upstream(backends[t.backend], t.model or model.name) for t in model.targets]

    @staticmethod
    def _upstream(backend: Backend, model: str) -> Upstream:
        key = backend.api_key()
        placement = Placement(backend=backend.kind, deployment=backend.deployment or backend.name, node=backend.node, gpu_uuids=list(backend.gpu_uuids))
        auth = (("x-api-key", key) if backend.kind == "anthropic" else ("Authorization", f"Bearer {key}")) if key else None
        return Upstream(backend, model, backend.base_url.rstrip("/"), auth, placement)

    def names(self) -> list[str]:
        """Every model name a client may ask for."""
        return [*self._models, *self._aliases]

    def resolve(self, name: str, request: dict[str, Any], scope: Scope) -> tuple[str, list[Upstream]] | None:
        """The gateway model chosen and its upstreams, or None for an unknown name."""
        alias = self._aliases.get(name)
        if alias is not None:
            name = next((r.model for r in alias.rules if _matches(r, request, scope)), alias.default)
        upstreams = self._models.get(name)
        return (name, upstreams) if upstreams is not None else None


def _matches(rule: Rule, request: dict[str, Any], scope: Scope) -> bool:
    """Any one condition of the rule suffices."""
    if rule.max_tokens_gt is not None:
        asked = request.get("max_tokens") or request.get("max_completion_tokens") or request.get("max_output_tokens")
        if isinstance(asked, int) and asked > rule.max_tokens_gt:
            return True
    if rule.messages_chars_gt is not None and prompt_chars(request) > rule.messages_chars_gt:
        return True
    for name, value in rule.header.items():
        seen = header(scope, name.lower().encode())
        if seen is not None and seen.decode("latin-1") == value:
            return True
    return False
