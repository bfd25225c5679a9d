"""OpenAI's Responses API and Anthropic's Messages API through the gateway, driven by the official ``openai`` and ``anthropic`` SDKs.

The backends are ``fake_providers.FakeResponses`` and ``FakeAnthropic`` (neither provider is
reachable here), which reproduce each API's wire format; events go to the real Kafka.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anthropic
import httpx
import openai
import pytest

from gpuledger.sections.gateway import GatewayConfig
from gpuledger.settings import Settings
from inference.gateway.app import create_app
from tests.inference.fake_providers import FakeAnthropic, FakeResponses
from tests.inference.servers import serve
from tests.inference.usage_tap import UsageTap

RUN = uuid.uuid4().hex[:8]
KEY_ID, SECRET = f"key-apis-{RUN}", f"sk-apis-{RUN}"
UPSTREAM_KEY_ENV, UPSTREAM_KEY = "GPULEDGER_TEST_ANTHROPIC_KEY", f"sk-ant-{RUN}"


@dataclass
class Setup:
    responses: FakeResponses
    claude: FakeAnthropic
    url: str


@pytest.fixture(scope="module")
def setup(stack_settings: Settings) -> Iterator[Setup]:
    responses, claude = FakeResponses(cached_tokens=2), FakeAnthropic(api_key=UPSTREAM_KEY, cached_tokens=3)
    os.environ[UPSTREAM_KEY_ENV] = UPSTREAM_KEY
    with ExitStack() as stack:
        urls = [stack.enter_context(serve(fake.app())) for fake in (responses, claude)]
        config = GatewayConfig.model_validate(
            {
                "backends": [
                    {"name": "openai", "kind": "openai", "base_url": urls[0] + "/v1"},
                    {"name": "anthropic", "kind": "anthropic", "base_url": urls[1] + "/v1", "api_key_env": UPSTREAM_KEY_ENV},
                ],
                "models": [
                    {"name": "gpt-5", "targets": [{"backend": "openai"}]},
                    {"name": "claude", "targets": [{"backend": "anthropic", "model": "claude-sonnet-4-5"}]},
                    {"name": "claude-old", "targets": [{"backend": "anthropic", "model": "claude-2"}]},
                ],
                "keys": [{"id": KEY_ID, "sha256": hashlib.sha256(SECRET.encode()).hexdigest(), "org": "apis"}],
            }
        )
        yield Setup(responses, claude, stack.enter_context(serve(create_app(config, stack_settings))))
    os.environ.pop(UPSTREAM_KEY_ENV, None)


def ours() -> object:
    start = datetime.now(UTC) - timedelta(milliseconds=1)
    return lambda e: e.key_id == KEY_ID and e.request_start >= start


async def test_responses_api_plain_and_streamed_is_metered_exactly(setup: Setup, tap: UsageTap) -> None:
    match = ours()
    client = openai.AsyncOpenAI(base_url=setup.url + "/v1", api_key=SECRET, max_retries=0)
    plain = await client.responses.with_raw_response.create(
        model="gpt-5", input="one two three four", instructions="be brief", max_output_tokens=3
    )
    assert (
        plain.parse().output_text == "tok0 tok1 tok2 "
        and plain.headers["openai-processing-ms"] == "42"
        and plain.headers["x-ratelimit-remaining-tokens"] == "149990"
    )
    setup.responses.done_delay_s = 0.25
    try:
        stream = await client.responses.create(model="gpt-5", input=[{"role": "user", "content": "a b"}], max_output_tokens=4, stream=True)
        kinds = [event.type async for event in stream]
    finally:
        setup.responses.done_delay_s = 0.0
    with pytest.raises(openai.NotFoundError) as missing:
        await client.responses.create(model="gpt-6", input="x")
    await client.close()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed" and kinds.count("response.output_text.delta") == 4
    assert setup.responses.requests[-2].get("stream_options") is None, "nothing is injected into Responses requests"
    assert missing.value.code == "model_not_found"
    events = sorted(await tap.events(match, 3), key=lambda e: e.request_start)
    assert [(e.endpoint, e.status, e.prompt_tokens, e.cached_prompt_tokens, e.completion_tokens, e.usage_estimated) for e in events] == [
        ("responses", "ok", 6, 2, 3, False),
        ("responses", "ok", 2, 2, 4, False),
        ("responses", "rejected", 0, 0, 0, False),
    ]


async def test_anthropic_messages_plain_and_streamed_are_metered_exactly(setup: Setup, tap: UsageTap) -> None:
    match = ours()
    client = anthropic.AsyncAnthropic(base_url=setup.url, api_key=SECRET, max_retries=0)
    plain = await client.messages.with_raw_response.create(
        model="claude", max_tokens=3, system="be brief", messages=[{"role": "user", "content": "one two three four"}]
    )
    message = await plain.parse()
    assert (
        message.content[0].text == "tok0 tok1 tok2 "
        and message.usage.cache_read_input_tokens == 3
        and plain.headers["anthropic-ratelimit-requests-remaining"] == "49"
    )
    seen = setup.claude.headers_seen[-1]
    assert seen["x-api-key"] == UPSTREAM_KEY and SECRET not in str(seen), "the backend's own key replaces the client's"
    assert seen["anthropic-version"] == plain.http_request.headers["anthropic-version"], "the client's API version goes upstream"
    async with client.messages.stream(model="claude", max_tokens=5, messages=[{"role": "user", "content": "a b c d"}]) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "tok0 tok1 tok2 tok3 tok4 " and final.usage.output_tokens == 5
    await client.close()
    events = sorted(await tap.events(match, 2), key=lambda e: e.request_start)
    # Anthropic's input_tokens exclude cache reads: the gateway books input + cache reads as the prompt, the reads as cached
    assert [
        (e.endpoint, e.backend, e.status, e.prompt_tokens, e.cached_prompt_tokens, e.completion_tokens, e.usage_estimated) for e in events
    ] == [("messages", "anthropic", "ok", 6, 3, 3, False), ("messages", "anthropic", "ok", 4, 3, 5, False)]


async def test_anthropic_errors_keep_anthropics_shape(setup: Setup, tap: UsageTap) -> None:
    match = ours()
    client = anthropic.AsyncAnthropic(base_url=setup.url, api_key=SECRET, max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as unknown_upstream:
        await client.messages.create(model="claude-old", max_tokens=3, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.NotFoundError) as unknown_here:
        await client.messages.create(model="gpt-17", max_tokens=3, messages=[{"role": "user", "content": "x"}])
    await client.close()
    wrong = anthropic.AsyncAnthropic(base_url=setup.url, api_key="sk-not-ours", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        await wrong.messages.create(model="claude", max_tokens=3, messages=[{"role": "user", "content": "x"}])
    await wrong.close()
    assert unknown_upstream.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model: claude-2"},
        "request_id": unknown_upstream.value.body["request_id"],
    }
    assert (
        unknown_here.value.body["type"] == "error"
        and unknown_here.value.body["error"]["type"] == "not_found_error"
        and "claude" in unknown_here.value.body["error"]["message"]
    )
    assert refused.value.body["error"]["type"] == "authentication_error"
    events = sorted(await tap.events(match, 2), key=lambda e: e.request_start)
    assert [(e.status, e.model) for e in events] == [("error", "claude-2"), ("rejected", "gpt-17")]


async def test_an_anthropic_stream_cut_short_is_charged_for_what_was_relayed(setup: Setup, tap: UsageTap) -> None:
    match = ours()
    setup.claude.token_delay_s = 0.1
    try:
        async with httpx.AsyncClient(
            base_url=setup.url, headers={"x-api-key": SECRET}
        ) as client:  # no anthropic-version: the gateway's default goes
            async with client.stream(
                "POST",
                "/v1/messages",
                json={"model": "claude", "max_tokens": 40, "stream": True, "messages": [{"role": "user", "content": "a b c d e"}]},
            ) as response:
                seen = 0
                async for line in response.aiter_lines():
                    seen += line.startswith("data: ") and '"text_delta"' in line
                    if seen == 3:
                        break
    finally:
        setup.claude.token_delay_s = 0.0
    assert setup.claude.headers_seen[-1]["anthropic-version"] == "2023-06-01"
    [event] = await tap.events(match, 1)
    assert (event.status, event.prompt_tokens, event.cached_prompt_tokens, event.usage_estimated) == ("client_disconnected", 5, 3, True)
    assert 3 <= event.completion_tokens <= 4 and event.latency_ms < 3000
