"""The notifier loop: consume ``BudgetAlert`` records, deliver each once, then commit its offset.

Guarantee, per alert:

* The Kafka offset is committed only after the alert is ``delivered`` or has
  ``failed`` permanently (4xx other than 408/429, or no route). Transient failures
  (429, 5xx, network) are retried for ``max_attempts``, then again after
  ``redelivery_pause_s``, forever, holding the partition: Slack being down delays
  alerts but never drops them.
* The sqlite3 ledger (``state``) records each ``alert_id`` as delivered before the
  offset is committed, so a replayed offset or a re-published alert is skipped.
* Each settled alert is also copied to ClickHouse ``budget_alert_deliveries`` (route,
  status, attempts, last HTTP status; never the URL), so ``budget_alert_history``
  shows raised, delivered and attempts. The copy is best effort: rows that ClickHouse
  refuses are kept and retried with the next alert, and a ClickHouse outage never holds
  back a Slack message (the sqlite ledger remains the delivery truth).
* Honest gap: if the process dies after Slack answered 200 but before the ledger
  write, the alert is posted a second time on restart. Slack webhooks have no
  idempotency key, so that window can be made small (it is: one local fsync) but
  not zero. The ledger is local: run one notifier per consumer group (or give the
  instances a shared ``state_dir``), or a rebalance could repost an alert.
* Weekly digests (``digest.DigestSender``) run beside the alert loop and go through the same ledger.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any

import httpx
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import CommitFailedError

from gpuledger.clickhouse import connect
from gpuledger.kafka import client_options, create_missing_topics
from gpuledger.sections.notifier import NotifierSettings
from gpuledger.settings import Settings
from schemas import BudgetAlert, DecodeError, codec_for
from streams.metrics import serve_http
from streams.notifier.digest import DigestSender
from streams.notifier.metrics import ATTEMPTS, DELIVERIES, IN_FLIGHT, ROUNDS_EXHAUSTED, WAITING, NotifierHealth
from streams.notifier.routing import route_for
from streams.notifier.slack import Outcome, RetryPolicy, json_payload, post_with_retry, slack_message
from streams.notifier.state import Delivery, DeliveryState
from streams.sink import version_now

log = structlog.get_logger("gpuledger.notifier")
DELIVERY_COLUMNS = ("alert_id", "route", "status", "attempts", "last_http_status", "detail", "finished_at", "version")


class History:
    """Copies settled deliveries into ClickHouse; connects lazily, keeps and retries what it could not write."""

    def __init__(self, settings: Settings) -> None:
        self._ch = settings.clickhouse
        self._client: Any = None
        self._backlog: list[list[Any]] = []

    async def record(self, d: Delivery) -> None:
        self._backlog.append(
            [
                d.alert_id,
                d.route,
                d.status,
                d.attempts,
                d.last_http_status,
                d.last_detail,
                datetime.fromisoformat(d.updated_at),
                version_now(),
            ]
        )
        try:
            if self._client is None:
                self._client = await asyncio.to_thread(connect, self._ch)
            await asyncio.to_thread(
                self._client.insert, f"{self._ch.database}.budget_alert_deliveries", self._backlog, column_names=list(DELIVERY_COLUMNS)
            )
            self._backlog = []
        except Exception as exc:  # ClickHouse down or not migrated: the alert still counts as delivered
            log.warning(
                "alert history not written to ClickHouse yet; will retry with the next alert",
                alert_id=d.alert_id,
                backlog=len(self._backlog),
                error=str(exc)[:200],
            )


class Stopped(Exception):
    """The stop event fired before the current alert reached a final state; its offset stays uncommitted."""


async def ensure_alerts_topic(settings: Settings) -> bool:
    """Create the alerts topic (``topics.budget_alerts``, one partition as the worker declares it) if missing; True when created now."""
    return bool(
        await create_missing_topics(settings.kafka, [NewTopic(settings.topics.budget_alerts, 1, settings.topics.replication_factor)])
    )


async def wait_or_stop(stop_event: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop_event`` fires first; True when it fired."""
    if stop_event.is_set():
        return True
    try:
        await asyncio.wait_for(stop_event.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


class Notifier:
    """Delivers one alert at a time against the ledger; ``run_notifier`` feeds it from Kafka."""

    def __init__(
        self,
        ns: NotifierSettings,
        state: DeliveryState,
        client: httpx.AsyncClient,
        stop_event: asyncio.Event,
        history: History | None = None,
        health: NotifierHealth | None = None,
    ) -> None:
        self.ns = ns
        self.state = state
        self.client = client
        self.stop_event = stop_event
        self.history = history
        self.health = health if health is not None else NotifierHealth()  # run_notifier's serves /healthz
        self.policy = RetryPolicy(ns.max_attempts, ns.backoff_base_s, ns.backoff_max_s, ns.max_retry_after_s)

    async def deliver(self, alert: BudgetAlert) -> str:
        """Take ``alert`` to a final state; returns ``delivered``, ``failed`` or ``duplicate``. Raises ``Stopped``."""
        IN_FLIGHT.set(1)
        self.health.delivering = True
        try:
            outcome = await self._deliver(alert)
        finally:
            IN_FLIGHT.set(0)
            self.health.delivering = False
        DELIVERIES.labels(outcome).inc()
        return outcome

    async def _deliver(self, alert: BudgetAlert) -> str:
        bound = log.bind(alert_id=alert.alert_id, scope=alert.scope, kind=alert.kind)
        if self.state.is_final(alert.alert_id):
            bound.info("alert already handled, skipped")
            return "duplicate"
        target = route_for(alert.scope, self.ns)
        if target is None:
            self.state.finish(alert.alert_id, "failed", "-", "no route and no default target")
            await self._record(alert.alert_id)
            bound.error("no route for alert; recorded as failed")
            return "failed"
        payload = slack_message(alert) if target.format == "slack" else json_payload(alert)
        self.state.begin(alert.alert_id, target.name)
        while True:
            outcome: Outcome = await post_with_retry(
                self.client,
                target.url.get_secret_value(),
                payload,
                self.policy,
                sleep=lambda s: wait_or_stop(self.stop_event, s),
                on_attempt=lambda status, detail: self._attempted(alert.alert_id, status, detail),
            )
            if outcome.status in ("delivered", "failed"):
                self.state.finish(alert.alert_id, outcome.status, target.name, outcome.detail)
                await self._record(alert.alert_id)
                level = bound.info if outcome.status == "delivered" else bound.error
                level(
                    f"alert {outcome.status}",
                    route=target.name,
                    attempts=outcome.attempts,
                    http_status=outcome.http_status,
                    detail=outcome.detail,
                )
                return outcome.status
            if outcome.status == "interrupted":
                raise Stopped(alert.alert_id)
            ROUNDS_EXHAUSTED.inc()
            bound.error(
                "delivery attempts exhausted; retrying later",
                route=target.name,
                attempts=outcome.attempts,
                http_status=outcome.http_status,
                pause_s=self.ns.redelivery_pause_s,
            )
            if await wait_or_stop(self.stop_event, self.ns.redelivery_pause_s):
                raise Stopped(alert.alert_id)

    def _attempted(self, alert_id: str, status: int | None, detail: str) -> None:
        ATTEMPTS.labels(str(status) if status is not None else "network").inc()
        self.state.attempt(alert_id, status, detail)

    async def _record(self, alert_id: str) -> None:
        """Copy the settled delivery into ClickHouse's alert history."""
        d = self.state.get(alert_id)
        if self.history is not None and d is not None:
            await self.history.record(d)


async def _commit(consumer: AIOKafkaConsumer, message: ConsumerRecord) -> None:
    tp = TopicPartition(message.topic, message.partition)
    WAITING.labels(str(message.partition)).set(max(0, (consumer.highwater(tp) or 0) - message.offset - 1))
    try:
        await consumer.commit({tp: message.offset + 1})
    except CommitFailedError as exc:  # partition moved in a rebalance; the ledger skips it on redelivery
        log.warning("offset commit failed", topic=message.topic, partition=message.partition, offset=message.offset, error=str(exc))


async def run_notifier(
    settings: Settings,
    notifier_settings: NotifierSettings,
    stop_event: asyncio.Event,
    *,
    client: httpx.AsyncClient | None = None,
) -> None:
    """Run until ``stop_event`` is set (or the task is cancelled); safe to kill at any point."""
    ns = notifier_settings
    for noisy in ("httpx", "httpcore"):  # httpx logs every request URL at INFO: webhook URLs are secrets
        logging.getLogger(noisy).setLevel(logging.WARNING)
    await ensure_alerts_topic(settings)
    state = DeliveryState(ns.state_file)
    own_client = client is None
    http = client or httpx.AsyncClient(timeout=ns.request_timeout_s, follow_redirects=False)
    consumer = AIOKafkaConsumer(
        settings.topics.budget_alerts,
        **client_options(settings.kafka),
        group_id=ns.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    codec = codec_for(BudgetAlert)
    history = History(settings) if ns.record_history else None
    health = NotifierHealth()
    notifier = Notifier(ns, state, http, stop_event, history, health)
    await consumer.start()
    server = serve_http(ns.metrics_host, ns.metrics_port, health) if ns.metrics_port else None
    digests = (
        asyncio.create_task(DigestSender(settings, ns, state, http, lambda s: wait_or_stop(stop_event, s)).run()) if ns.digests else None
    )
    log.info(
        "notifier started",
        topic=settings.topics.budget_alerts,
        group=ns.group_id,
        routes=[r.name for r in ns.routes],
        default_route=ns.default.name if ns.default else None,
    )
    try:
        while not stop_event.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=100)
            health.last_poll = time.time()
            for messages in batches.values():
                for message in messages:
                    try:
                        alert = codec.decode(message.value)
                    except DecodeError as exc:
                        log.error(
                            "undecodable alert skipped",
                            topic=message.topic,
                            partition=message.partition,
                            offset=message.offset,
                            reason=exc.reason,
                        )
                    else:
                        try:
                            await notifier.deliver(alert)
                        except Stopped:
                            return
                    await _commit(consumer, message)
    finally:
        if digests is not None:
            digests.cancel()
            await asyncio.gather(digests, return_exceptions=True)
        if server is not None:
            server.shutdown()
            server.server_close()
        try:
            await consumer.stop()
        finally:
            state.close()
            if own_client:
                await http.aclose()
        log.info("notifier stopped")
