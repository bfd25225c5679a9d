"""The collector agent's settings: the ``collector`` section of the one settings tree (``gpuledger.sections.collector``)."""

from __future__ import annotations

from gpuledger.sections.collector import DEFAULT_POD_LABEL_KEYS, CollectorSettings, default_node_name

__all__ = ["DEFAULT_POD_LABEL_KEYS", "CollectorSettings", "default_node_name"]
