"""Reading the gateway's refusal counters from its real /metrics endpoint."""

from __future__ import annotations

from tests.support import scraped


def refusals(url: str, reason: str) -> float:
    """``gpuledger_gateway_refusals_total{reason}``."""
    return scraped(url, "gpuledger_gateway_refusals_total", reason=reason)
