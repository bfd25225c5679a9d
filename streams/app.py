"""The Faust worker: usage and GPU samples in, enriched rows and ledger lines out to ClickHouse.

Data path (after OpenMeter: Kafka -> sink worker -> ClickHouse):
- ``usage`` batches: decode InferenceUsage, join the org directory and price list,
  store the enriched event and, for API models, its cost line (``streams.handlers.UsageRows``);
- ``samples`` batches: decode GpuSample, store it with its node's owner (``SampleRows``);
  Faust's consumer hands both topics' fetches to their ``RecordBatcher`` whole (``streams.consume``);
- ``allocate`` timer (every worker): re-derive the GPU window lines of the GPUs whose
  samples partitions this worker consumes (``streams.ownership``) from stored rows;
- ``budgets`` timer (leader only): measure every budget on the ledger, raise alerts,
  publish each budget's standing (see ``streams.budgets.evaluator``);
- ``rollups`` timer (leader only): bring ``spend_hourly`` / ``spend_daily`` up to date with the
  ledger rows stored since the last pass (see ``streams.store.rollups``).
Every event ends stored or in the dead-letter topic with its reason and origin
(``streams.ingest``: undecodable, out of range, unpriceable, refused by ClickHouse);
offsets are acknowledged only after that (at-least-once), and storage is idempotent,
so replays never change totals.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import faust
import structlog

from gpuledger.clickhouse import connect
from gpuledger.kafka import AckedSender, client_options
from gpuledger.migrate import PARAMETERS
from gpuledger.settings import Settings
from schemas import GpuSample, InferenceUsage, OutcomeEvent, codec_for
from streams import metrics
from streams import reference as reference_tables
from streams.allocator import GpuAllocator
from streams.batching import RecordBatcher
from streams.budgets.evaluator import BudgetEvaluator, Topics
from streams.consume import BatchingConsumer
from streams.handlers import EventChecks, GuardedPass, ReferenceData, ReferenceRejects, SampleRows, UsageRows, settled_after
from streams.ingest import DeadLetters, Ingest
from streams.outcomes import OUTCOME_COLUMNS, OutcomeRows
from streams.ownership import consumer_ownership
from streams.shutdown import GracefulWorker
from streams.sink import ClickHouseSink
from streams.store import rollups
from streams.store.tables import LEDGER_COLUMNS, SAMPLE_COLUMNS, USAGE_COLUMNS
from streams.validation import TimeWindow
from streams.workloads import LabelKeys

log = structlog.get_logger()


def _broker_credentials(settings: Settings) -> Any:
    options = client_options(settings.kafka)
    if settings.kafka.sasl_mechanism:
        return faust.SASLCredentials(
            username=options["sasl_plain_username"],
            password=options["sasl_plain_password"],
            mechanism=settings.kafka.sasl_mechanism,
            ssl_context=options.get("ssl_context"),
        )
    if "ssl_context" in options:
        return faust.SSLCredentials(options["ssl_context"])
    return None


def create_app(settings: Settings, health: metrics.WorkerHealth | None = None) -> faust.App:
    """Build the worker app from ``settings``: wiring only; the handlers and policies live in ``streams.handlers``.

    ``health``: the ``/healthz`` already served (``gpuledger worker``); the app fills in its
    reference tables and keeps its Kafka contact and consumer lag current.
    """
    w, topics = settings.worker, settings.topics
    app = faust.App(
        w.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka.bootstrap_servers.split(",")],
        broker_credentials=_broker_credentials(settings),
        store="memory://",
        topic_replication_factor=topics.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=w.batch_size,
        broker_commit_interval=1.0,
        broker_max_poll_records=w.batch_size,
        web_enabled=False,
        broker_session_timeout=w.session_timeout_seconds,
        broker_heartbeat_interval=max(1.0, w.session_timeout_seconds / 4),
        producer_acks=-1,
        datadir=str(w.data_dir / w.app_id),
        stream_wait_empty=False,  # no Faust stream holds our records: unstored ones are simply read again
        # Faust would declare its topics by asking one broker for the controller and giving up if that broker is down;
        # every topic, its leader topic included, is created by gpuledger.kafka.ensure_topics, which retries instead.
        topic_allow_declare=False,
    )
    sender = AckedSender(settings.kafka)
    rejects = ReferenceRejects(DeadLetters(sender, topics.dead_letter))
    reference = ReferenceData(
        *(
            make(settings, rejects)
            for make in (
                reference_tables.org_table,
                reference_tables.price_table,
                reference_tables.budget_table,
                reference_tables.equivalent_table,
            )
        )
    )
    sink = ClickHouseSink(connect(settings.clickhouse), settings.clickhouse.database)  # times and counts every insert attempt
    checks = EventChecks(
        TimeWindow(future_skew=timedelta(seconds=w.max_future_skew_seconds), max_age=timedelta(days=PARAMETERS["raw_retention_days"]))
    )

    def ingest(**steps: Any) -> Ingest:
        return Ingest(sink=sink, refuse=DeadLetters(sender, topics.dead_letter), **steps)

    usage = ingest(
        decode=codec_for(InferenceUsage).decode,
        check=checks.usage,
        prepare=UsageRows(reference.lookup, w.unassigned_org),
        begin=reference.books,
        tables=(("usage_events", USAGE_COLUMNS), ("ledger", LEDGER_COLUMNS)),
    )
    samples = ingest(
        decode=codec_for(GpuSample).decode,
        check=checks.sample,
        prepare=SampleRows(reference.lookup, w.unassigned_org),
        tables=(("gpu_samples", SAMPLE_COLUMNS),),
    )
    outcomes = ingest(
        decode=codec_for(OutcomeEvent).decode, check=checks.outcome, prepare=OutcomeRows(), tables=(("outcomes", OUTCOME_COLUMNS),)
    )
    batchers = {
        topic: RecordBatcher(
            step.store, prepare=settled_after(reference.loaded, step.rows), size=w.batch_size, seconds=w.batch_seconds, name=name
        )
        for topic, name, step in (
            (topics.inference_usage, "usage", usage),
            (topics.gpu_samples, "samples", samples),
            (topics.outcomes, "outcomes", outcomes),
        )
    }
    app.transport.Consumer = BatchingConsumer.serving(batchers, w.fetch_wait_seconds)  # type: ignore[misc]  # Faust types it a ClassVar; set on this app's transport only. Faust keeps the group; the batchers get whole fetches
    for topic in batchers:
        app.topics.add(app.topic(topic, value_serializer="raw", key_serializer="raw"))

    allocator = GpuAllocator(
        client=connect(settings.clickhouse),
        sink=sink,
        database=settings.clickhouse.database,
        window_seconds=w.gpu_window_seconds,
        restate_hours=w.restate_hours,
        owners=reference.lookup,
        prices=reference.price_book,
        unassigned=w.unassigned_org,
        idle_policy=w.idle_policy,
        label_keys=LabelKeys.of(w),
        ownership=consumer_ownership(  # the consumer's own metadata and partitioner say where a GPU's samples go
            lambda: app.consumer.assignment(), lambda topic, key: app.consumer.key_partition(topic, key), topics.gpu_samples
        ),
    )
    evaluator = BudgetEvaluator(
        client=connect(settings.clickhouse),
        database=settings.clickhouse.database,
        budgets=reference.budgets.values,
        publish=AckedSender(settings.kafka).send_all,
        topics=Topics(alerts=topics.budget_alerts, status=topics.budget_status),
        settings=settings.budgets,
    )
    app.task(_named("follow_reference", lambda: asyncio.gather(*(table.view.run() for table in reference.tables))))
    app.timer(1.0, name="reference-dead-letters")(rejects.settle)
    app.timer(w.allocate_every_seconds, name="allocate")(GuardedPass("allocate", allocator.run_once, reference.loaded))
    app.timer(settings.budgets.evaluate_every_seconds, on_leader=True, name="budgets")(
        GuardedPass("budgets", evaluator.run_once, reference.loaded)
    )
    rollup_client = connect(settings.clickhouse)  # the next pass starts from the same watermark, so a failed one loses nothing
    app.timer(w.rollup_every_seconds, on_leader=True, name="rollups")(
        GuardedPass("rollups", lambda: asyncio.to_thread(rollups.maintain, rollup_client, settings.clickhouse.database))
    )
    if health is not None:  # /healthz reads the reference tables; consumer lag only while the CLI serves /metrics
        health.views.update({table.view.topic: table.view for table in reference.tables})
        app.task(
            _named(
                "consumer_lag", lambda: metrics.measure_lag(settings.kafka, w.app_id, [topics.inference_usage, topics.gpu_samples], health)
            )
        )
    return app


def _named(name: str, start: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    """A coroutine function with a name (Faust names its tasks after the function)."""

    async def task() -> None:
        await start()

    task.__name__ = task.__qualname__ = name
    return task


def run_worker(settings: Settings, health: metrics.WorkerHealth | None = None) -> None:
    """Run the worker until SIGTERM/SIGINT (``gpuledger worker``; the CLI serves ``/metrics`` and ``/healthz`` first)."""
    from gpuledger.kafka import ensure_topics

    asyncio.run(ensure_topics(settings))
    app = create_app(settings, health)
    app.conf.datadir.mkdir(parents=True, exist_ok=True)
    worker = GracefulWorker(app, loglevel=settings.log_level.upper(), quiet=True, redirect_stdouts=False)
    worker.grace = settings.worker.shutdown_grace_seconds
    _tune_gc()
    worker.execute_from_commandline()


GC_THRESHOLDS = (50_000, 20, 100)  # Python's default is (700, 10, 10)


def _tune_gc() -> None:
    """Fewer garbage-collector passes over the worker's batches.

    A batch of 5,000 events holds some 100,000 young objects (records, Decimals, rows) until it is stored;
    with Python's default thresholds the collector walks them again and again (about a fifth of the CPU
    spent preparing a batch, measured by ``tests/bench/pipeline_bench.py``). The worker's long-lived objects
    (modules, Faust, the clients) are frozen out of every pass; cycles are still collected, only less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
