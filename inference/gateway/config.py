"""The gateway's settings: the ``gateway`` section of the one settings tree (``gpuledger.sections.gateway``)."""

from __future__ import annotations

from gpuledger.sections.gateway import (
    NEVER_FORWARDED,
    Alias,
    Backend,
    GatewayConfig,
    Model,
    Rule,
    Target,
    VirtualKey,
    load_keys,
)

__all__ = ["NEVER_FORWARDED", "Alias", "Backend", "GatewayConfig", "Model", "Rule", "Target", "VirtualKey", "load_keys"]
