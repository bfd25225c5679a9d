"""Helpers for tests that run the real worker against the real engines."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from gpuledger.clickhouse import connect
from gpuledger.kafka import client_options, ensure_topics
from gpuledger.migrate import apply_migrations
from gpuledger.settings import Settings
from schemas import InferenceUsage, LedgerLine, Price
from schemas.keys import REFERENCE_TABLES
from streams.store.tables import USAGE_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "gpuledger" / "data" / "demo"
T = TypeVar("T")


def isolated(base: Settings, name: str, partitions: int = 2) -> Settings:
    """Settings with their own topics, consumer group and database, so tests never see each other's data."""
    settings = base.model_copy(
        update={
            "topics": base.topics.model_copy(
                update={
                    "gpu_samples": f"{name}.samples",
                    "inference_usage": f"{name}.usage",
                    "dead_letter": f"{name}.dlq",
                    "budget_alerts": f"{name}.alerts",
                    "budget_status": f"{name}.status",
                    "partitions": partitions,
                    "outcomes": f"{name}.outcomes",
                    **{table: f"gpl-{name}-{table}-changelog" for table in REFERENCE_TABLES},
                }
            ),
            "clickhouse": base.clickhouse.model_copy(update={"database": f"t_{name}"}),
            "worker": base.worker.model_copy(
                update={"app_id": f"gpl-{name}", "allocate_every_seconds": 1.0, "metrics_port": 0, "rollup_every_seconds": 1.0}
            ),
        }
    )
    asyncio.run(ensure_topics(settings))
    apply_migrations(settings)
    return settings


def settings_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    """The environment that makes a `gpuledger` subprocess use ``settings``."""
    return {
        "GPULEDGER_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "GPULEDGER_CLICKHOUSE__URL": settings.clickhouse.url,
        "GPULEDGER_CLICKHOUSE__DATABASE": settings.clickhouse.database,
        "GPULEDGER_TOPICS__GPU_SAMPLES": settings.topics.gpu_samples,
        "GPULEDGER_TOPICS__INFERENCE_USAGE": settings.topics.inference_usage,
        "GPULEDGER_TOPICS__DEAD_LETTER": settings.topics.dead_letter,
        "GPULEDGER_TOPICS__BUDGET_ALERTS": settings.topics.budget_alerts,
        "GPULEDGER_TOPICS__BUDGET_STATUS": settings.topics.budget_status,
        "GPULEDGER_TOPICS__OUTCOMES": settings.topics.outcomes,
        "GPULEDGER_TOPICS__PARTITIONS": str(settings.topics.partitions),
        **{f"GPULEDGER_TOPICS__{table.upper()}": getattr(settings.topics, table) for table in REFERENCE_TABLES},
        "GPULEDGER_TOPICS__REPLICATION_FACTOR": str(settings.topics.replication_factor),
        **({"GPULEDGER_CLICKHOUSE__CLUSTER": settings.clickhouse.cluster} if settings.clickhouse.cluster else {}),
        "GPULEDGER_WORKER__APP_ID": settings.worker.app_id,
        "GPULEDGER_WORKER__ALLOCATE_EVERY_SECONDS": str(settings.worker.allocate_every_seconds),
        "GPULEDGER_WORKER__RESTATE_HOURS": str(settings.worker.restate_hours),
        "GPULEDGER_WORKER__IDLE_POLICY": settings.worker.idle_policy,
        "GPULEDGER_WORKER__METRICS_PORT": str(settings.worker.metrics_port),
        "GPULEDGER_WORKER__SHUTDOWN_GRACE_SECONDS": str(settings.worker.shutdown_grace_seconds),
        "GPULEDGER_WORKER__ROLLUP_EVERY_SECONDS": str(settings.worker.rollup_every_seconds),
        "GPULEDGER_STACK__DATA_DIR": str(data_dir),
        "GPULEDGER_WORKER__DATA_DIR": str(data_dir / "worker"),
        "GPULEDGER_LOG_FORMAT": "json",
    }


class WorkerProcess:
    """`gpuledger worker` as a real OS process, so tests can SIGKILL it."""

    def __init__(self, settings: Settings, data_dir: Path) -> None:
        self.settings, self.data_dir = settings, data_dir
        self.log = data_dir / "worker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **settings_env(self.settings, self.data_dir)}
        env.pop("GPULEDGER_CONFIG", None)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gpuledger.commands.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def assert_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"worker {self.data_dir.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        """The end of the worker's log, without aiokafka's repeated "Unable connect" lines (a dead broker floods the log)."""
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        kept = [line for line in lines if "Unable connect" not in line]
        return f"({len(lines) - len(kept)} 'Unable connect' lines left out)\n" + "\n".join(kept)[-chars:]


def wait_until(check: Callable[[], T], timeout: float, what: str, worker: WorkerProcess | None = None) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if worker:
            worker.assert_alive()
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}")


def org_totals(settings: Settings) -> dict[str, Decimal]:
    rows = connect(settings.clickhouse).query("SELECT org, sum(cost) FROM ledger FINAL GROUP BY org").result_rows
    return {org: Decimal(total) for org, total in rows}


def expected_totals(truth: dict[str, Any]) -> dict[str, Decimal]:
    return {org: Decimal(v["total"]) for org, v in truth["orgs"].items()}


async def consumer_lag(settings: Settings, topics: list[str]) -> int:
    """Messages in ``topics`` not yet committed by the worker's consumer group."""
    return sum((await partition_lag(settings, topics)).values())


async def partition_lag(settings: Settings, topics: list[str]) -> dict[str, int]:
    """Messages not yet committed by the worker's consumer group, per ``topic/partition`` that has any."""
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    consumer = AIOKafkaConsumer(**client_options(settings.kafka))
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(settings.worker.app_id)
        parts = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or await _partitions(consumer, t))]
        ends = await consumer.end_offsets(parts)
        lag = {
            f"{tp.topic}/{tp.partition}": end - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0)
            for tp, end in ends.items()
        }
        return {where: n for where, n in lag.items() if n}
    finally:
        await consumer.stop()
        await admin.close()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka exposes no public refresh
    return consumer.partitions_for_topic(topic) or set()


def caught_up(settings: Settings) -> bool:
    return asyncio.run(consumer_lag(settings, [settings.topics.inference_usage, settings.topics.gpu_samples])) == 0


@contextmanager
def demo_worker(base: Settings, name: str, data_dir: Path) -> Iterator[tuple[Settings, WorkerProcess]]:
    """An isolated namespace with the demo's org directory and prices loaded, and a running worker process."""
    from gpuledger.commands.reference_import import import_orgs, import_prices

    settings = isolated(base, name)
    asyncio.run(import_orgs(settings, DEMO / "orgs.yaml"))
    asyncio.run(import_prices(settings, DEMO / "prices.yaml"))
    worker = WorkerProcess(settings, data_dir).start()
    try:
        yield settings, worker
    finally:
        worker.stop()


def scraped(url: str, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` of the real ``/metrics`` endpoint at ``url`` (0 when it has not been counted yet)."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def usage_event_row(**fields: object) -> list[object]:
    """One ``usage_events`` row in ``USAGE_COLUMNS`` order: an ok, unrouted API request with nothing priced, changed by
    ``fields``; ``event_id``, ``request_start`` and ``event_time`` have no default, so each row says when it happened.

    Tests that seed the ledger's tables directly share this so that a new column needs one default here, not one per file."""
    unknown = set(fields) - set(USAGE_COLUMNS)
    if unknown:
        raise TypeError(f"usage_event_row: no usage_events column named {sorted(unknown)}")
    values: dict[str, object] = {
        "key_id": "k",
        "model": "m",
        "backend": "openai",
        "deployment": "",
        "endpoint": "chat.completions",
        "node": "",
        "gpu_uuids": [],
        "prompt_tokens": 0,
        "cached_prompt_tokens": 0,
        "completion_tokens": 0,
        "usage_estimated": False,
        "ttft_ms": None,
        "latency_ms": 1.0,
        "status": "ok",
        "org": "",
        "team": "",
        "project": "p",
        "cost_centre": "",
        "priced_as": "api",
        "price_id": "",
        "cost": Decimal(0),
        "api_equivalent_cost": None,
        "api_equivalent_price_id": "",
        "requested_model": "",
        "route_rule": "",
        "baseline_model": "",
        "client_request_id": "",
        "trace_id": "",
        "session_id": "",
        "source_partition": 0,
        "source_offset": 0,
        "baseline_cost": None,
        "baseline_price_id": "",
        **fields,
    }
    return [values[c] for c in USAGE_COLUMNS]


def api_request(when: datetime, prompt: int, completion: int, **changes: Any) -> InferenceUsage:
    """An ok ``gpt-4o-mini`` request through OpenAI that started and ended at ``when``, changed by ``changes``: the
    pricing tests vary only the tokens, the time and the baseline, so the rest is said once here."""
    fields: dict[str, Any] = {
        "event_id": "e",
        "request_start": when,
        "request_end": when,
        "key_id": "k",
        "model": "gpt-4o-mini",
        "backend": "openai",
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "latency_ms": 1.0,
        "status": "ok",
    }
    return InferenceUsage(**{**fields, **changes})


def token_price(
    sku: str, effective_from: datetime, per_mtok: tuple[str | Decimal, str | Decimal], cached: str | Decimal | None = None
) -> Price:
    """A USD per-token price version: ``per_mtok`` is (input, output) per million tokens; ``cached`` the cached-input
    price, None where the SKU has none (cached tokens then pay the input price)."""
    input_price, output_price = per_mtok
    return Price(
        sku=sku,
        kind="token",
        currency="USD",
        effective_from=effective_from,
        input_per_mtok=Decimal(input_price),
        cached_input_per_mtok=None if cached is None else Decimal(cached),
        output_per_mtok=Decimal(output_price),
    )


def ledger_line(line_id: str, kind: str, when: datetime, cost: str, **changes: Any) -> LedgerLine:
    """A USD ledger line of ``cost`` at ``when``, changed by ``changes``; the fields a test does not name are blank
    (project ``p``, model ``m``, no GPU seconds), so each test lists only what its figures depend on."""
    fields: dict[str, Any] = {
        "line_id": line_id,
        "kind": kind,
        "event_time": when,
        "org": "",
        "team": "",
        "project": "p",
        "cost_centre": "",
        "model": "m",
        "price_id": "",
        "gpu_seconds": Decimal(0),
        "cost": Decimal(cost),
        "currency": "USD",
    }
    return LedgerLine(**{**fields, **changes})
