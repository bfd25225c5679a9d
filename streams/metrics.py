"""The worker's Prometheus metrics: what it refused, what it retried, what it could not read.

Served on ``worker.metrics_port`` (``/metrics``; 0 turns it off). Every counter here is
alert-worthy when it moves: refused events wait in the dead-letter topic for a fix and a
``gpuledger dead-letters replay``.
"""

from __future__ import annotations

from prometheus_client import Counter, start_http_server

DEAD_LETTERS = Counter(
    "gpuledger_worker_dead_letters", "Events sent to the dead-letter topic, by origin topic and stage (decode, invalid, pricing, store).",
    ["topic", "stage"],
)
POISON_ROWS = Counter("gpuledger_worker_poison_rows", "Rows ClickHouse refused for their content (isolated by bisection, dead-lettered).", ["table"])
STORE_RETRIES = Counter("gpuledger_worker_store_retries", "ClickHouse inserts that failed transiently and were retried.", ["table"])
BATCH_RETRIES = Counter("gpuledger_worker_batch_retries", "Batches whose handling failed as a whole and were retried (nothing acked).", ["agent"])
REFERENCE_REJECTED = Counter(
    "gpuledger_worker_reference_rejected", "Reference records (orgs, prices, budgets) skipped as undecodable or invalid.", ["table"],
)


def serve(port: int, host: str) -> None:
    """Expose the default registry on ``host:port`` (port 0: off). Raises OSError when the port is taken."""
    if port:
        start_http_server(port, addr=host)
