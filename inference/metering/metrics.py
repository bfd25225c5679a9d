"""Prometheus metrics of usage publishing and of the gateway, defined once per process (the registry rejects duplicates).

Inside vLLM the publishing counters appear on vLLM's own ``/metrics``; the gateway serves all of
them on its ``/metrics``. Names and labels are listed in the README (Metrics).
"""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Counter, Histogram

EVENTS_PUBLISHED = Counter("gpuledger_usage_events_published_total", "Usage events acknowledged by Kafka.", ["component"])
EVENTS_DROPPED = Counter(
    "gpuledger_usage_events_dropped_total",
    "Usage events lost: queue_full (overload, never delays a response), kafka_error (delivery failed) or unencodable (even its flagged replacement could not be encoded).",
    ["component", "reason"],
)
EVENTS_REPLACED = Counter(
    "gpuledger_usage_events_replaced_total",
    "Usage events that could not be encoded as reported and were published as a flagged (usage_estimated) replacement.",
    ["component"],
)
REQUESTS = Counter("gpuledger_gateway_requests_total", "Gateway requests by endpoint and final status.", ["endpoint", "status"])
REFUSALS = Counter(
    "gpuledger_gateway_refusals_total",
    "Requests the gateway refused itself, by reason: auth, route_not_found, method_not_allowed, model_not_found, too_large, invalid, budget, body_timeout.",
    ["reason"],
)
# Seconds; from a millisecond (the gateway's own overhead) to the longest generations.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
REQUEST_DURATION = Histogram(
    "gpuledger_gateway_request_duration_seconds",
    "Time from a metered request's arrival to its last byte sent, by endpoint.",
    ["endpoint"],
    buckets=_BUCKETS,
)
UPSTREAM_DURATION = Histogram(
    "gpuledger_gateway_upstream_duration_seconds",
    "Time from sending a request to a backend to its response headers, per attempt.",
    ["backend"],
    buckets=_BUCKETS,
)
UPSTREAM_RESPONSES = Counter(
    "gpuledger_gateway_upstream_responses_total",
    "Backend answers per attempt: the HTTP status, or timeout / unreachable / broken when no status came.",
    ["backend", "status"],
)
CONNECTIONS_CLOSED = Counter(
    "gpuledger_gateway_connections_closed_total",
    "Client connections the gateway closed itself: header_timeout (slow or silent clients).",
    ["reason"],
)


@functools.cache
def labelled(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once per label set instead of per request (the lookup costs a lock and a dict)."""
    return metric.labels(*labels)
