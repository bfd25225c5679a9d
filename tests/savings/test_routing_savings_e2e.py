"""Routing savings end to end: the gateway in front of fake backends, the real Kafka, the worker process and ClickHouse.

``FakeVllm`` stands in for the OpenAI-compatible APIs (no paid API is reachable here): it answers with exactly
``max_tokens`` completion tokens and counts prompt words as tokens, so every figure below is known by hand.
The ground truth is computed in this file from the README's rule (tokens x per-million price), never by the
worker's pricing code.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from gpuledger.clickhouse import connect
from gpuledger.commands.reference_import import import_orgs, import_prices
from gpuledger.kafka import new_producer
from gpuledger.sections.gateway import GatewayConfig
from gpuledger.settings import Settings
from inference.gateway.app import create_app
from tests.inference.fake_vllm import FakeVllm
from tests.inference.servers import serve
from tests.inference.usage_tap import UsageTap
from tests.support import (
    ROOT,
    WorkerProcess,
    consumer_lag,
    isolated,
    settings_env,
    wait_until,
)

pytestmark = pytest.mark.engines
RUN = uuid.uuid4().hex[:8]
KEY_ID, SECRET = f"key-savings-{RUN}", f"sk-savings-{RUN}"
# USD per million tokens (input, output), as in the price file below.
MINI, BIG, PREMIUM = (Decimal("0.15"), Decimal("0.60")), (Decimal("2.50"), Decimal("10.00")), (Decimal("3.00"), Decimal("15.00"))
SHORT, LONG, COMPLETION = 40, 300, 800  # prompt words (= tokens) and completion tokens of each request


def by_hand(prompt: int, completion: int, price: tuple[Decimal, Decimal]) -> Decimal:
    """README rule: input tokens x input price + output tokens x output price, per million."""
    return (prompt * price[0] + completion * price[1]) / 1_000_000


@pytest.fixture(scope="module")
def fleet(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str, FakeVllm, WorkerProcess]]:
    settings = isolated(stack_settings, "routing_savings")
    folder = tmp_path_factory.mktemp("savings")
    (folder / "orgs.yaml").write_text(f"orgs:\n  - {{kind: api_key, key: {KEY_ID}, org: acme, team: support, project: tickets}}\n")
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    (folder / "prices.yaml").write_text(
        "prices:\n"
        "  - {sku: gpt-4o-mini, kind: token, currency: USD, effective_from: '2026-01-01T00:00:00Z', input_per_mtok: '0.15', output_per_mtok: '0.60'}\n"
        # gpt-4o's older, dearer version: the baseline is priced at the version in force at each request's time
        "  - {sku: gpt-4o, kind: token, currency: USD, effective_from: '2026-01-01T00:00:00Z', input_per_mtok: '5.00', output_per_mtok: '20.00'}\n"
        f"  - {{sku: gpt-4o, kind: token, currency: USD, effective_from: '{hour_ago}', input_per_mtok: '2.50', output_per_mtok: '10.00'}}\n"
        "  - {sku: claude-sonnet-4, kind: token, currency: USD, effective_from: '2026-01-01T00:00:00Z', input_per_mtok: '3.00', output_per_mtok: '15.00'}\n"
    )
    asyncio.run(import_orgs(settings, folder / "orgs.yaml"))
    asyncio.run(import_prices(settings, folder / "prices.yaml"))
    small, large, premium = FakeVllm(), FakeVllm(), FakeVllm()
    with ExitStack() as stack:
        urls = {n: stack.enter_context(serve(f.app())) for n, f in (("small", small), ("large", large), ("premium", premium))}
        config = GatewayConfig.model_validate(
            {
                "backends": [{"name": n, "kind": "openai", "base_url": u + "/v1"} for n, u in urls.items()],
                "models": [
                    {
                        "name": "small",
                        "targets": [{"backend": "small", "model": "gpt-4o-mini"}, {"backend": "premium", "model": "claude-sonnet-4"}],
                    },
                    {"name": "large", "targets": [{"backend": "large", "model": "gpt-4o"}]},
                ],
                "aliases": [
                    {
                        "name": "auto",
                        "default": "small",
                        "baseline": "large",
                        "rules": [{"name": "long-prompt", "model": "large", "messages_chars_gt": 1000}],
                    }
                ],
                "keys": [{"id": KEY_ID, "sha256": hashlib.sha256(SECRET.encode()).hexdigest(), "org": "acme", "team": "support"}],
            }
        )
        url = stack.enter_context(serve(create_app(config, settings)))
        worker = WorkerProcess(settings, folder / "worker").start()
        stack.callback(worker.stop)
        yield settings, url, small, worker


def chat(words: int) -> dict[str, object]:
    """Long prompts are streamed (SSE): the route fields and the usage must come through both paths."""
    return {
        "model": "auto",
        "max_tokens": COMPLETION,
        "messages": [{"role": "user", "content": " ".join(["lorem"] * words)}],
        "stream": words == LONG,
    }


def figures(settings: Settings) -> dict[str, tuple[int, Decimal, Decimal, Decimal]]:
    rows = (
        connect(settings.clickhouse)
        .query(
            "SELECT route_rule, sum(requests), sum(actual_cost), sum(counterfactual_cost), sum(savings) FROM routing_savings_daily "
            "WHERE alias = 'auto' GROUP BY route_rule"
        )
        .result_rows
    )
    return {rule: (int(n), Decimal(a), Decimal(c), Decimal(s)) for rule, n, a, c, s in rows}


async def test_100_small_20_large_5_fallbacks_save_the_hand_computed_figure_and_a_replay_changes_nothing(
    fleet: tuple[Settings, str, FakeVllm, WorkerProcess], tmp_path: Path
) -> None:
    settings, url, small, worker = fleet
    tap = await UsageTap(settings).start()
    try:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {SECRET}"}, timeout=20) as client:

            async def send(words: int) -> None:
                response = await client.post("/v1/chat/completions", json=chat(words))
                assert response.status_code == 200, response.text

            for batch in [[SHORT] * 10] * 10 + [[LONG] * 10] * 2:
                await asyncio.gather(*(send(w) for w in batch))
            small.fail_status = 503  # the small model's own backend fails: the gateway falls back to its second target
            try:
                for _ in range(5):
                    await send(SHORT)
            finally:
                small.fail_status = None
        events = await tap.events(lambda e: e.key_id == KEY_ID, 125)
        raw = list(tap.raw)
    finally:
        await tap.stop()
    assert sorted({(e.requested_model, e.route_rule, e.model, e.baseline_model) for e in events}) == [
        ("auto", "default", "gpt-4o-mini", "gpt-4o"),
        ("auto", "fallback:1", "claude-sonnet-4", "gpt-4o"),
        ("auto", "long-prompt", "gpt-4o", "gpt-4o"),
    ]

    # Ground truth by hand: every request's baseline is gpt-4o at 2.50 / 10.00 (the version in force now).
    short_baseline = by_hand(SHORT, COMPLETION, BIG)  # 40 x 2.50 + 800 x 10.00 = 8,100 per million = 0.0081
    expected = {
        "default": (100, 100 * by_hand(SHORT, COMPLETION, MINI), 100 * short_baseline),  # 100 x 0.000486 vs 100 x 0.0081
        "long-prompt": (20, 20 * by_hand(LONG, COMPLETION, BIG), 20 * by_hand(LONG, COMPLETION, BIG)),  # escalated to the baseline: 0
        "fallback:1": (5, 5 * by_hand(SHORT, COMPLETION, PREMIUM), 5 * short_baseline),  # 5 x 0.01212 vs 5 x 0.0081: negative
    }
    want = {rule: (n, actual, baseline, baseline - actual) for rule, (n, actual, baseline) in expected.items()}

    def all_priced() -> dict[str, tuple[int, Decimal, Decimal, Decimal]] | None:
        found = figures(settings)
        return found if sum(v[0] for v in found.values()) == 125 else None

    got = wait_until(all_priced, 60, "125 priced requests", worker)
    assert got == want
    total = sum((v[3] for v in got.values()), Decimal(0))
    assert total == Decimal("0.7413")  # 0.7614 + 0 - 0.0201, computed on paper (README "Routing savings")
    assert total.quantize(Decimal("0.01")) == Decimal("0.74")

    # A replay (the same 125 events again, as a producer retry or a re-read would send them) changes nothing.
    async def replay() -> None:
        producer = new_producer(settings.kafka)
        await producer.start()
        try:
            for value in raw:
                await producer.send_and_wait(settings.topics.inference_usage, value=value)
        finally:
            await producer.stop()

    await replay()
    deadline = time.monotonic() + 60
    while await consumer_lag(settings, [settings.topics.inference_usage]) > 0:
        worker.assert_alive()
        assert time.monotonic() < deadline, "the worker did not consume the replay within 60 s"
        await asyncio.sleep(0.5)
    assert figures(settings) == want

    report = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gpuledger.commands.cli", "report", "--savings", "--by", "team", "--format", "json"],
        check=False,
        env={**os.environ, **settings_env(settings, tmp_path)},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert report.returncode == 0, report.stdout + report.stderr
    rows = {(r["group"], r["route_rule"]): r for r in json.loads(report.stdout)}
    assert Decimal(rows[("acme/support", "fallback:1")]["savings"]) == want["fallback:1"][3] == Decimal("-0.0201")
    assert (rows[("TOTAL", "")]["requests"], Decimal(rows[("TOTAL", "")]["savings"])) == ("125", Decimal("0.7413"))
