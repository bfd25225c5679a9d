"""Topic creation (``gpuledger.kafka.ensure_topics``): the worker creates no topic itself, so every one, Faust's leader
topic included, comes from here, and what Kafka refuses is raised rather than reported as created."""

from __future__ import annotations

import asyncio
import time
import uuid

import faust
import pytest
from aiokafka.errors import InvalidReplicationFactorError, KafkaConnectionError

from gpuledger.kafka import declared_topics, ensure_topics, leader_topic
from gpuledger.retry import Backoff
from gpuledger.settings import Settings


def _renamed(settings: Settings, replication_factor: int) -> Settings:
    """Fresh topic names (prefix ``kt<hex>``) so nothing exists yet."""
    prefix = f"kt{uuid.uuid4().hex[:8]}"
    names = {field: f"{prefix}.{field}" for field in ("gpu_samples", "inference_usage", "outcomes", "dead_letter", "budget_alerts")}
    names |= {field: f"{prefix}.{field}" for field in ("budget_status", "orgs", "prices", "equivalents", "budgets")}
    return settings.model_copy(
        update={
            "topics": settings.topics.model_copy(update={**names, "replication_factor": replication_factor}),
            "worker": settings.worker.model_copy(update={"app_id": prefix}),
        }
    )


def test_the_leader_topic_is_the_one_faust_elects_its_leader_on() -> None:
    """The worker runs with ``topic_allow_declare=False``: a name that drifted from Faust's would leave it leaderless."""
    settings = Settings().model_copy(update={"worker": Settings().worker.model_copy(update={"app_id": "gpl-leader-name"})})
    app = faust.App(settings.worker.app_id, topic_allow_declare=False)
    assert leader_topic(settings) == app._leader_assignor._leader_topic_name  # noqa: SLF001 - Faust's naming is what we pin
    assert leader_topic(settings) in {topic.name for topic in declared_topics(settings)}


@pytest.mark.engines
def test_ensure_topics_creates_the_leader_topic_and_raises_what_kafka_refuses(stack_settings: Settings) -> None:
    settings = _renamed(stack_settings, replication_factor=1)
    created = asyncio.run(ensure_topics(settings))
    assert leader_topic(settings) in created and len(created) == len(declared_topics(settings))
    assert asyncio.run(ensure_topics(settings)) == []
    # One broker cannot hold three replicas: Kafka answers with a per-topic error, which aiokafka's admin returns unraised.
    refused = _renamed(stack_settings, replication_factor=3)
    with pytest.raises(InvalidReplicationFactorError, match=r"Kafka refused to create topic 'kt[0-9a-f]+\.\w+'"):
        asyncio.run(ensure_topics(refused, Backoff(first_s=0.01, max_s=0.01, attempts=3)))


def test_ensure_topics_gives_up_on_an_unreachable_kafka_after_its_attempts() -> None:
    """No broker at all: transient, so retried, then raised (the worker exits with it rather than hanging)."""
    nowhere = Settings().model_copy(update={"kafka": Settings().kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:9"})})
    started = time.monotonic()
    with pytest.raises(KafkaConnectionError):
        asyncio.run(ensure_topics(nowhere, Backoff(first_s=0.01, max_s=0.02, attempts=3)))
    assert time.monotonic() - started < 10
