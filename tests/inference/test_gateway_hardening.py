"""Hostile backends and hostile clients against the gateway, served by the same uvicorn setup ``gpuledger gateway`` runs.

Backends are ``raw_upstream.RawUpstream`` (exact bytes: out-of-range usage, non-latin-1 headers,
broken HTTP) and ``fake_vllm.FakeVllm``; events go to the real Kafka. Each test proves the
process answers cleanly (never a 500), meters the request, and keeps publishing afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from gpuledger.sections.gateway import GatewayConfig
from gpuledger.settings import Settings
from inference.gateway.app import create_app
from inference.gateway.server import uvicorn_config
from inference.metering.openai_usage import MAX_TOKENS
from tests.inference.fake_vllm import FakeVllm
from tests.inference.raw_upstream import RawUpstream, http_reply, raw_upstream
from tests.inference.servers import serve, serve_config
from tests.inference.usage_tap import UsageTap
from tests.support import scraped

RUN = uuid.uuid4().hex[:8]
KEY_ID, SECRET = f"key-hostile-{RUN}", f"sk-hostile-{RUN}"
MAX_CONNECTIONS = 12


@dataclass
class Setup:
    raw: RawUpstream
    url: str


@pytest.fixture(scope="module")
def setup(stack_settings: Settings) -> Iterator[Setup]:
    with ExitStack() as stack:
        raw = stack.enter_context(raw_upstream())
        good = stack.enter_context(serve(FakeVllm().app()))
        config = GatewayConfig.model_validate(
            {
                "backends": [
                    {"name": "raw", "kind": "openai", "base_url": raw.url + "/v1"},
                    {"name": "good", "kind": "vllm", "base_url": good + "/v1"},
                ],
                "models": [
                    {"name": "raw-model", "targets": [{"backend": "raw"}]},
                    {"name": "good-model", "targets": [{"backend": "good"}]},
                ],
                "keys": [{"id": KEY_ID, "sha256": hashlib.sha256(SECRET.encode()).hexdigest(), "org": "hostile"}],
                "header_timeout_s": 1.0,
                "body_timeout_s": 1.0,
                "max_client_connections": MAX_CONNECTIONS,
            }
        )
        url = stack.enter_context(
            serve_config(uvicorn_config(create_app(config, stack_settings), config, host="127.0.0.1", port=0, timeout_graceful_shutdown=2))
        )
        yield Setup(raw, url)


@pytest.fixture
async def client(setup: Setup) -> Iterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=setup.url, headers={"Authorization": f"Bearer {SECRET}"}, timeout=10) as c:
        yield c  # type: ignore[misc]


def ours() -> object:
    start = datetime.now(UTC) - timedelta(milliseconds=1)
    return lambda e: e.key_id == KEY_ID and e.request_start >= start


def chat(model: str = "raw-model", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "a b"}], **extra}


def answer(usage: str) -> bytes:
    return (
        b'{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":'
        + usage.encode()
        + b"}"
    )


HOSTILE_USAGE = [  # what the backend reports -> the prompt tokens metered (always flagged as estimated)
    ('{"prompt_tokens":-5,"completion_tokens":2}', 0),
    ('{"prompt_tokens":1000000000000000000000000000000,"completion_tokens":2}', MAX_TOKENS),
    ('{"prompt_tokens":1e400,"completion_tokens":2}', MAX_TOKENS),
    ('{"prompt_tokens":3.6,"completion_tokens":2}', 4),
    ('{"prompt_tokens":"12","completion_tokens":2}', 0),
    ('{"prompt_tokens":NaN,"completion_tokens":2}', 0),
]


async def test_out_of_range_usage_is_clamped_flagged_and_publishing_goes_on(setup: Setup, client: httpx.AsyncClient, tap: UsageTap) -> None:
    match = ours()
    for usage, _ in HOSTILE_USAGE:
        setup.raw.reply = http_reply(answer(usage))
        response = await client.post("/v1/chat/completions", json=chat())
        assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "hi"
    setup.raw.reply = http_reply(
        b"data: " + answer('{"prompt_tokens":1e400,"completion_tokens":-1}').replace(b'"message"', b'"delta"') + b"\n\ndata: [DONE]\n\n",
        content_type=b"text/event-stream",
    )
    streamed = await client.post("/v1/chat/completions", json=chat(stream=True, stream_options={"include_usage": True}))
    assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
    setup.raw.reply = http_reply(answer('{"prompt_tokens":' + "9" * 5000 + ',"completion_tokens":2}'))  # past Python's int-parsing limit
    unparsable = await client.post("/v1/chat/completions", json=chat())
    assert unparsable.status_code == 200
    normal = await client.post("/v1/chat/completions", json=chat("good-model"))
    assert normal.status_code == 200
    events = sorted(await tap.events(match, len(HOSTILE_USAGE) + 3), key=lambda e: e.request_start)
    unreadable = events.pop(-2)
    assert (unreadable.prompt_tokens, unreadable.completion_tokens, unreadable.usage_estimated) == (1, 0, True), (
        "the prompt estimated, flagged"
    )
    assert [(e.prompt_tokens, e.completion_tokens, e.usage_estimated, e.status) for e in events[:-2]] == [
        (p, 2, True, "ok") for _, p in HOSTILE_USAGE
    ]
    assert (events[-2].prompt_tokens, events[-2].completion_tokens, events[-2].usage_estimated, events[-2].status) == (
        MAX_TOKENS,
        0,
        True,
        "ok",
    )
    assert (events[-1].prompt_tokens, events[-1].usage_estimated, events[-1].status) == (2, False, "ok"), "the publisher is still alive"


async def test_invalid_upstream_headers_are_dropped_valid_ones_pass(setup: Setup, client: httpx.AsyncClient, tap: UsageTap) -> None:
    match = ours()
    setup.raw.reply = http_reply(
        answer('{"prompt_tokens":2,"completion_tokens":1}'),
        headers=(
            "x-request-id: caf\u00e9-\u2603\r\n".encode()
            + b"x-ratelimit-remaining-tokens: 5\x01\r\nx-ratelimit-limit-requests: 10\r\n"
            + b"openai-processing-ms: "
            + b"9" * 600
            + b"\r\nset-cookie: a=b\r\n"
        ),
    )
    response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 200 and response.headers["x-ratelimit-limit-requests"] == "10"
    assert not {"x-request-id", "x-ratelimit-remaining-tokens", "openai-processing-ms", "set-cookie"} & set(response.headers)
    [event] = await tap.events(match, 1)
    assert (event.status, event.prompt_tokens) == ("ok", 2)


@pytest.mark.parametrize(
    "reply",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"trunc',
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n{}",
        b"HTTP/1.1 999 Weird\r\nContent-Length: 2\r\n\r\n{}",
        b"",
    ],
)
async def test_anything_an_upstream_sends_is_a_clean_502_and_metered(
    setup: Setup, client: httpx.AsyncClient, tap: UsageTap, reply: bytes
) -> None:
    match = ours()
    setup.raw.reply = reply
    response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 502 and response.headers["content-type"] == "application/json", response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    [event] = await tap.events(match, 1)
    assert (event.status, event.deployment) == ("error", "raw")


async def test_an_overlong_model_name_is_refused_and_never_stored_whole(client: httpx.AsyncClient, tap: UsageTap) -> None:
    match = ours()
    response = await client.post("/v1/chat/completions", json=chat("m" * 20_000))
    assert (
        response.status_code == 400
        and response.json()["error"]["code"] == "model_too_long"
        and "256" in response.json()["error"]["message"]
    )
    [event] = await tap.events(match, 1)
    assert (event.status, len(event.model)) == ("rejected", 256)


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes the connection within ``seconds``."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


async def test_slow_and_silent_clients_are_disconnected_after_the_header_timeout(setup: Setup) -> None:
    before = await asyncio.to_thread(scraped, setup.url, "gpuledger_gateway_connections_closed_total", reason="header_timeout")
    port = int(setup.url.rsplit(":", 1)[1])
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    started = time.monotonic()
    for sock in slow:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    for _ in range(3):  # a header byte every 0.3 s: each one used to keep the connection alive for ever
        await asyncio.sleep(0.3)
        for sock in slow:
            sock.sendall(b"X")
    closed = [await asyncio.to_thread(closed_within, sock, 3.0) for sock in silent + slow]
    assert all(closed) and time.monotonic() - started < 6
    for sock in silent + slow:
        sock.close()
    after = await asyncio.to_thread(scraped, setup.url, "gpuledger_gateway_connections_closed_total", reason="header_timeout")
    assert after >= before + 6


async def test_a_body_that_does_not_arrive_is_408(setup: Setup) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(setup.url.rsplit(":", 1)[1]))
    writer.write(
        f'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"model"'.encode()
    )
    await writer.drain()
    started = time.monotonic()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 408") and 0.9 < time.monotonic() - started < 3
    writer.close()


async def test_connections_beyond_the_bound_get_503(setup: Setup) -> None:
    port = int(setup.url.rsplit(":", 1)[1])
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS)]
    try:
        await asyncio.sleep(0.2)  # let the gateway accept them all
        async with httpx.AsyncClient(base_url=setup.url, headers={"Authorization": f"Bearer {SECRET}"}) as c:
            over = await c.post("/v1/chat/completions", json=chat("good-model"))
    finally:
        for sock in held:
            sock.close()
    assert over.status_code == 503
    await asyncio.sleep(0.2)
    async with httpx.AsyncClient(base_url=setup.url, headers={"Authorization": f"Bearer {SECRET}"}) as c:
        assert (await c.post("/v1/chat/completions", json=chat("good-model"))).status_code == 200


async def test_a_backend_breaking_off_after_done_leaves_the_stream_ok(setup: Setup, client: httpx.AsyncClient, tap: UsageTap) -> None:
    """The client had its whole answer; only the backend's end of body was lost: not an error."""
    match = ours()
    chunk = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    usage = b'data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1}}\n\n'
    body = chunk + usage + b"data: [DONE]\n\n"
    setup.raw.reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: " + str(len(body) + 1000).encode() + b"\r\n\r\n" + body
    )
    response = await client.post("/v1/chat/completions", json=chat(stream=True))
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n") and '"error"' not in response.text
    [event] = await tap.events(match, 1)
    assert (event.status, event.prompt_tokens, event.completion_tokens) == ("ok", 2, 1)
