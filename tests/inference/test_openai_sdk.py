"""The official ``openai`` Python SDK against the gateway over real HTTP, publishing to the real Kafka.

The backend is ``fake_vllm.FakeVllm`` (no GPU or vLLM here), which reproduces vLLM's bodies and
SSE framing byte for byte; it can hold its body open after ``data: [DONE]`` as real servers do,
and add a provider's rate-limit headers. What is checked is what the SDK sees and does: which
statuses and headers reach it, whether it retries, and what the gateway meters.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest

from gpuledger.sections.gateway import GatewayConfig
from gpuledger.settings import Settings
from inference.gateway.app import Gateway
from schemas import BudgetStatus, codec_for
from tests.inference.fake_vllm import FakeVllm
from tests.inference.gateway_metrics import refusals
from tests.inference.servers import serve
from tests.inference.usage_tap import UsageTap

RUN = uuid.uuid4().hex[:8]
KEY_ID, SECRET = f"key-sdk-{RUN}", f"sk-sdk-{RUN}"
BLOCKED_KEY_ID, BLOCKED_SECRET = f"key-sdk-blocked-{RUN}", f"sk-sdk-blocked-{RUN}"


@dataclass
class Setup:
    backend: FakeVllm
    limited: FakeVllm
    gateway: Gateway
    url: str


@pytest.fixture(scope="module")
def setup(stack_settings: Settings) -> Iterator[Setup]:
    backend, limited = (
        FakeVllm(done_delay_s=0.25),
        FakeVllm(fail_status=429, extra_headers={"retry-after-ms": "1500", "x-ratelimit-reset-requests": "1.5s"}),
    )
    with ExitStack() as stack:
        urls = [stack.enter_context(serve(fake.app())) for fake in (backend, limited)]
        config = GatewayConfig.model_validate(
            {
                "backends": [
                    {"name": "vllm", "kind": "vllm", "base_url": urls[0] + "/v1"},
                    {"name": "ext", "kind": "openai", "base_url": urls[0] + "/v1"},
                    {"name": "busy", "kind": "openai", "base_url": urls[1] + "/v1"},
                ],
                "models": [
                    {"name": "llama", "targets": [{"backend": "vllm"}]},
                    {"name": "ext-model", "targets": [{"backend": "ext"}]},
                    {"name": "busy-model", "targets": [{"backend": "busy"}]},
                ],
                "keys": [
                    {"id": KEY_ID, "sha256": hashlib.sha256(SECRET.encode()).hexdigest(), "org": f"sdk-{RUN}"},
                    {"id": BLOCKED_KEY_ID, "sha256": hashlib.sha256(BLOCKED_SECRET.encode()).hexdigest(), "org": f"sdk-blocked-{RUN}"},
                ],
            }
        )
        gateway = Gateway(config, stack_settings)
        url = stack.enter_context(serve(gateway.app()))
        yield Setup(backend, limited, gateway, url)


def sdk(setup: Setup, secret: str = SECRET, **options: object) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=setup.url + "/v1", api_key=secret, **options)  # type: ignore[arg-type]


def since_now(key_id: str = KEY_ID) -> object:
    start = datetime.now(UTC) - timedelta(milliseconds=1)
    return lambda e: e.key_id == key_id and e.request_start >= start


@pytest.mark.parametrize("model", ["llama", "ext-model"])
async def test_streams_the_sdk_reads_to_done_are_ok_though_the_body_ends_later(setup: Setup, tap: UsageTap, model: str) -> None:
    """The SDK drains at most 100 ms after [DONE], then closes; the backend ends its body 250 ms later. Before the fix: client_disconnected."""
    match = since_now()
    client = sdk(setup)
    texts = []
    for i in range(6):
        usage_asked = {"stream_options": {"include_usage": True}} if i % 2 else {}
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "one two three"}], max_tokens=4, stream=True, **usage_asked
        )  # type: ignore[call-overload]
        texts.append("".join(c.choices[0].delta.content or "" for c in [chunk async for chunk in stream] if c.choices))
    await client.close()
    assert texts == ["tok0 tok1 tok2 tok3 "] * 6
    events = await tap.events(match, 6)
    assert [(e.status, e.prompt_tokens, e.completion_tokens, e.usage_estimated) for e in events] == [("ok", 3, 4, False)] * 6


def block(setup: Setup) -> None:
    """The worker's word that the blocked key's org is over its hard budget for 10 more minutes (as read from the status topic)."""
    end = datetime.now(UTC) + timedelta(minutes=10)
    status = BudgetStatus(
        budget_id=f"sdk-hard-{RUN}",
        org=f"sdk-blocked-{RUN}",
        mode="hard",
        period_start=end - timedelta(days=1),
        period_end=end,
        spend=Decimal("10.5"),
        amount=Decimal("10"),
        currency="USD",
        exhausted=True,
        evaluated_at=datetime.now(UTC),
    )
    assert setup.gateway.budgets is not None
    setup.gateway.budgets.apply(status.budget_id.encode(), codec_for(BudgetStatus).encode(status))


async def test_budget_429_is_not_retried_and_a_repeated_request_id_is_metered_once(setup: Setup, tap: UsageTap) -> None:
    block(setup)
    match, before = since_now(BLOCKED_KEY_ID), refusals(setup.url, "budget")
    client = sdk(setup, BLOCKED_SECRET, max_retries=2)  # the SDK default: would retry a 429 twice
    with pytest.raises(openai.RateLimitError) as refused:
        await client.chat.completions.create(model="llama", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.code == "budget_exceeded"
    headers = refused.value.response.headers
    assert headers["x-should-retry"] == "false" and 590 <= int(headers["retry-after"]) <= 600, headers
    assert refusals(setup.url, "budget") == before + 1, "the SDK must not have retried"
    for _ in range(3):  # a script retrying with the same request id: refused each time, metered once
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(
                model="llama", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-request-id": f"same-{RUN}"}
            )
    await client.close()
    assert refusals(setup.url, "budget") == before + 4
    events = await tap.events(match, 2)
    assert {(e.status, e.backend) for e in events} == {("rejected", "gateway")}


async def test_upstream_rate_limit_and_processing_headers_reach_the_client(setup: Setup) -> None:
    setup.backend.extra_headers = {
        "x-ratelimit-remaining-requests": "99",
        "x-ratelimit-reset-tokens": "6ms",
        "openai-processing-ms": "12",
        "set-cookie": "session=secret",
        "server": "upstream/1.0",
    }
    client = sdk(setup, max_retries=0)
    try:
        raw = await client.chat.completions.with_raw_response.create(model="ext-model", messages=[{"role": "user", "content": "hi"}])
        streamed = await client.chat.completions.with_raw_response.create(
            model="llama", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for _ in streamed.parse():  # type: ignore[union-attr]
            pass
    finally:
        setup.backend.extra_headers = {}
    for headers in (raw.headers, streamed.headers):
        assert (headers["x-ratelimit-remaining-requests"], headers["x-ratelimit-reset-tokens"], headers["openai-processing-ms"]) == (
            "99",
            "6ms",
            "12",
        )
        assert "set-cookie" not in headers and headers.get("server") != "upstream/1.0"
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="busy-model", messages=[{"role": "user", "content": "hi"}])
    await client.close()
    assert (limited.value.response.headers["retry-after-ms"], limited.value.response.headers["x-ratelimit-reset-requests"]) == (
        "1500",
        "1.5s",
    )


async def test_models_retrieve_and_unknown_routes_answer_in_openai_shape(setup: Setup) -> None:
    client = sdk(setup, max_retries=0)
    assert (await client.models.retrieve("llama")).id == "llama"
    with pytest.raises(openai.NotFoundError) as missing:
        await client.models.retrieve("gpt-17")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as route:
        await client.post("/no/such/route", cast_to=object, body={})
    assert route.value.code == "unknown_url"
    await client.close()
    async with httpx.AsyncClient(base_url=setup.url, headers={"Authorization": f"Bearer {SECRET}"}) as raw:
        wrong_method = await raw.delete("/v1/chat/completions")
        nowhere = await raw.get("/v2/anything")
    assert (
        wrong_method.status_code == 405
        and wrong_method.headers["allow"] == "POST"
        and wrong_method.json()["error"]["code"] == "method_not_allowed"
    )
    assert (
        nowhere.status_code == 404
        and nowhere.headers["content-type"] == "application/json"
        and set(nowhere.json()["error"]) == {"message", "type", "param", "code"}
    )


NODE_SDK = Path(__file__).parent / "node_sdk"


def node_sdk_dir() -> Path:
    """The pinned Node SDK installed from the npm registry once per package.json, outside the repository."""
    npm, digest = shutil.which("npm"), hashlib.sha256((NODE_SDK / "package.json").read_bytes()).hexdigest()[:12]
    assert npm is not None and shutil.which("node"), "node and npm are needed (Debian: apt-get install nodejs npm; .ci/run installs them)"
    target = Path.home() / ".cache" / "gpuledger" / f"node-sdk-{digest}"
    if not (target / "node_modules" / "openai" / "package.json").exists():
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(NODE_SDK / "package.json", target / "package.json")
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent"], cwd=target, check=True, timeout=300, capture_output=True)
    shutil.copy(NODE_SDK / "stream_chat.mjs", target / "stream_chat.mjs")
    return target


async def test_the_node_sdk_streams_ok_and_does_not_retry_a_budget_429(setup: Setup, tap: UsageTap) -> None:
    block(setup)
    match, before = since_now(), refusals(setup.url, "budget")
    target = await asyncio.to_thread(node_sdk_dir)
    result = await asyncio.to_thread(
        subprocess.run,
        ["node", "stream_chat.mjs", setup.url + "/v1", SECRET, BLOCKED_SECRET, "llama"],
        cwd=target,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["text"] == "tok0 tok1 tok2 tok3 "
    assert out["refused"]["status"] == 429 and out["refused"]["code"] == "budget_exceeded" and int(out["refused"]["retryAfter"]) > 0
    assert refusals(setup.url, "budget") == before + 1, "the Node SDK must not have retried"
    [event] = await tap.events(match, 1)
    assert (event.status, event.prompt_tokens, event.completion_tokens) == ("ok", 3, 4)
