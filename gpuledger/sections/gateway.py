"""The ``gateway`` section: backends, models and their fallback order, aliases with routing rules, virtual keys.

Secrets never live in the settings: a backend names the environment variable holding its API
key, and virtual keys are stored as sha256 digests (or come from ``keys_file``, e.g. a mounted Secret).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from gpuledger.sections import Section

# Longest model name (and key id) an event carries: what a client sends is cut to this, so no one writes unbounded rows.
MAX_MODEL_CHARS = 256

# Credentials, and headers the gateway itself sets per upstream request or that describe the client's own connection.
NEVER_FORWARDED = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "api-key",
        "x-api-key",
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "accept-encoding",
        "expect",
    }
)


class Backend(Section):
    """One upstream OpenAI-compatible server."""

    name: str
    kind: Literal["vllm", "openai", "anthropic"] = Field(
        description="vllm: self-hosted (events carry node/GPUs); openai: any external OpenAI-compatible API; anthropic: Anthropic's API (key sent as x-api-key)."
    )
    base_url: str = Field(description="Up to and including /v1, e.g. http://vllm-8b:8000/v1.")
    api_key_env: str | None = Field(None, description="Environment variable holding the upstream API key.")
    timeout_s: float = Field(60.0, gt=0, description="Longest wait for the upstream's next byte.")
    connect_timeout_s: float = Field(2.0, gt=0)
    deployment: str = ""
    node: str | None = None
    gpu_uuids: list[str] = Field(default_factory=list)

    def api_key(self) -> str | None:
        """Read at startup; never logged."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class Target(Section):
    """A backend and the model name it knows the model by."""

    backend: str
    model: str | None = Field(None, description="Upstream model name; defaults to the gateway model name.")


class Model(Section):
    """A model clients can ask for, served by its targets in order (the next one on failure)."""

    name: str
    targets: list[Target] = Field(min_length=1)


class Rule(Section):
    """Route to ``model`` when any condition given matches."""

    model: str
    max_tokens_gt: int | None = None
    messages_chars_gt: int | None = None
    header: dict[str, str] = Field(default_factory=dict, description="Header name -> value that must match exactly.")
    name: str | None = Field(
        None, description="What usage events record as route_rule when this rule chose the model; default rule-<n> (1-based)."
    )


class Alias(Section):
    """A name like ``auto``: the first matching rule's model, else ``default``."""

    name: str
    default: str
    rules: list[Rule] = Field(default_factory=list)
    baseline: str | None = Field(
        None,
        description="The model every request of this alias would go to without tiering; routing savings are priced against it (unset: none measured).",
    )

    def rule_names(self) -> list[str]:
        """Each rule's name as events record it: its own, else rule-<n>."""
        return [r.name or f"rule-{i}" for i, r in enumerate(self.rules, start=1)]


class VirtualKey(Section):
    """A client key, stored as its sha256 hex digest; ``id`` is what events carry."""

    id: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    org: str
    team: str = ""
    project: str = ""


class GatewayConfig(Section):
    """Everything the gateway needs besides gpuledger's Kafka settings."""

    backends: list[Backend] = Field(min_length=1)
    models: list[Model] = Field(min_length=1)
    aliases: list[Alias] = Field(default_factory=list)
    keys: list[VirtualKey] = Field(default_factory=list)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    fallback_statuses: list[int] = Field(
        default_factory=lambda: [429, 500, 502, 503, 504], description="Upstream statuses that try the next target."
    )
    queue_size: int = Field(10_000, ge=1, description="Usage events buffered while Kafka is slow.")
    max_connections: int = Field(1024, ge=1, description="Pooled upstream connections, all backends together.")
    forward_headers: list[str] = Field(
        default_factory=lambda: ["x-request-id", "traceparent", "tracestate"],
        description="Client request headers passed on to the backend (tracing and correlation only; never credentials).",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Close a client connection whose request headers are not complete this long after it opened or its previous response ended (slowloris).",
    )
    body_timeout_s: float = Field(30.0, gt=0, description="Answer 408 when a request body takes longer than this to arrive.")
    idle_timeout_s: float = Field(75.0, gt=0, description="Close a kept-alive client connection idle this long between requests.")
    max_client_connections: int = Field(
        4096, ge=1, description="Client connections and requests in flight; beyond it new requests get 503."
    )
    max_model_chars: int = Field(
        MAX_MODEL_CHARS, ge=1, le=MAX_MODEL_CHARS, description="Longest model name accepted (longer: 400); events never carry more."
    )
    budget_retry_after_max_s: int = Field(
        3600, ge=1, description="Cap of Retry-After on budget 429s (otherwise the seconds until the budget period ends)."
    )
    enforce_budgets: bool = Field(
        True, description="Refuse requests (429) of scopes whose hard budget is exhausted, as published by the stream worker."
    )
    keys_file: Path | None = Field(
        None, description="A YAML file with more virtual keys (a `keys:` list), e.g. a mounted Kubernetes Secret; added to `keys`."
    )

    @model_validator(mode="before")
    @classmethod
    def _add_keys_file(cls, raw: Any) -> Any:
        """The virtual keys of ``keys_file`` join ``keys`` before validation (so duplicates across both are refused)."""
        keys_file = raw.get("keys_file") if isinstance(raw, dict) else None
        inline = raw.get("keys") if isinstance(raw, dict) else None
        if isinstance(keys_file, (str, Path)) and (
            inline is None or isinstance(inline, list)
        ):  # anything else: validation says what is wrong
            raw = {**raw, "keys": [*(inline or ()), *load_keys(Path(keys_file))]}
        return raw

    @model_validator(mode="after")
    def _forwarding_is_safe(self) -> GatewayConfig:
        """The client's key must never reach a backend (the backend's own key replaces it), nor may framing headers."""
        refused = sorted({h.lower() for h in self.forward_headers} & NEVER_FORWARDED)
        if refused:
            raise ValueError(f"forward_headers may not include {refused}: the gateway sets these itself")
        return self

    @model_validator(mode="after")
    def _references_resolve(self) -> GatewayConfig:
        backends = {b.name for b in self.backends}
        models = {m.name for m in self.models}
        for model in self.models:
            for target in model.targets:
                if target.backend not in backends:
                    raise ValueError(f"model {model.name!r} targets unknown backend {target.backend!r}; known: {sorted(backends)}")
        for alias in self.aliases:
            if alias.name in models:
                raise ValueError(f"alias {alias.name!r} shadows a model of the same name")
            for name in [alias.default, *(r.model for r in alias.rules)]:
                if name not in models:
                    raise ValueError(f"alias {alias.name!r} points at unknown model {name!r}; known: {sorted(models)}")
            if alias.baseline is not None and alias.baseline not in models:
                raise ValueError(
                    f"alias {alias.name!r} has baseline {alias.baseline!r}, which is not a model of this gateway; known: {sorted(models)}"
                )
            _check_rule_names(alias)
        return self

    @model_validator(mode="after")
    def _keys_are_unique(self) -> GatewayConfig:
        """Each virtual key id and digest once (an event's key id must name one caller), inline and ``keys_file`` keys together."""
        where = f" and its keys_file {self.keys_file}" if self.keys_file is not None else ""
        for attribute in ("id", "sha256"):
            counts = Counter(getattr(k, attribute) for k in self.keys)
            if twice := sorted(v for v, n in counts.items() if n > 1):
                raise ValueError(f"virtual key {attribute} {twice} appears more than once in keys{where}")
        return self


def load_keys(path: Path) -> list[VirtualKey]:
    """The ``keys:`` list of a virtual-key file; kept apart from the config so a Secret can hold it."""
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError(f"{path}: expected a YAML mapping with a `keys:` list (as in the gateway config)")
    return [VirtualKey.model_validate(k) for k in data["keys"]]


# route_rule values the gateway itself writes; a rule may not be named like them.
RESERVED_ROUTE_RULES = ("default", "forced")


def _check_rule_names(alias: Alias) -> None:
    """Rule names are what savings are grouped by: unique per alias and never one the gateway writes itself."""
    names = alias.rule_names()
    if twice := sorted(n for n, k in Counter(names).items() if k > 1):
        raise ValueError(f"alias {alias.name!r} has rules named {twice} more than once; give each rule its own `name`")
    if clash := sorted(n for n in names if n in RESERVED_ROUTE_RULES or n.startswith("fallback:") or not n.strip()):
        raise ValueError(
            f"alias {alias.name!r} has rules named {clash}: names may not be empty, {list(RESERVED_ROUTE_RULES)} or start with 'fallback:'"
        )
