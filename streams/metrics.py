"""The worker's Prometheus metrics, and the small ``/metrics`` + ``/healthz`` HTTP server the worker and notifier share.

The server is prometheus-client's WSGI app in a daemon thread (it never waits on the event
loop, so a scrape works even while the loop is busy); ``/healthz`` answers 200 or 503 with a
JSON body from a health function. A port already in use is logged, not fatal: metrics must
never stop the ledger. Consumer lag is measured from the consumer group's committed offsets
(what a restart would resume from), every ``LAG_EVERY_S`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
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

CONSUMER_LAG = Gauge("gpuledger_worker_consumer_lag_messages", "Messages not yet committed by the worker's consumer group, per partition.", ["topic", "partition"])
BATCH_SECONDS = Histogram("gpuledger_worker_batch_store_duration_seconds", "Decoding, pricing and storing one batch, by agent (usage, samples).", ["agent"], buckets=_BUCKETS)
BATCH_FAILURES = Counter("gpuledger_worker_batch_failures_total", "Batches whose store step raised, by agent.", ["agent"])
ROWS_INSERTED = Counter("gpuledger_worker_rows_inserted_total", "Rows stored in ClickHouse, by table.", ["table"])
INSERT_SECONDS = Histogram("gpuledger_worker_insert_duration_seconds", "One successful ClickHouse insert, by table.", ["table"], buckets=_BUCKETS)
INSERT_RETRIES = Counter("gpuledger_worker_insert_retries_total", "ClickHouse insert attempts that failed (the sink retries them), by table.", ["table"])
DEAD_LETTERS = Counter("gpuledger_worker_dead_letters_total", "Messages sent to the dead-letter topic, by the topic they came from.", ["topic"])
REFERENCE_CAUGHT_UP = Gauge("gpuledger_worker_reference_caught_up", "1 once a reference topic (orgs, prices, budgets) was read to its end.", ["topic"])
PASS_SECONDS = Histogram("gpuledger_worker_pass_duration_seconds", "One pass of a periodic task (allocate, budgets).", ["task"], buckets=_BUCKETS)
PASS_FAILURES = Counter("gpuledger_worker_pass_failures_total", "Passes of a periodic task that failed (retried next tick).", ["task"])
LAG_CHECK_FAILURES = Counter("gpuledger_worker_lag_check_failures_total", "Consumer lag measurements that could not reach Kafka.")

Health = Callable[[], tuple[bool, dict[str, Any]]]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        """Scrapes every few seconds are not news."""


def serve_http(host: str, port: int, health: Health, registry: Any = REGISTRY) -> WSGIServer | None:
    """Serve ``/metrics`` and ``/healthz`` on ``host:port`` in a daemon thread; None (logged) when the port cannot be bound."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            ok, detail = health()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
            return [json.dumps(detail).encode()]
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]

    try:
        server = make_server(host, port, app, handler_class=_Quiet)
    except OSError as exc:
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


def timed_batch(agent: str, store: Callable[[list[Any]], Awaitable[None]]) -> Callable[[list[Any]], Awaitable[None]]:
    """``store`` with its duration and failures recorded under ``agent``."""

    async def wrapped(events: list[Any]) -> None:
        with timed(BATCH_SECONDS, BATCH_FAILURES, agent):
            await store(events)

    return wrapped


class CountingClient:
    """A ClickHouse client whose inserts are timed and counted: rows stored, and failed attempts (which the sink retries).

    Wraps the client rather than the sink, so every attempt the sink makes is seen; everything else is the wrapped client's.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    def insert(self, table: str, *args: Any, **kwargs: Any) -> Any:
        name = table.rsplit(".", 1)[-1]
        started = time.perf_counter()
        try:
            result = self._client.insert(table, *args, **kwargs)
        except Exception:
            INSERT_RETRIES.labels(name).inc()
            raise
        INSERT_SECONDS.labels(name).observe(time.perf_counter() - started)
        ROWS_INSERTED.labels(name).inc(len(kwargs.get("data", args[0] if args else ())))
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class WorkerHealth:
    """Healthy when every reference topic has been read to its end and Kafka answered the last lag check recently."""

    def __init__(self, views: dict[str, Any], stale_after_s: float = 6 * LAG_EVERY_S) -> None:
        self.views, self.stale_after_s = views, stale_after_s
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
