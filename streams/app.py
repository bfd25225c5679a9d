"""The Faust worker: usage and GPU samples in, enriched rows and ledger lines out to ClickHouse.

Data path (after OpenMeter: Kafka -> sink worker -> ClickHouse):
- ``usage`` agent: decode InferenceUsage, join the org directory and price list,
  store the enriched event and, for API models, its cost line;
- ``samples`` agent: decode GpuSample, store it with its node's owner;
- ``allocate`` timer (leader only): re-derive GPU window lines from stored rows;
- ``budgets`` timer (leader only): measure every budget on the ledger, raise alerts,
  publish each budget's standing (see ``streams.budgets.evaluator``).
Undecodable messages go to the dead-letter topic with the reason and their origin;
offsets are acknowledged only after a batch is stored (at-least-once), and storage
is idempotent, so replays never change totals.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import structlog
from faust.types import EventT

from gpuledger.clickhouse import connect
from gpuledger.kafka import AckedSender, client_options
from gpuledger.settings import Settings
from schemas import Codec, DecodeError, GpuSample, InferenceUsage, OrgDirectory, codec_for
from streams import metrics, reference
from streams.allocator import GpuAllocator
from streams.batching import EventBatcher
from streams.budgets.evaluator import BudgetEvaluator, Topics
from streams.enrich import price_usage, resolve_payer
from streams.pricing import PriceBook
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


def create_app(settings: Settings) -> faust.App:
    """Build the worker app; everything it needs comes from ``settings``."""
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
    )
    orgs, prices, budgets = reference.org_table(settings), reference.price_table(settings), reference.budget_table(settings)
    tables = (orgs, prices, budgets)
    usage_topic = app.topic(settings.topics.inference_usage, value_serializer="raw", key_serializer="raw")
    samples_topic = app.topic(settings.topics.gpu_samples, value_serializer="raw", key_serializer="raw")
    dead_letter = app.topic(settings.topics.dead_letter, value_serializer="raw", key_serializer="raw")

    client = metrics.CountingClient(connect(settings.clickhouse))
    sink = ClickHouseSink(client, settings.clickhouse.database)
    usage_codec = codec_for(InferenceUsage)
    sample_codec = codec_for(GpuSample)

    @app.task
    async def follow_reference() -> None:
        await asyncio.gather(*(table.view.run() for table in tables))

    @app.task
    async def serve_metrics() -> None:
        health = metrics.WorkerHealth({table.view.topic: table.view for table in tables})
        if w.metrics_port and metrics.serve_http(w.metrics_host, w.metrics_port, health):
            await metrics.measure_lag(settings.kafka, w.app_id, [settings.topics.inference_usage, settings.topics.gpu_samples], health)

    async def reference_loaded() -> None:
        """Nothing is joined or evaluated against a half-read directory, price list or budget set."""
        for table in tables:
            await table.view.caught_up.wait()

    def lookup(kind: str, key: str) -> OrgDirectory | None:
        return orgs.get(reference.org_key(kind, key))

    def price_book() -> PriceBook:
        return PriceBook(prices.values())

    async def to_dead_letter(event: EventT, reason: str) -> None:
        message = event.message
        log.warning("message sent to dead-letter topic", topic=message.topic, partition=message.partition, offset=message.offset, reason=reason)
        metrics.DEAD_LETTERS.labels(message.topic).inc()
        await dead_letter.send(
            key=message.key, value=message.value,
            headers={
                "x-reason": reason.encode(), "x-origin-topic": message.topic.encode(),
                "x-origin-partition": str(message.partition).encode(), "x-origin-offset": str(message.offset).encode(),
            },
        )

    async def decoded(events: list[EventT], codec: Codec[Any]) -> list[tuple[EventT, Any]]:
        """The batch's records; undecodable messages go to the dead-letter topic instead."""
        good = []
        for event in events:
            try:
                good.append((event, codec.decode(event.message.value)))
            except DecodeError as exc:
                await to_dead_letter(event, exc.reason)
        return good

    async def store_usage(events: list[EventT]) -> None:
        await reference_loaded()
        book = price_book()
        rows, lines = [], []
        for event, record in await decoded(events, usage_codec):
            priced = price_usage(record, resolve_payer(record, lookup, w.unassigned_org), book)
            rows.append(usage_row(priced, event.message.partition, event.message.offset))
            if priced.line is not None:
                lines.append(priced.line)
        version = version_now()
        await sink.insert("usage_events", USAGE_COLUMNS, rows)
        await sink.insert("ledger", LEDGER_COLUMNS, [ledger_row(line, version) for line in lines])

    async def store_samples(events: list[EventT]) -> None:
        await reference_loaded()
        rows = []
        for event, record in await decoded(events, sample_codec):
            owner = lookup("node", record.node)
            rows.append(sample_row(record, owner.org if owner else w.unassigned_org, event.message.partition, event.message.offset))
        await sink.insert("gpu_samples", SAMPLE_COLUMNS, rows)

    def batched(topic: faust.TopicT, name: str, store: Any) -> None:
        """An agent that stores its topic's events in batches, acking each batch once stored."""

        async def agent(stream: faust.StreamT) -> None:
            async with EventBatcher(stream, metrics.timed_batch(name, store), size=w.batch_size, seconds=w.batch_seconds) as batcher:
                async for event in stream.events():
                    await batcher.add(event)

        app.agent(topic, name=name)(agent)

    batched(usage_topic, "usage", store_usage)
    batched(samples_topic, "samples", store_samples)

    allocator = GpuAllocator(
        client=connect(settings.clickhouse), sink=sink, database=settings.clickhouse.database,
        window_seconds=w.gpu_window_seconds, restate_hours=w.restate_hours, owners=lookup, prices=price_book,
        unassigned=w.unassigned_org,
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

    return app


def run_worker(settings: Settings) -> None:
    """Run the worker until SIGTERM/SIGINT (``gpuledger worker``)."""
    from gpuledger.kafka import ensure_topics

    asyncio.run(ensure_topics(settings))
    app = create_app(settings)
    app.conf.datadir.mkdir(parents=True, exist_ok=True)
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
