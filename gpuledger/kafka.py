"""Kafka connections built from settings, and topic creation owned by gpuledger.

Brokers run with ``auto.create.topics.enable=false`` so a typo fails loudly; every
topic the project uses is declared here with its partitions and cleanup policy.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from gpuledger.settings import KafkaSettings, Settings


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for bootstrap, TLS and SASL."""
    options: dict[str, Any] = {"bootstrap_servers": kafka.bootstrap_servers, "security_protocol": kafka.security_protocol}
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
        if kafka.ssl_certfile:
            context.load_cert_chain(str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None)
        options["ssl_context"] = context
    if kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
    return options


def new_producer(kafka: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent, acks=all, compressed producer: nothing lost, nothing duplicated by retries."""
    options = {
        **client_options(kafka),
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": "lz4",
        "linger_ms": 20,
        "max_batch_size": 256 * 1024,
    }
    return AIOKafkaProducer(**{**options, **overrides})


def table_topic(settings: Settings, table: str) -> str:
    """Faust names a table's changelog ``<app_id>-<table>-changelog``; the directory and price list live there."""
    return f"{settings.worker.app_id}-{table}-changelog"


def declared_topics(settings: Settings) -> list[NewTopic]:
    """Every topic gpuledger reads or writes, with its layout."""
    t = settings.topics
    compact = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
    return [
        NewTopic(t.gpu_samples, t.partitions, t.replication_factor),
        NewTopic(t.inference_usage, t.partitions, t.replication_factor),
        NewTopic(t.dead_letter, 1, t.replication_factor, topic_configs={"retention.ms": str(30 * 24 * 3600 * 1000)}),
        NewTopic(table_topic(settings, "orgs"), 1, t.replication_factor, topic_configs=compact),
        NewTopic(table_topic(settings, "prices"), 1, t.replication_factor, topic_configs=compact),
    ]


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics (idempotent); returns the names created now."""
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [topic for topic in declared_topics(settings) if topic.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another process created them between our list and create
        return [topic.name for topic in missing]
    finally:
        await admin.close()
