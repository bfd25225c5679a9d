"""The Faust worker: usage and GPU samples in, enriched rows and ledger lines out to ClickHouse.

Data path (after OpenMeter: Kafka -> sink worker -> ClickHouse):
- ``usage`` agent: decode InferenceUsage, join the org directory and price list,
  store the enriched event and, for API models, its cost line;
- ``samples`` agent: decode GpuSample, store it with its node's owner;
- ``allocate`` timer (leader only): re-derive GPU window lines from stored rows;
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
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import structlog
from faust.types import EventT

from gpuledger.clickhouse import connect
from gpuledger.kafka import AckedSender, client_options
from gpuledger.migrate import PARAMETERS
from gpuledger.settings import Settings
from schemas import GpuSample, InferenceUsage, OrgDirectory, codec_for
from streams import metrics, reference
from streams.allocator import GpuAllocator
from streams.batching import EventBatcher
from streams.budgets.evaluator import BudgetEvaluator, Topics
from streams.enrich import price_usage, resolve_payer
from streams.ingest import DeadLetters, Ingest, Rows
from streams.pricing import EquivalentBook, PriceBook
from streams.shutdown import GracefulWorker
from streams.store import rollups
from streams.sink import (
    LEDGER_COLUMNS,
    SAMPLE_COLUMNS,
    USAGE_COLUMNS,
    ClickHouseSink,
    ledger_row,
    sample_row,
    usage_row,
    version_now,
)
from streams.validation import TimeWindow, sample_problem, usage_problem
from streams.workloads import LabelKeys

log = structlog.get_logger()


def _broker_credentials(settings: Settings) -> Any:
    options = client_options(settings.kafka)
    if settings.kafka.sasl_mechanism:
        return faust.SASLCredentials(
            username=options["sasl_plain_username"], password=options["sasl_plain_password"],
            mechanism=settings.kafka.sasl_mechanism, ssl_context=options.get("ssl_context"),
        )
    if "ssl_context" in options:
        return faust.SSLCredentials(options["ssl_context"])
    return None


def create_app(settings: Settings, health: metrics.WorkerHealth | None = None) -> faust.App:
    """Build the worker app; everything it needs comes from ``settings``.

    ``health``: the ``/healthz`` already served (``gpuledger worker``); the app fills in its
    reference tables and keeps its Kafka contact and consumer lag current.
    """
    w = settings.worker
    app = faust.App(
        w.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka.bootstrap_servers.split(",")],
        broker_credentials=_broker_credentials(settings),
        store="memory://",
        topic_replication_factor=settings.topics.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=w.batch_size,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=max(4 * w.batch_size, 4096),
        broker_max_poll_records=w.batch_size,
        web_enabled=False,
        broker_session_timeout=w.session_timeout_seconds,
        broker_heartbeat_interval=max(1.0, w.session_timeout_seconds / 4),
        producer_acks=-1,
        datadir=str(settings.stack.data_dir / "worker" / w.app_id),
        stream_wait_empty=False,  # unacked events wait in our batches; waiting for them would stall shutdown
    )
    # -- bad input: dead letters for events and for reference records (streams.ingest) --
    sender = AckedSender(settings.kafka)
    reference_rejects = DeadLetters(sender, settings.topics.dead_letter)

    def reject_reference(topic: str, key: bytes, value: bytes, reason: str) -> None:
        reference_rejects.add(topic, None, None, key, value, "reference", reason)

    orgs, prices, budgets, equivalents = (
        make(settings, reject_reference)
        for make in (reference.org_table, reference.price_table, reference.budget_table, reference.equivalent_table)
    )
    tables = (orgs, prices, budgets, equivalents)
    usage_topic = app.topic(settings.topics.inference_usage, value_serializer="raw", key_serializer="raw")
    samples_topic = app.topic(settings.topics.gpu_samples, value_serializer="raw", key_serializer="raw")

    client = connect(settings.clickhouse)
    sink = ClickHouseSink(client, settings.clickhouse.database)  # times and counts every insert attempt (streams.metrics)
    times = TimeWindow(future_skew=timedelta(seconds=w.max_future_skew_seconds), max_age=timedelta(days=PARAMETERS["raw_retention_days"]))

    @app.task
    async def follow_reference() -> None:
        await asyncio.gather(*(table.view.run() for table in tables))

    @app.timer(1.0, name="reference-dead-letters")
    async def settle_reference_rejects() -> None:
        try:
            await reference_rejects.settle()
        except Exception:  # Kafka away: kept queued for the next tick
            log.exception("could not dead-letter skipped reference records; will retry")

    # -- metrics: /healthz reads the reference tables; consumer lag only while the CLI serves /metrics --
    if health is not None:
        health.views.update({table.view.topic: table.view for table in tables})

        @app.task
        async def consumer_lag() -> None:
            await metrics.measure_lag(settings.kafka, w.app_id, [settings.topics.inference_usage, settings.topics.gpu_samples], health)

    async def reference_loaded() -> None:
        """Nothing is joined or evaluated against a half-read directory, price list or budget set."""
        for table in tables:
            await table.view.caught_up.wait()

    def lookup(kind: str, key: str) -> OrgDirectory | None:
        return orgs.get(reference.org_key(kind, key))

    def price_book() -> PriceBook:
        return prices.derived(PriceBook)

    def books() -> tuple[PriceBook, EquivalentBook]:
        """The price list and the API equivalents, as of this batch."""
        return price_book(), equivalents.derived(EquivalentBook)

    def usage_rows(event: EventT, record: InferenceUsage, reference_books: tuple[PriceBook, EquivalentBook]) -> Rows:
        priced = price_usage(record, resolve_payer(record, lookup, w.unassigned_org), *reference_books)
        rows: Rows = {"usage_events": [usage_row(priced, event.message.partition, event.message.offset)]}
        if priced.line is not None:
            rows["ledger"] = [ledger_row(priced.line, version_now())]
        return rows

    def sample_rows(event: EventT, record: GpuSample, _: None) -> Rows:
        owner = lookup("node", record.node)
        return {"gpu_samples": [sample_row(record, owner.org if owner else w.unassigned_org, event.message.partition, event.message.offset)]}

    def batched(topic: faust.TopicT, name: str, ingest: Any) -> None:
        """An agent that stores its topic's events in batches, acking each batch once every event is stored or dead-lettered."""

        async def store(events: list[EventT]) -> None:
            await reference_loaded()
            await ingest(events)

        async def agent(stream: faust.StreamT) -> None:
            async with EventBatcher(stream, metrics.timed_batch(name, store), size=w.batch_size, seconds=w.batch_seconds, name=name) as batcher:
                async for event in stream.events():
                    await batcher.add(event)

        app.agent(topic, name=name)(agent)

    def now() -> datetime:
        return datetime.now(UTC)

    usage_ingest = Ingest(
        decode=codec_for(InferenceUsage).decode, check=lambda u: usage_problem(u, now(), times),
        prepare=usage_rows, begin=books,
        tables=(("usage_events", USAGE_COLUMNS), ("ledger", LEDGER_COLUMNS)), sink=sink,
        refuse=DeadLetters(sender, settings.topics.dead_letter),
    )
    samples_ingest = Ingest(
        decode=codec_for(GpuSample).decode, check=lambda s: sample_problem(s, now(), times), prepare=sample_rows,
        tables=(("gpu_samples", SAMPLE_COLUMNS),), sink=sink,
        refuse=DeadLetters(sender, settings.topics.dead_letter),
    )
    batched(usage_topic, "usage", usage_ingest)
    batched(samples_topic, "samples", samples_ingest)

    allocator = GpuAllocator(
        client=connect(settings.clickhouse), sink=sink, database=settings.clickhouse.database,
        window_seconds=w.gpu_window_seconds, restate_hours=w.restate_hours, owners=lookup, prices=price_book,
        unassigned=w.unassigned_org, idle_policy=w.idle_policy,
        label_keys=LabelKeys.of(w),
    )

    @app.timer(w.allocate_every_seconds, on_leader=True, name="allocate")
    async def allocate() -> None:
        try:
            await reference_loaded()
            with metrics.timed(metrics.PASS_SECONDS, metrics.PASS_FAILURES, "allocate"):
                await allocator.run_once()
        except Exception:  # a failed pass is retried on the next tick; its inputs are still in ClickHouse
            log.exception("gpu allocation pass failed")

    evaluator = BudgetEvaluator(
        client=connect(settings.clickhouse), database=settings.clickhouse.database, budgets=budgets.values,
        publish=AckedSender(settings.kafka).send_all,
        topics=Topics(alerts=settings.topics.budget_alerts, status=settings.topics.budget_status), settings=settings.budgets,
    )

    @app.timer(settings.budgets.evaluate_every_seconds, on_leader=True, name="budgets")
    async def evaluate_budgets() -> None:
        try:
            await reference_loaded()
            with metrics.timed(metrics.PASS_SECONDS, metrics.PASS_FAILURES, "budgets"):
                await evaluator.run_once()
        except Exception:  # retried on the next tick; ledger and raised alerts are in ClickHouse
            log.exception("budget evaluation failed")

    rollup_client = connect(settings.clickhouse)

    @app.timer(w.rollup_every_seconds, on_leader=True, name="rollups")
    async def maintain_rollups() -> None:
        try:
            with metrics.timed(metrics.PASS_SECONDS, metrics.PASS_FAILURES, "rollups"):
                await asyncio.to_thread(rollups.maintain, rollup_client, settings.clickhouse.database)
        except Exception:  # the next pass starts from the same watermark, so nothing is lost
            log.exception("rollup pass failed")

    return app


def run_worker(settings: Settings, health: metrics.WorkerHealth | None = None) -> None:
    """Run the worker until SIGTERM/SIGINT (``gpuledger worker``; the CLI serves ``/metrics`` and ``/healthz`` first)."""
    from gpuledger.kafka import ensure_topics

    asyncio.run(ensure_topics(settings))
    app = create_app(settings, health)
    app.conf.datadir.mkdir(parents=True, exist_ok=True)
    worker = GracefulWorker(app, loglevel=settings.log_level.upper(), quiet=True, redirect_stdouts=False)
    worker.grace = settings.worker.shutdown_grace_seconds
    worker.execute_from_commandline()
