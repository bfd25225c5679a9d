"""The worker's Prometheus metrics, and the small ``/metrics`` + ``/healthz`` HTTP server the worker and notifier share.

Every worker counter that moves is worth a look: refused events wait in the dead-letter
topic for a fix and a ``gpuledger dead-letters replay``. The server is prometheus-client's
WSGI app in a daemon thread (it never waits on the event loop, so a scrape works even while
the loop is busy); ``/healthz`` answers 200 or 503 with a JSON body from a health function.
A port already in use stops the worker at start (``required=True``, exit code 5) and is only
logged by the notifier (its alerts matter more than its metrics). Consumer lag is measured
from the consumer group's committed offsets (what a restart would resume from), every
``LAG_EVERY_S`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, make_wsgi_app

from gpuledger.kafka import client_options
from gpuledger.settings import KafkaSettings

log = structlog.get_logger()
LAG_EVERY_S = 10.0
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

CONSUMER_LAG = Gauge(
    "gpuledger_worker_consumer_lag_messages",
    "Messages not yet committed by the worker's consumer group, per partition.",
    ["topic", "partition"],
)
BATCH_SECONDS = Histogram(
    "gpuledger_worker_batch_store_duration_seconds",
    "Decoding, pricing and storing one batch, by agent (usage, samples).",
    ["agent"],
    buckets=_BUCKETS,
)
BATCH_RETRIES = Counter(
    "gpuledger_worker_batch_retries", "Batches whose handling failed as a whole and were retried (nothing acked), by agent.", ["agent"]
)
ROWS_INSERTED = Counter("gpuledger_worker_rows_inserted", "Rows stored in ClickHouse, by table.", ["table"])
INSERT_SECONDS = Histogram(
    "gpuledger_worker_insert_duration_seconds", "One successful ClickHouse insert, by table.", ["table"], buckets=_BUCKETS
)
INSERT_RETRIES = Counter(
    "gpuledger_worker_insert_retries", "ClickHouse insert attempts that failed transiently (the sink retries them), by table.", ["table"]
)
POISON_ROWS = Counter(
    "gpuledger_worker_poison_rows", "Rows ClickHouse refused for their content (isolated by bisection, dead-lettered).", ["table"]
)
DEAD_LETTERS = Counter(
    "gpuledger_worker_dead_letters",
    "Messages sent to the dead-letter topic, by origin topic and stage (decode, invalid, pricing, store, reference).",
    ["topic", "stage"],
)
REFERENCE_REJECTED = Counter(
    "gpuledger_worker_reference_rejected",
    "Reference records (orgs, prices, budgets, equivalents) skipped as undecodable or invalid.",
    ["table"],
)
REFERENCE_CAUGHT_UP = Gauge(
    "gpuledger_worker_reference_caught_up", "1 once a reference topic (orgs, prices, budgets, equivalents) was read to its end.", ["topic"]
)
PASS_SECONDS = Histogram(
    "gpuledger_worker_pass_duration_seconds", "One pass of a periodic task (allocate, budgets).", ["task"], buckets=_BUCKETS
)
PASS_FAILURES = Counter("gpuledger_worker_pass_failures", "Passes of a periodic task that failed (retried next tick).", ["task"])
LAG_CHECK_FAILURES = Counter("gpuledger_worker_lag_check_failures", "Consumer lag measurements that could not reach Kafka.")

Health = Callable[[], tuple[bool, dict[str, Any]]]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        """Scrapes every few seconds are not news."""


def serve_http(host: str, port: int, health: Health, registry: Any = REGISTRY, *, required: bool = False) -> WSGIServer | None:
    """Serve ``/metrics`` and ``/healthz`` on ``host:port`` in a daemon thread.

    A port that cannot be bound raises ``OSError`` when ``required`` (the worker exits 5 on it),
    else is logged and None is returned (the notifier runs on without metrics).
    """
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            ok, detail = health()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
            return [json.dumps(detail).encode()]
        return metrics_app(environ, start_response)

    try:
        server = make_server(host, port, app, handler_class=_Quiet)
    except OSError as exc:
        if required:
            raise
        log.error("metrics port unavailable: serving no /metrics", host=host, port=port, error=str(exc))
        return None
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    log.info("metrics listening", host=host, port=port)
    return server


@contextlib.contextmanager
def timed(histogram: Histogram, failures: Counter, label: str) -> Iterator[None]:
    """Observe the block's duration; count it as failed if it raises."""
    started = time.perf_counter()
    try:
        yield
    except Exception:
        failures.labels(label).inc()
        raise
    finally:
        histogram.labels(label).observe(time.perf_counter() - started)


class WorkerHealth:
    """Healthy when every reference topic has been read to its end and Kafka answered the last lag check recently.

    Created before the app (the CLI binds ``/healthz`` first, so a port in use stops the worker at once).
    """

    def __init__(self, views: dict[str, Any] | None = None, stale_after_s: float = 6 * LAG_EVERY_S) -> None:
        self.views: dict[str, Any] = dict(views or {})  # filled by ``create_app`` once its reference tables exist
        self.stale_after_s = stale_after_s
        self.last_kafka_contact = 0.0

    def __call__(self) -> tuple[bool, dict[str, Any]]:
        caught_up = {topic: view.caught_up.is_set() for topic, view in self.views.items()}
        for topic, done in caught_up.items():
            REFERENCE_CAUGHT_UP.labels(topic).set(1 if done else 0)
        age = time.time() - self.last_kafka_contact if self.last_kafka_contact else None
        kafka_ok = age is not None and age <= self.stale_after_s
        return all(caught_up.values()) and kafka_ok, {"reference_caught_up": caught_up, "kafka_ok": kafka_ok, "kafka_age_seconds": age}


async def measure_lag(kafka: KafkaSettings, group: str, topics: list[str], health: WorkerHealth, every_s: float = LAG_EVERY_S) -> None:
    """Set ``CONSUMER_LAG`` for ``group`` on ``topics`` forever (a failed check is counted and retried)."""
    while True:
        try:
            async with _kafka_clients(kafka) as (admin, consumer):
                while True:
                    committed = await admin.list_consumer_group_offsets(group)
                    parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
                    if len(parts) < len(topics):
                        await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka exposes no public refresh
                        parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
                    for tp, end in (await consumer.end_offsets(parts)).items():
                        done = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0
                        CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - done))
                    health.last_kafka_contact = time.time()
                    health()  # refreshes the caught-up gauges between scrapes too
                    await asyncio.sleep(every_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a metric must never take the worker down
            LAG_CHECK_FAILURES.inc()
            log.warning("consumer lag check failed", error=type(exc).__name__)
            await asyncio.sleep(every_s)


@contextlib.asynccontextmanager
async def _kafka_clients(kafka: KafkaSettings) -> AsyncIterator[tuple[AIOKafkaAdminClient, AIOKafkaConsumer]]:
    admin, consumer = AIOKafkaAdminClient(**client_options(kafka)), AIOKafkaConsumer(**client_options(kafka))
    await admin.start()
    try:
        await consumer.start()
        try:
            yield admin, consumer
        finally:
            await consumer.stop()
    finally:
        await admin.close()
