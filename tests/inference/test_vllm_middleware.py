"""The vLLM usage middleware, mounted on a real ASGI app served by uvicorn, publishing to the real Kafka.

The app is ``fake_vllm.FakeVllm``: it stands in for vLLM because no GPU and no vLLM are
available here; it reproduces vLLM's OpenAI response bodies and SSE framing byte for byte.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from gpuledger.sections.meter import MeterSettings
from gpuledger.settings import Settings
from inference.metering.events import key_id_for_secret
from inference.vllm_meter.middleware import UsageMeteringMiddleware
from tests.inference.fake_vllm import FakeVllm
from tests.inference.servers import serve
from tests.inference.streaming_client import hang_up_after
from tests.inference.usage_tap import UsageTap

GPUS = "GPU-11111111-2222-3333-4444-555555555555,GPU-66666666-7777-8888-9999-000000000000"


@pytest.fixture(scope="module")
def fake() -> FakeVllm:
    return FakeVllm()


@pytest.fixture(scope="module")
def vllm_url(stack_settings: Settings, fake: FakeVllm) -> Iterator[str]:
    """The fake vLLM behind the middleware, configured the way a Kubernetes pod would be: through env vars."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NODE_NAME", "gpu-node-7")
        env.setenv("POD_NAME", "vllm-llama-0")
        env.setenv("NVIDIA_VISIBLE_DEVICES", GPUS)
        middleware = UsageMeteringMiddleware(fake.app(), settings=stack_settings, meter=MeterSettings())
    with serve(middleware) as url:
        yield url


@pytest.fixture
def secret() -> str:
    """A fresh API key per test: its key id singles out this test's events on the shared topic."""
    return f"sk-test-{uuid.uuid4().hex}"


@pytest.fixture
def reset(fake: FakeVllm) -> Iterator[FakeVllm]:
    yield fake
    fake.cached_tokens, fake.fail_status, fake.token_delay_s = 0, None, 0.0


def sse_chunks(text: str) -> list[dict[str, object] | str]:
    """The data payloads of an SSE body, JSON-decoded except ``[DONE]``; asserts vLLM's exact framing."""
    assert text.endswith("data: [DONE]\n\n")
    events = text.split("\n\n")[:-1]
    assert all(e.startswith("data: ") for e in events)
    return [e[6:] if e == "data: [DONE]" else json.loads(e[6:]) for e in events]


def mine(secret: str):  # type: ignore[no-untyped-def]
    key_id = key_id_for_secret(secret)
    return lambda e: e.key_id == key_id


async def test_plain_chat_is_metered_with_exact_tokens(vllm_url: str, tap: UsageTap, reset: FakeVllm, secret: str) -> None:
    reset.cached_tokens = 3
    async with httpx.AsyncClient(base_url=vllm_url, headers={"Authorization": f"Bearer {secret}"}) as client:
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "llama-8b", "max_tokens": 7, "messages": [{"role": "user", "content": "secret prompt words here"}]},
        )
    assert response.status_code == 200
    assert response.json()["usage"] == {
        "prompt_tokens": 4,
        "total_tokens": 11,
        "completion_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 3},
    }
    [event] = await tap.events(mine(secret), 1)
    assert (event.prompt_tokens, event.completion_tokens, event.cached_prompt_tokens) == (4, 7, 3)
    assert (event.status, event.endpoint, event.model, event.backend) == ("ok", "chat.completions", "llama-8b", "vllm")
    assert (event.node, event.deployment, event.gpu_uuids) == ("gpu-node-7", "vllm-llama-0", GPUS.split(","))
    assert event.ttft_ms is None and 0 < event.latency_ms < 5000
    assert event.request_start.tzinfo is not None and event.request_end >= event.request_start
    assert len(event.event_id) == 32 and int(event.event_id, 16) >= 0
    assert secret.encode() not in tap.raw[-1] and b"secret prompt" not in tap.raw[-1] and b"tok0" not in tap.raw[-1]


async def test_stream_asks_for_usage_and_hides_the_usage_chunk(vllm_url: str, tap: UsageTap, reset: FakeVllm, secret: str) -> None:
    async with httpx.AsyncClient(base_url=vllm_url, headers={"Authorization": f"Bearer {secret}"}) as client:
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "llama-8b", "stream": True, "max_tokens": 6, "messages": [{"role": "user", "content": "one two three"}]},
        )
    assert reset.requests[-1]["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}, (
        "the middleware must ask vLLM for usage"
    )
    chunks = sse_chunks(response.text)
    assert len(chunks) == 1 + 6 + 1  # role, six tokens, [DONE]: no usage chunk for a client that did not ask
    assert all(c == "[DONE]" or (c["choices"] and "usage" not in c) for c in chunks)
    [event] = await tap.events(mine(secret), 1)
    assert (event.prompt_tokens, event.completion_tokens, event.status) == (3, 6, "ok")
    assert event.ttft_ms is not None and 0 < event.ttft_ms <= event.latency_ms


async def test_stream_keeps_usage_chunk_when_client_asked(vllm_url: str, tap: UsageTap, reset: FakeVllm, secret: str) -> None:
    body = {"model": "llama-8b", "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 2, "prompt": "a b c d e"}
    async with httpx.AsyncClient(base_url=vllm_url, headers={"Authorization": f"Bearer {secret}"}) as client:
        response = await client.post("/v1/completions", json=body)
    chunks = sse_chunks(response.text)
    assert chunks[-2] == {**chunks[0], "choices": [], "usage": {"prompt_tokens": 5, "total_tokens": 7, "completion_tokens": 2}}  # type: ignore[dict-item]
    assert reset.requests[-1]["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert response.text.count(',"usage":null}') == 2, "per-chunk usage hidden as vLLM's completions write it when not asked: null"
    [event] = await tap.events(mine(secret), 1)
    assert (event.prompt_tokens, event.completion_tokens, event.endpoint) == (5, 2, "completions")


async def test_embeddings_and_errors_are_metered(vllm_url: str, tap: UsageTap, reset: FakeVllm, secret: str) -> None:
    async with httpx.AsyncClient(base_url=vllm_url, headers={"Authorization": f"Bearer {secret}"}) as client:
        ok = await client.post("/v1/embeddings", json={"model": "e5", "input": ["a b", "c d e"]})
        reset.fail_status = 500
        failed = await client.post("/v1/chat/completions", json={"model": "llama-8b", "messages": [{"role": "user", "content": "x"}]})
        untouched = await client.get("/v1/models")
    assert (ok.status_code, failed.status_code, untouched.status_code) == (200, 500, 200)
    events = sorted(await tap.events(mine(secret), 2), key=lambda e: e.request_start)
    assert [(e.endpoint, e.status, e.prompt_tokens, e.completion_tokens) for e in events] == [
        ("embeddings", "ok", 5, 0),
        ("chat.completions", "error", 0, 0),
    ]


async def test_client_disconnecting_mid_stream_is_charged_for_what_it_was_sent(
    vllm_url: str, tap: UsageTap, reset: FakeVllm, secret: str
) -> None:
    reset.token_delay_s = 0.1
    body = {"model": "llama-8b", "stream": True, "max_tokens": 50, "messages": [{"role": "user", "content": "long answer please"}]}
    async with httpx.AsyncClient(base_url=vllm_url, headers={"Authorization": f"Bearer {secret}"}) as client:
        lines = await hang_up_after(client, body, 3)
    assert all('"usage"' not in line for line in lines), "the per-chunk usage the middleware asked for is hidden"
    [event] = await tap.events(mine(secret), 1)
    assert event.status == "client_disconnected"
    assert event.ttft_ms is not None and event.latency_ms < 3000  # not the 5 s the full answer would take
    assert event.prompt_tokens == 3 and 3 <= event.completion_tokens <= 4, event  # exact, from per-chunk usage; a 4th may be in flight


async def test_key_header_names_the_caller(stack_settings: Settings, fake: FakeVllm, tap: UsageTap) -> None:
    caller = f"team-{uuid.uuid4().hex[:8]}"
    middleware = UsageMeteringMiddleware(
        fake.app(), settings=stack_settings, meter=MeterSettings(key_header="X-Caller-Id", deployment="llama-a")
    )
    with serve(middleware) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.post(
                "/v1/completions", headers={"x-caller-id": caller, "authorization": "Bearer sk-other"}, json={"model": "m", "prompt": "p q"}
            )
    assert response.status_code == 200
    [event] = await tap.events(lambda e: e.key_id == caller, 1)
    assert (event.deployment, event.prompt_tokens, event.completion_tokens) == ("llama-a", 2, 5)


async def test_a_stream_the_openai_sdk_closes_after_done_is_ok(vllm_url: str, tap: UsageTap, reset: FakeVllm, secret: str) -> None:
    """The SDK drains at most 100 ms after [DONE] and hangs up; vLLM ends its body later: still a complete stream."""
    import openai

    reset.done_delay_s = 0.25
    try:
        client = openai.AsyncOpenAI(base_url=vllm_url + "/v1", api_key=secret)
        stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a b c"}], max_tokens=3, stream=True)
        assert [c async for c in stream]
        await client.close()
    finally:
        reset.done_delay_s = 0.0
    [event] = await tap.events(mine(secret), 1)
    assert (event.status, event.prompt_tokens, event.completion_tokens, event.usage_estimated) == ("ok", 3, 3, False)


async def test_request_trace_and_session_ids_reach_the_event(vllm_url: str, tap: UsageTap, secret: str) -> None:
    """What cost per outcome joins on, read from the client's headers by the middleware itself."""
    trace = uuid.uuid4().hex
    headers = {
        "Authorization": f"Bearer {secret}",
        "x-request-id": "req-vllm-1",
        "traceparent": f"00-{trace}-00f067aa0ba902b7-01",
        "x-gpuledger-session-id": "chat-9",
    }
    async with httpx.AsyncClient(base_url=vllm_url, headers=headers) as client:
        response = await client.post(
            "/v1/chat/completions", json={"model": "llama-8b", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
        )
    assert response.status_code == 200
    [event] = await tap.events(mine(secret), 1)
    assert (event.client_request_id, event.trace_id, event.session_id) == ("req-vllm-1", trace, "chat-9")
