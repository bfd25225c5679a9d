"""A record the broker refuses fails the command that sent it, with what was refused and exit code 1.

aiokafka's ``flush()`` does not raise per-record errors: before the acknowledged publish, `orgs import` printed
"published" over a record Kafka had refused. Here the real broker refuses it: the org directory's compacted
topic is created with a small ``max.message.bytes`` and one row's record (incompressible) is larger.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from gpuledger.kafka import client_options, read_compacted, table_topic
from gpuledger.settings import Settings
from schemas.keys import org_key
from tests.support import ROOT, settings_env

pytestmark = pytest.mark.engines


async def _small_topic(settings: Settings, topic: str, max_bytes: int) -> None:
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact", "max.message.bytes": str(max_bytes)})])
    finally:
        await admin.close()


def test_a_record_kafka_refuses_fails_the_import_with_exit_1(stack_settings: Settings, tmp_path: Path) -> None:
    name = f"acked{uuid.uuid4().hex[:8]}"
    settings = stack_settings.model_copy(update={"topics": stack_settings.topics.model_copy(update={"orgs": f"gpl-{name}-orgs-changelog"})})
    topic = table_topic(settings, "orgs")
    asyncio.run(_small_topic(settings, topic, 2048))  # ensure_topics leaves an existing topic as it is
    orgs = tmp_path / "orgs.yaml"
    orgs.write_text(
        "orgs:\n"
        "  - {kind: api_key, key: small, org: acme}\n"
        f"  - {{kind: api_key, key: huge, org: acme, cost_centre: '{secrets.token_urlsafe(6000)}'}}\n"
    )

    env = {**os.environ, **settings_env(settings, tmp_path / "data")}
    env.pop("GPULEDGER_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "gpuledger.commands.cli", "orgs", "import", str(orgs)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )

    out = " ".join((done.stdout + done.stderr).split())  # rich wraps long lines
    assert done.returncode == 1, out
    found = re.search(rf"Kafka refused ([12]) of 2 record\(s\) for topic '{topic}'; first: key '[^']+': MessageSizeTooLargeError", out)
    assert found, out
    assert "Traceback" not in out and "published" not in out, out
    # what the message says was acknowledged is what the topic holds (the small record shares the big one's batch: refused too)
    refused = int(found[1])
    assert f"{2 - refused} acknowledged" in out
    held = set(asyncio.run(read_compacted(settings.kafka, topic)))
    assert held == ({org_key("api_key", "small")} if refused == 1 else set())
