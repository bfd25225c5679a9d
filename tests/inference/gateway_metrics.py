"""Reading one of the gateway's counters from its real /metrics endpoint."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def gateway_counter(url: str, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` of the gateway at ``url`` (0 when it has not been counted yet)."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def refusals(url: str, reason: str) -> float:
    """``gpuledger_gateway_refusals_total{reason}``."""
    return gateway_counter(url, "gpuledger_gateway_refusals_total", reason=reason)
