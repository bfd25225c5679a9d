"""The notifier's Prometheus metrics and health, served by ``streams.metrics.serve_http`` (``/metrics``, ``/healthz``)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Gauge

DELIVERIES = Counter(
    "gpuledger_notifier_deliveries_total",
    "Alerts settled, by outcome: delivered, failed (refused for good), duplicate (already settled).",
    ["outcome"],
)
ATTEMPTS = Counter("gpuledger_notifier_attempts_total", "HTTP attempts to post an alert, by status (HTTP code, or network).", ["status"])
ROUNDS_EXHAUSTED = Counter(
    "gpuledger_notifier_rounds_exhausted_total",
    "Delivery rounds that used every attempt on transient failures (the alert is retried after a pause).",
)
WAITING = Gauge(
    "gpuledger_notifier_alerts_waiting", "Alerts on the topic not yet settled, per partition (the notifier's queue).", ["partition"]
)
IN_FLIGHT = Gauge("gpuledger_notifier_alert_in_flight", "1 while an alert is being delivered (including backoff waits).")


class NotifierHealth:
    """Healthy once consuming, with Kafka answered recently (a delivery waiting out a backoff counts as alive).

    The runner sets ``last_poll`` after each poll and ``delivering`` while an alert is being delivered.
    """

    def __init__(self, stale_after_s: float = 60.0) -> None:
        self.stale_after_s = stale_after_s
        self.last_poll = 0.0
        self.delivering = False

    def __call__(self) -> tuple[bool, dict[str, Any]]:
        age = time.time() - self.last_poll if self.last_poll else None
        ok = age is not None and (age <= self.stale_after_s or self.delivering)
        return ok, {"consuming": self.last_poll > 0, "poll_age_seconds": age, "delivering": self.delivering}
