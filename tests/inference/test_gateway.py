"""The metering gateway over real HTTP, in front of fake vLLM servers, publishing to the real Kafka.

``fake_vllm.FakeVllm`` stands in for vLLM because no GPU and no vLLM are available here; it
reproduces vLLM's OpenAI response bodies and SSE framing byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest

from gpuledger.sections.gateway import GatewayConfig
from gpuledger.settings import Settings
from inference.gateway.app import create_app
from schemas import InferenceUsage
from tests.inference.fake_vllm import FakeVllm
from tests.inference.gateway_metrics import refusals
from tests.inference.servers import serve
from tests.inference.streaming_client import hang_up_after
from tests.inference.usage_tap import UsageTap
from tests.promtool import check_metrics

RUN = uuid.uuid4().hex[:8]
KEY_ID = f"key-search-{RUN}"
SECRET = f"sk-gw-{RUN}"
EXT_KEY_ENV, EXT_KEY = "GPULEDGER_TEST_EXT_API_KEY", f"sk-ext-{RUN}"


@dataclass
class Fleet:
    small: FakeVllm
    large: FakeVllm
    broken: FakeVllm
    hanging: FakeVllm
    url: str


@pytest.fixture(scope="module")
def fleet(stack_settings: Settings) -> Iterator[Fleet]:
    small, large, broken, hanging = FakeVllm(), FakeVllm(models=("llama-70b",)), FakeVllm(fail_status=500), FakeVllm(hang=True)
    with ExitStack() as stack:
        urls = {
            name: stack.enter_context(serve(fake.app()))
            for name, fake in [("small", small), ("large", large), ("broken", broken), ("hanging", hanging)]
        }
        config = GatewayConfig.model_validate(
            {
                "backends": [
                    {
                        "name": "vllm-8b",
                        "kind": "vllm",
                        "base_url": urls["small"] + "/v1",
                        "deployment": "llama-8b-a",
                        "node": "gpu-node-b",
                        "gpu_uuids": ["GPU-b0"],
                    },
                    {
                        "name": "vllm-70b",
                        "kind": "vllm",
                        "base_url": urls["large"] + "/v1",
                        "deployment": "llama-70b-a",
                        "node": "gpu-node-a",
                        "gpu_uuids": ["GPU-a0", "GPU-a1"],
                    },
                    {"name": "vllm-down", "kind": "vllm", "base_url": urls["broken"] + "/v1", "deployment": "llama-70b-b"},
                    {"name": "stuck-api", "kind": "openai", "base_url": urls["hanging"] + "/v1", "timeout_s": 0.3},
                    {"name": "nowhere", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "connect_timeout_s": 0.5},
                    {"name": "ext-api", "kind": "openai", "base_url": urls["small"] + "/v1", "api_key_env": EXT_KEY_ENV},
                ],
                "models": [
                    {"name": "llama-8b", "targets": [{"backend": "vllm-8b", "model": "meta-llama/Llama-3.1-8B-Instruct"}]},
                    {"name": "llama-70b", "targets": [{"backend": "vllm-down"}, {"backend": "vllm-70b"}]},
                    {"name": "slow-model", "targets": [{"backend": "stuck-api"}]},
                    {"name": "gone-model", "targets": [{"backend": "nowhere"}]},
                    {"name": "misnamed", "targets": [{"backend": "vllm-70b", "model": "not-served-here"}]},
                    {"name": "ext-model", "targets": [{"backend": "ext-api"}]},
                ],
                "aliases": [
                    {
                        "name": "auto",
                        "default": "llama-8b",
                        "rules": [
                            {"model": "llama-70b", "max_tokens_gt": 512},
                            {"model": "llama-70b", "messages_chars_gt": 200},
                            {"model": "llama-70b", "header": {"X-Tier": "large"}},
                        ],
                    }
                ],
                "keys": [{"id": KEY_ID, "sha256": hashlib.sha256(SECRET.encode()).hexdigest(), "org": "acme", "team": "search"}],
                "max_body_bytes": 4096,
            }
        )
        os.environ[EXT_KEY_ENV] = EXT_KEY  # read once, when the gateway starts
        url = stack.enter_context(serve(create_app(config, stack_settings)))
        yield Fleet(small, large, broken, hanging, url)
    os.environ.pop(EXT_KEY_ENV, None)


@pytest.fixture
async def client(fleet: Fleet) -> Iterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fleet.url, headers={"Authorization": f"Bearer {SECRET}"}, timeout=10) as c:
        yield c  # type: ignore[misc]


def ours(since: float) -> Callable[[InferenceUsage], bool]:
    """This module's key, events of requests that started after ``since`` (epoch seconds)."""
    return lambda e: e.key_id == KEY_ID and e.request_start.timestamp() >= since


def now() -> float:
    import time

    return time.time() - 0.001


def chat(content: str = "hello there", **extra: object) -> dict[str, object]:
    return {"model": "auto", "messages": [{"role": "user", "content": content}], **extra}


async def test_missing_or_invalid_key_is_401_counted_but_writes_no_event(fleet: Fleet, client: httpx.AsyncClient, tap: UsageTap) -> None:
    """Anyone can reach the gateway: unauthenticated refusals are a metric, never one Kafka/ClickHouse row each."""
    bad = f"sk-wrong-{uuid.uuid4().hex}"
    before = refusals(fleet.url, "auth")
    async with httpx.AsyncClient(base_url=fleet.url) as anon:
        missing = await anon.post("/v1/chat/completions", json=chat())
        wrong = await anon.post("/v1/chat/completions", json=chat(), headers={"Authorization": f"Bearer {bad}"})
        models = await anon.get("/v1/models")
        one = await anon.get("/v1/models/llama-8b")
    for response in (missing, wrong, models, one):
        assert response.status_code == 401
        assert (
            set(response.json()["error"]) == {"message", "type", "param", "code"} and response.json()["error"]["code"] == "invalid_api_key"
        )
    since = now()
    authenticated = await client.post("/v1/chat/completions", json=chat())  # its event comes after any the refused ones had
    assert authenticated.status_code == 200
    wrong_id = f"unknown-{hashlib.sha256(bad.encode()).hexdigest()[:12]}"
    assert await tap.events_through(lambda e: e.key_id in (wrong_id, "anonymous"), sentinel=ours(since)) == []
    assert refusals(fleet.url, "auth") == before + 4


async def test_alias_routes_small_by_default_and_large_by_rule(fleet: Fleet, client: httpx.AsyncClient, tap: UsageTap) -> None:
    since = now()
    default = await client.post("/v1/chat/completions", json=chat("a b c"))
    by_tokens = await client.post("/v1/chat/completions", json=chat("a b c", max_tokens=600))
    by_chars = await client.post("/v1/chat/completions", json=chat("word " * 50))
    by_header = await client.post("/v1/chat/completions", json=chat("a b c"), headers={"x-tier": "large"})
    assert [r.status_code for r in (default, by_tokens, by_chars, by_header)] == [200] * 4
    assert (
        default.json()["model"] == "meta-llama/Llama-3.1-8B-Instruct"
        and fleet.small.requests[-1]["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    )
    assert {r.json()["model"] for r in (by_tokens, by_chars, by_header)} == {"llama-70b"}
    assert "authorization" not in fleet.small.headers_seen[-1] or SECRET not in fleet.small.headers_seen[-1]["authorization"]
    events = sorted(await tap.events(ours(since), 4), key=lambda e: e.request_start)
    assert [(e.deployment, e.model, e.prompt_tokens, e.completion_tokens) for e in events] == [
        ("llama-8b-a", "meta-llama/Llama-3.1-8B-Instruct", 3, 5),
        ("llama-70b-a", "llama-70b", 3, 600),
        ("llama-70b-a", "llama-70b", 50, 5),
        ("llama-70b-a", "llama-70b", 3, 5),
    ]
    assert events[0].gpu_uuids == ["GPU-b0"] and events[1].gpu_uuids == ["GPU-a0", "GPU-a1"] and events[1].node == "gpu-node-a"
    assert all(e.status == "ok" and e.backend == "vllm" and e.endpoint == "chat.completions" for e in events)


async def test_backend_500_falls_back_to_the_next(fleet: Fleet, client: httpx.AsyncClient, tap: UsageTap) -> None:
    since, before = now(), len(fleet.broken.requests)
    response = await client.post("/v1/completions", json={"model": "llama-70b", "prompt": "x y z", "max_tokens": 3})
    assert response.status_code == 200 and response.json()["choices"][0]["text"] == "tok0 tok1 tok2 "
    assert len(fleet.broken.requests) == before + 1, "the first target must have been tried"
    [event] = await tap.events(ours(since), 1)
    assert (event.status, event.deployment, event.endpoint, event.prompt_tokens, event.completion_tokens) == (
        "ok",
        "llama-70b-a",
        "completions",
        3,
        3,
    )


async def test_timeouts_and_unreachable_backends_are_504_and_502(client: httpx.AsyncClient, tap: UsageTap) -> None:
    since = now()
    timeout = await client.post("/v1/chat/completions", json={**chat(), "model": "slow-model"})
    unreachable = await client.post("/v1/chat/completions", json={**chat(), "model": "gone-model"})
    assert (timeout.status_code, timeout.json()["error"]["code"]) == (504, "upstream_timeout")
    assert (unreachable.status_code, unreachable.json()["error"]["code"]) == (502, "upstream_unavailable")
    events = sorted(await tap.events(ours(since), 2), key=lambda e: e.request_start)
    assert [(e.status, e.backend, e.deployment) for e in events] == [("error", "openai", "stuck-api"), ("error", "openai", "nowhere")]
    assert 250 < events[0].latency_ms < 2000


async def test_upstream_4xx_passes_through_in_openai_shape(client: httpx.AsyncClient, tap: UsageTap) -> None:
    since = now()
    response = await client.post("/v1/chat/completions", json={**chat(), "model": "misnamed"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert "not-served-here" in error["message"] and set(error) == {"message", "type", "param", "code"}
    [event] = await tap.events(ours(since), 1)
    assert (event.status, event.deployment) == ("error", "llama-70b-a")


async def test_bad_requests_are_rejected_with_a_message_that_says_what_to_fix(client: httpx.AsyncClient, tap: UsageTap) -> None:
    since = now()
    bad_json = await client.post("/v1/chat/completions", content=b'{"model": "auto", ', headers={"content-type": "application/json"})
    unknown = await client.post("/v1/chat/completions", json={**chat(), "model": "gpt-17"})
    too_big = await client.post("/v1/chat/completions", json=chat("x" * 5000))
    assert (bad_json.status_code, bad_json.json()["error"]["code"]) == (400, "invalid_json")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "model_not_found") and "llama-8b" in unknown.json()["error"][
        "message"
    ]
    assert (too_big.status_code, too_big.json()["error"]["code"]) == (413, "request_too_large") and "4096" in too_big.json()["error"][
        "message"
    ]
    events = sorted(await tap.events(ours(since), 3), key=lambda e: e.request_start)
    assert [(e.status, e.model) for e in events] == [("rejected", ""), ("rejected", "gpt-17"), ("rejected", "")]


async def test_streaming_meters_and_hides_the_injected_usage_chunk(fleet: Fleet, client: httpx.AsyncClient, tap: UsageTap) -> None:
    since = now()
    plain = await client.post("/v1/chat/completions", json=chat("one two", stream=True, max_tokens=4))
    assert fleet.small.requests[-1]["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}, (
        "vLLM backends get usage in every chunk"
    )
    asked = await client.post(
        "/v1/chat/completions", json=chat("one two three", stream=True, max_tokens=2, stream_options={"include_usage": True})
    )
    completion = await client.post("/v1/completions", json={"model": "llama-8b", "prompt": "p q r s", "stream": True, "max_tokens": 3})
    await client.post("/v1/chat/completions", json={**chat("one two", stream=True, max_tokens=3), "model": "ext-model"})
    assert fleet.small.requests[-1]["stream_options"] == {"include_usage": True}, "OpenAI's API does not know continuous_usage_stats"
    assert plain.headers["content-type"].startswith("text/event-stream")
    plain_events = plain.text.split("\n\n")[:-1]
    assert plain_events[-1] == "data: [DONE]" and len(plain_events) == 1 + 4 + 1
    assert all('"usage"' not in e for e in plain_events), "chat chunks carry no usage member unless asked"
    asked_events = asked.text.split("\n\n")[:-1]
    usage_chunk = json.loads(asked_events[-2].removeprefix("data: "))
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 2
    assert all('"usage"' not in e for e in asked_events[:-2]), "per-chunk usage was not asked for by this client"
    completion_events = completion.text.split("\n\n")[:-1]
    assert len(completion_events) == 3 + 1 and all(e.endswith(',"usage":null}') for e in completion_events[:-1]), (
        "vLLM's completions write usage null"
    )
    events = sorted(await tap.events(ours(since), 4), key=lambda e: e.request_start)
    assert [(e.prompt_tokens, e.completion_tokens, e.status) for e in events] == [(2, 4, "ok"), (3, 2, "ok"), (4, 3, "ok"), (2, 3, "ok")]
    assert all(e.ttft_ms is not None and e.ttft_ms <= e.latency_ms for e in events)


STORY = "tell me an extraordinarily long story"  # 6 tokens to the fake, 10 by the 4-characters estimate: the two cannot be confused


@pytest.mark.parametrize("model", ["llama-8b", "ext-model"])
async def test_streaming_client_that_hangs_up_is_charged_for_what_it_was_sent(
    fleet: Fleet, client: httpx.AsyncClient, tap: UsageTap, model: str
) -> None:
    since = now()
    fleet.small.token_delay_s = 0.1
    try:
        await hang_up_after(client, {**chat(STORY, stream=True, max_tokens=50), "model": model}, 3)
    finally:
        fleet.small.token_delay_s = 0.0
    [event] = await tap.events(ours(since), 1)
    assert event.status == "client_disconnected" and event.latency_ms < 3000  # not the 5 s the full answer would take
    # vLLM: exact counts from per-chunk usage; an external API: chunks relayed and a prompt estimated at 4 characters a token
    expected_prompt = len(STORY.split()) if model == "llama-8b" else math.ceil(len(STORY) / 4)
    assert event.prompt_tokens == expected_prompt and 3 <= event.completion_tokens <= 4, (
        event
    )  # a 4th token may be relayed as the hang-up travels
    assert event.usage_estimated is (model == "ext-model"), "estimates are flagged as such, reported counts are not"


async def test_cancelled_non_streaming_request_is_recorded(client: httpx.AsyncClient, tap: UsageTap) -> None:
    since = now()
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/v1/chat/completions", json={**chat(), "model": "slow-model"}, timeout=0.1)
    [event] = await tap.events(ours(since), 1)
    assert event.status == "client_disconnected" and event.latency_ms < 290


async def test_models_embeddings_and_metrics(client: httpx.AsyncClient, tap: UsageTap) -> None:
    since = now()
    names = {m["id"] for m in (await client.get("/v1/models")).json()["data"]}
    assert names == {"auto", "llama-8b", "llama-70b", "slow-model", "gone-model", "misnamed", "ext-model"}
    embedded = await client.post("/v1/embeddings", json={"model": "llama-8b", "input": ["a b c", "d"]})
    assert embedded.status_code == 200 and len(embedded.json()["data"]) == 2
    [event] = await tap.events(ours(since), 1)
    assert (event.endpoint, event.prompt_tokens, event.completion_tokens) == ("embeddings", 4, 0)
    metrics = (await client.get("/metrics")).text
    check_metrics(metrics)
    assert (
        "gpuledger_usage_events_published_total" in metrics
        and 'gpuledger_gateway_requests_total{endpoint="embeddings",status="ok"}' in metrics
    )
    assert 'gpuledger_gateway_request_duration_seconds_count{endpoint="embeddings"}' in metrics
    assert 'gpuledger_gateway_upstream_duration_seconds_bucket{backend="vllm-8b",le="0.005"}' in metrics
    assert 'gpuledger_gateway_upstream_responses_total{backend="vllm-8b",status="200"}' in metrics


async def test_tracing_headers_go_upstream_credentials_do_not_and_the_request_id_comes_back(
    fleet: Fleet, client: httpx.AsyncClient, tap: UsageTap
) -> None:
    since = now()
    fleet.small.request_id_headers = True
    try:
        sent = {
            "x-request-id": f"req-{RUN}",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "x-custom": "no",
            "cookie": "c=1",
        }
        plain = await client.post("/v1/chat/completions", json={**chat(), "model": "ext-model"}, headers=sent)
        seen = fleet.small.headers_seen[-1]
        streamed = await client.post("/v1/chat/completions", json={**chat(stream=True), "model": "llama-8b"})
        fresh_id = fleet.small.headers_seen[-1].get("x-request-id")
    finally:
        fleet.small.request_id_headers = False
    assert (seen["x-request-id"], seen["traceparent"]) == (sent["x-request-id"], sent["traceparent"])
    assert "x-custom" not in seen and "cookie" not in seen
    assert seen["authorization"] == f"Bearer {EXT_KEY}", "the backend's own key replaces the client's"
    assert plain.status_code == 200 and plain.headers["x-request-id"] == sent["x-request-id"]
    assert fresh_id is None and len(streamed.headers["x-request-id"]) == 32, "the backend's own id comes back when the client sent none"
    await tap.events(ours(since), 2)
