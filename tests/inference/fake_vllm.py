"""A stand-in for vLLM's OpenAI server, for tests: no GPU and no vLLM are available on the test machines.

It reproduces what metering depends on byte for byte (vLLM 0.8-0.10 shapes): compact JSON,
``data: {json}\\n\\n`` SSE framing, a role chunk first, ``logprobs: null`` on every choice,
``stop_reason`` on the finishing choice, the usage-only chunk (``"choices":[]``) only when
``stream_options.include_usage`` is true, usage in every chunk as well when ``continuous_usage_stats``
is also true (cumulative counts; chat from its role chunk on, completions with
``prompt_tokens_details: null``), ``data: [DONE]\\n\\n`` last, ``prompt_tokens_details`` only when
tokens were cached, vLLM's error body, and the X-Request-Id of ``--enable-request-id-headers``.
Tokens are whitespace-separated words, so tests know the exact counts. Behaviour (delay, 500s, hangs) is set per server instance.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def dumps(obj: Any) -> str:
    """pydantic's ``model_dump_json`` spacing: none."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def prompt_tokens(request: dict[str, Any]) -> int:
    """Words of the prompt, the messages' contents or the embedding input."""
    if "messages" in request:
        return sum(len(str(m.get("content", "")).split()) for m in request["messages"])
    text = request.get("prompt", request.get("input", ""))
    return sum(len(str(t).split()) for t in text) if isinstance(text, list) else len(str(text).split())


@dataclass
class FakeVllm:
    """One fake server; tweak the attributes between requests to change its behaviour."""

    models: tuple[str, ...] = ()  # empty: serve any model name
    delay_s: float = 0.0  # before the response starts
    token_delay_s: float = 0.0  # between streamed tokens
    fail_status: int | None = None  # answer every request with this error status
    hang: bool = False  # never answer (until the client gives up)
    cached_tokens: int = 0
    default_max_tokens: int = 5
    request_id_headers: bool = False  # vLLM's --enable-request-id-headers
    done_delay_s: float = 0.0  # between ``data: [DONE]`` and the end of the body (what made SDK clients look disconnected)
    extra_headers: dict[str, str] = field(default_factory=dict)  # on every response, e.g. a provider's x-ratelimit-*
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers_seen: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> Starlette:
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
                Route("/v1/models", self.list_models, methods=["GET"]),
                Route("/health", lambda _: Response(status_code=200), methods=["GET"]),
            ]
        )
        app.add_middleware(RequestIdHeaders, fake=self)
        return app

    async def list_models(self, _: Request) -> JSONResponse:
        return JSONResponse(
            {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "vllm"} for m in self.models]}
        )

    async def chat(self, request: Request) -> Response:
        return await self._serve(request, "chatcmpl", "chat.completion")

    async def completions(self, request: Request) -> Response:
        return await self._serve(request, "cmpl", "text_completion")

    async def embeddings(self, request: Request) -> Response:
        body, early = await self._admit(request)
        if early is not None:
            return early
        n = prompt_tokens(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"index": i, "object": "embedding", "embedding": [0.125] * 16} for i in range(len(inputs))]
        return self._json(
            {
                "id": f"embd-{uuid.uuid4().hex}",
                "object": "list",
                "created": int(time.time()),
                "model": body["model"],
                "data": data,
                "usage": self._usage(n, 0, embeddings=True),
            }
        )

    async def _admit(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        raw = await request.body()
        self.headers_seen.append(dict(request.headers))
        try:
            body = json.loads(raw)
        except ValueError:
            return {}, self._error(400, "BadRequestError", "Invalid JSON body")
        self.requests.append(body)
        if self.hang:
            while not await request.is_disconnected():
                await asyncio.sleep(0.02)
            return body, Response(status_code=499)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_status:
            return body, self._error(self.fail_status, "InternalServerError", "fake engine failure")
        if self.models and body.get("model") not in self.models:
            return body, self._error(404, "NotFoundError", f"The model `{body.get('model')}` does not exist.")
        return body, None

    async def _serve(self, request: Request, prefix: str, obj: str) -> Response:
        body, early = await self._admit(request)
        if early is not None:
            return early
        rid, created, model = f"{prefix}-{uuid.uuid4().hex}", int(time.time()), body["model"]
        n_prompt, n_out = prompt_tokens(body), int(body.get("max_tokens") or self.default_max_tokens)
        tokens = [f"tok{i} " for i in range(n_out)]
        if body.get("stream"):
            chunk_obj = "chat.completion.chunk" if obj == "chat.completion" else obj
            options = body.get("stream_options") or {}
            include = bool(options.get("include_usage"))
            each = include and bool(options.get("continuous_usage_stats"))
            stream = self._chat_stream if prefix == "chatcmpl" else self._completion_stream
            return StreamingResponse(
                stream(rid, chunk_obj, created, model, tokens, n_prompt, include, each), media_type="text/event-stream"
            )
        usage = self._usage(n_prompt, n_out)
        text = "".join(tokens)
        if prefix == "chatcmpl":
            choice = {
                "index": 0,
                "message": {"role": "assistant", "reasoning_content": None, "content": text, "tool_calls": []},
                "logprobs": None,
                "finish_reason": "length",
                "stop_reason": None,
            }
            return self._json(
                {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice], "usage": usage, "prompt_logprobs": None}
            )
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length", "stop_reason": None, "prompt_logprobs": None}
        return self._json({"id": rid, "object": obj, "created": created, "model": model, "choices": [choice], "usage": usage})

    async def _chat_stream(
        self, rid: str, obj: str, created: int, model: str, tokens: list[str], n_prompt: int, include: bool, each: bool
    ) -> AsyncIterator[str]:
        """Chunks are dumped with exclude_unset: ``usage`` appears only when continuous stats set it."""
        head = {"id": rid, "object": obj, "created": created, "model": model}
        role = {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]}
        yield f"data: {dumps({**role, 'usage': _running(n_prompt, 0)} if each else role)}\n\n"
        for i, token in enumerate(tokens):
            await self._pace()
            choice: dict[str, Any] = {"index": 0, "delta": {"content": token}, "logprobs": None, "finish_reason": None}
            if i == len(tokens) - 1:
                choice.update(finish_reason="length", stop_reason=None)
            chunk = {**head, "choices": [choice]}
            yield f"data: {dumps({**chunk, 'usage': _running(n_prompt, i + 1)} if each else chunk)}\n\n"
        if include:
            yield f"data: {dumps({**head, 'choices': [], 'usage': self._usage(n_prompt, len(tokens), final_chunk=True)})}\n\n"
        yield "data: [DONE]\n\n"
        if self.done_delay_s:
            await asyncio.sleep(self.done_delay_s)

    async def _completion_stream(
        self, rid: str, obj: str, created: int, model: str, tokens: list[str], n_prompt: int, include: bool, each: bool
    ) -> AsyncIterator[str]:
        """Chunks are dumped with exclude_unset=False: ``usage`` is always there, null unless continuous stats set it."""
        head = {"id": rid, "object": obj, "created": created, "model": model}
        for i, token in enumerate(tokens):
            await self._pace()
            last = i == len(tokens) - 1
            choice = {"index": 0, "text": token, "logprobs": None, "finish_reason": "length" if last else None, "stop_reason": None}
            usage = {**_running(n_prompt, i + 1), "prompt_tokens_details": None} if each else None
            yield f"data: {dumps({**head, 'choices': [choice], 'usage': usage})}\n\n"
        if include:
            yield f"data: {dumps({**head, 'choices': [], 'usage': self._usage(n_prompt, len(tokens), final_chunk=True)})}\n\n"
        yield "data: [DONE]\n\n"
        if self.done_delay_s:
            await asyncio.sleep(self.done_delay_s)

    async def _pace(self) -> None:
        if self.token_delay_s:
            await asyncio.sleep(self.token_delay_s)

    def _usage(self, n_prompt: int, n_out: int, *, embeddings: bool = False, final_chunk: bool = False) -> dict[str, Any]:
        """vLLM's UsageInfo: field order prompt, total, completion; details null unless cached (dropped in the stream chunk)."""
        usage: dict[str, Any] = {"prompt_tokens": n_prompt, "total_tokens": n_prompt + n_out, "completion_tokens": n_out}
        details = {"cached_tokens": self.cached_tokens} if self.cached_tokens and not embeddings else None
        if details is not None or not final_chunk:
            usage["prompt_tokens_details"] = details
        return usage

    @staticmethod
    def _json(content: dict[str, Any]) -> Response:
        return Response(dumps(content), media_type="application/json")

    @staticmethod
    def _error(status: int, kind: str, message: str) -> JSONResponse:
        return JSONResponse({"object": "error", "message": message, "type": kind, "param": None, "code": status}, status_code=status)


def _running(n_prompt: int, n_out: int) -> dict[str, int]:
    """A continuous-usage-stats UsageInfo: counts so far, in vLLM's field order."""
    return {"prompt_tokens": n_prompt, "total_tokens": n_prompt + n_out, "completion_tokens": n_out}


class RequestIdHeaders:
    """vLLM's ``--enable-request-id-headers``: X-Request-Id echoed from the request or a fresh uuid hex, when switched on; plus ``extra_headers``."""

    def __init__(self, app: Any, fake: FakeVllm) -> None:
        self.app, self.fake = app, fake

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not (self.fake.request_id_headers or self.fake.extra_headers):
            await self.app(scope, receive, send)
            return
        added = [(k.lower().encode(), v.encode()) for k, v in self.fake.extra_headers.items()]
        if self.fake.request_id_headers:
            added.append((b"x-request-id", dict(scope["headers"]).get(b"x-request-id") or uuid.uuid4().hex.encode()))

        async def with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        await self.app(scope, receive, with_id)
