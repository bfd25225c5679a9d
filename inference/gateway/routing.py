"""Which upstreams serve a request: alias rules pick a model, the model lists its targets in fallback order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpuledger.sections.gateway import Alias, Backend, GatewayConfig, Rule
from inference.metering.asgi_body import Scope, header
from inference.metering.events import Placement
from inference.metering.openai_usage import prompt_chars


@dataclass(frozen=True, slots=True)
class Upstream:
    """One attempt: where to send it, under which model name, and how the event describes it."""

    backend: Backend
    model: str
    url_base: str
    auth: tuple[str, str] | None  # the header carrying the backend's own key
    placement: Placement


@dataclass(frozen=True, slots=True)
class Route:
    """What routing decided for one request: the gateway model, its upstreams, and what savings are measured against.

    ``rule`` is the rule name, ``default`` (no rule matched) or ``forced`` (the client named a model, not an alias);
    ``baseline`` is the upstream model name the request would have been served by without tiering ("" when the alias has none).
    """

    model: str
    upstreams: list[Upstream]
    rule: str
    baseline: str


class Router:
    """Resolves a requested model name to an ordered list of upstreams."""

    def __init__(self, config: GatewayConfig) -> None:
        backends = {b.name: b for b in config.backends}
        self._aliases: dict[str, Alias] = {a.name: a for a in config.aliases}
        self._models: dict[str, list[Upstream]] = {}
        for model in config.models:
            self._models[model.name] = [self._upstream(backends[t.backend], t.model or model.name) for t in model.targets]
        # Worked out once: per alias its (rule, name) pairs and its baseline's first upstream model name.
        self._named = {a.name: list(zip(a.rules, a.rule_names(), strict=True)) for a in config.aliases}
        self._baselines = {a.name: self._models[a.baseline][0].model if a.baseline else "" for a in config.aliases}

    @staticmethod
    def _upstream(backend: Backend, model: str) -> Upstream:
        key = backend.api_key()
        placement = Placement(
            backend=backend.kind, deployment=backend.deployment or backend.name, node=backend.node, gpu_uuids=list(backend.gpu_uuids)
        )
        auth = (("x-api-key", key) if backend.kind == "anthropic" else ("Authorization", f"Bearer {key}")) if key else None
        return Upstream(backend, model, backend.base_url.rstrip("/"), auth, placement)

    def names(self) -> list[str]:
        """Every model name a client may ask for."""
        return [*self._models, *self._aliases]

    def resolve(self, name: str, request: dict[str, Any], scope: Scope) -> Route | None:
        """The gateway model chosen, its upstreams and why, or None for an unknown name."""
        alias = self._aliases.get(name)
        if alias is None:
            upstreams = self._models.get(name)
            return Route(name, upstreams, "forced", upstreams[0].model) if upstreams is not None else None
        model, rule = next(((r.model, n) for r, n in self._named[name] if _matches(r, request, scope)), (alias.default, "default"))
        return Route(model, self._models[model], rule, self._baselines[name])

    @staticmethod
    def rule_after(route: Route, answered_by: Upstream) -> str:
        """``fallback:<n>`` when the n-th (0-based) target answered instead of the first, else the route's own rule."""
        if answered_by is route.upstreams[0]:
            return route.rule
        return f"fallback:{route.upstreams.index(answered_by)}"


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
