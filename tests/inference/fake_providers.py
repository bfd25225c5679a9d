"""Stand-ins for OpenAI's Responses API and Anthropic's Messages API, for tests (neither is reachable from here).

They reproduce what clients and metering depend on, in each provider's wire format:

- OpenAI Responses: non-streamed answers pretty-printed with two-space indents (as api.openai.com
  sends them); streams as ``event: <type>\\ndata: <compact json>\\n\\n`` with ``sequence_number``,
  the lifecycle ``response.created`` → ``in_progress`` → ``output_item.added`` →
  ``content_part.added`` → ``output_text.delta``… → ``output_text.done`` → ``content_part.done`` →
  ``output_item.done`` → ``response.completed`` (the only event with usage), no ``[DONE]``;
  ``input_tokens`` include cached ones (``input_tokens_details.cached_tokens``); OpenAI's error
  body; ``x-request-id``, ``openai-processing-ms`` and ``x-ratelimit-*`` headers.
- Anthropic Messages: compact JSON; streams ``message_start`` (input usage, ``output_tokens: 1``),
  ``content_block_start``, ``ping`` (``{"type": "ping"}``, spaced, as Anthropic sends it),
  ``content_block_delta``…, ``content_block_stop``, ``message_delta`` (cumulative output usage),
  ``message_stop``; ``input_tokens`` exclude cache reads; ``{"type":"error","error":{...},"request_id"}``
  errors; ``request-id`` and ``anthropic-ratelimit-*`` headers; the key must come as ``x-api-key``.

Tokens are whitespace-separated words of the input, so tests know exact counts.
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
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


def compact(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def words(value: Any) -> int:
    """Whitespace-separated words in a string, message list or content-part list."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(words(v.get("content", v.get("text", "")) if isinstance(v, dict) else v) for v in value)
    return 0


@dataclass
class FakeResponses:
    """OpenAI's ``POST /v1/responses``."""

    cached_tokens: int = 0
    done_delay_s: float = 0.0  # after response.completed, before the body ends
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers_seen: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/responses", self.create, methods=["POST"])])

    async def create(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.requests.append(body)
        self.headers_seen.append(dict(request.headers))
        headers = {"x-request-id": f"req_{uuid.uuid4().hex}", "openai-processing-ms": "42", "x-ratelimit-remaining-tokens": "149990"}
        if body.get("model") != "gpt-5":
            error = {
                "error": {
                    "message": f"The requested model '{body.get('model')}' does not exist.",
                    "type": "invalid_request_error",
                    "param": "model",
                    "code": "model_not_found",
                }
            }
            return Response(json.dumps(error, indent=2), 404, headers=headers, media_type="application/json")
        n_in, n_out = words(body.get("input")) + words(body.get("instructions")), int(body.get("max_output_tokens") or 5)
        tokens = [f"tok{i} " for i in range(n_out)]
        rid, mid, created = f"resp_{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex}", int(time.time())
        usage = {
            "input_tokens": n_in,
            "input_tokens_details": {"cached_tokens": min(self.cached_tokens, n_in)},
            "output_tokens": n_out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": n_in + n_out,
        }
        text = "".join(tokens)
        item = {
            "id": mid,
            "type": "message",
            "status": "completed",
            "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}],
            "role": "assistant",
        }
        done = _response(rid, created, body, "completed", [item], usage)
        if not body.get("stream"):
            return Response(json.dumps(done, indent=2), headers=headers, media_type="application/json")
        return StreamingResponse(
            self._events(rid, mid, created, body, tokens, done), headers=headers, media_type="text/event-stream; charset=utf-8"
        )

    async def _events(
        self, rid: str, mid: str, created: int, body: dict[str, Any], tokens: list[str], done: dict[str, Any]
    ) -> AsyncIterator[str]:
        started = _response(rid, created, body, "in_progress", [], None)
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        where = {"item_id": mid, "output_index": 0, "content_index": 0}
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": started},
            {"type": "response.in_progress", "response": started},
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {"id": mid, "type": "message", "status": "in_progress", "content": [], "role": "assistant"},
            },
            {"type": "response.content_part.added", **where, "part": part},
            *({"type": "response.output_text.delta", **where, "delta": t, "logprobs": [], "obfuscation": "x"} for t in tokens),
            {"type": "response.output_text.done", **where, "text": "".join(tokens), "logprobs": []},
            {"type": "response.content_part.done", **where, "part": {**part, "text": "".join(tokens)}},
            {"type": "response.output_item.done", "output_index": 0, "item": done["output"][0]},
            {"type": "response.completed", "response": done},
        ]
        for number, event in enumerate(events):
            kind = event.pop("type")
            yield f"event: {kind}\ndata: {compact({'type': kind, 'sequence_number': number, **event})}\n\n"
        if self.done_delay_s:
            await asyncio.sleep(self.done_delay_s)


def _response(rid: str, created: int, body: dict[str, Any], status: str, output: list[Any], usage: dict[str, Any] | None) -> dict[str, Any]:
    """The Response object, fields in OpenAI's order."""
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": body["model"],
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": None,
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


@dataclass
class FakeAnthropic:
    """Anthropic's ``POST /v1/messages``."""

    api_key: str = ""
    cached_tokens: int = 0  # of the input, read from Anthropic's prompt cache
    token_delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers_seen: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/messages", self.create, methods=["POST"])])

    def _error(self, status: int, kind: str, message: str) -> Response:
        return Response(
            compact({"type": "error", "error": {"type": kind, "message": message}, "request_id": f"req_{uuid.uuid4().hex[:24]}"}),
            status,
            media_type="application/json",
            headers={"request-id": f"req_{uuid.uuid4().hex[:24]}"},
        )

    async def create(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.requests.append(body)
        self.headers_seen.append(dict(request.headers))
        if request.headers.get("x-api-key") != self.api_key:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if "anthropic-version" not in request.headers:
            return self._error(400, "invalid_request_error", "anthropic-version: header is required")
        if body.get("model") != "claude-sonnet-4-5":
            return self._error(404, "not_found_error", f"model: {body.get('model')}")
        n_in = words(body.get("messages")) + words(body.get("system"))
        cached = min(self.cached_tokens, n_in)
        n_out = int(body["max_tokens"])
        tokens = [f"tok{i} " for i in range(n_out)]
        usage = {
            "input_tokens": n_in - cached,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": n_out,
            "service_tier": "standard",
        }
        message = {
            "id": f"msg_01{uuid.uuid4().hex[:22]}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": "".join(tokens)}],
            "stop_reason": "max_tokens",
            "stop_sequence": None,
            "usage": usage,
        }
        headers = {
            "request-id": f"req_{uuid.uuid4().hex[:24]}",
            "anthropic-organization-id": str(uuid.uuid4()),
            "anthropic-ratelimit-requests-remaining": "49",
        }
        if not body.get("stream"):
            return Response(compact(message), headers=headers, media_type="application/json")
        return StreamingResponse(self._events(message, tokens), headers=headers, media_type="text/event-stream; charset=utf-8")

    async def _events(self, message: dict[str, Any], tokens: list[str]) -> AsyncIterator[str]:
        start = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 1}}
        start = {"model": start.pop("model"), **start}  # Anthropic puts the model first in message_start
        yield f"event: message_start\ndata: {compact({'type': 'message_start', 'message': start})}\n\n"
        yield f"event: content_block_start\ndata: {compact({'type': 'content_block_start', 'index': 0, 'content_block': {'type': 'text', 'text': ''}})}\n\n"
        yield 'event: ping\ndata: {"type": "ping"}\n\n'
        for token in tokens:
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            yield f"event: content_block_delta\ndata: {compact({'type': 'content_block_delta', 'index': 0, 'delta': {'type': 'text_delta', 'text': token}})}\n\n"
        yield f"event: content_block_stop\ndata: {compact({'type': 'content_block_stop', 'index': 0})}\n\n"
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            "usage": {"output_tokens": len(tokens)},
        }
        yield f"event: message_delta\ndata: {compact(delta)}\n\n"
        yield f"event: message_stop\ndata: {compact({'type': 'message_stop'})}\n\n"
