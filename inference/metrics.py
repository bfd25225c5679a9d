"""Prometheus counters for usage publishing, defined once per process (the registry rejects duplicates).

Inside vLLM they appear on vLLM's own ``/metrics``; the gateway serves them on its ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import Counter

EVENTS_PUBLISHED = Counter(
    "gpuledger_usage_events_published_total", "Usage events acknowledged by Kafka.", ["component"]
)
EVENTS_DROPPED = Counter(
    "gpuledger_usage_events_dropped_total",
    "Usage events lost: queue_full (overload, never delays a response) or kafka_error (delivery failed).",
    ["component", "reason"],
)
REQUESTS = Counter("gpuledger_gateway_requests_total", "Gateway requests by endpoint and final status.", ["endpoint", "status"])
