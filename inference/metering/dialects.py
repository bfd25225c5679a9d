"""What differs between the metered APIs: OpenAI chat/completions/embeddings, OpenAI Responses, Anthropic Messages.

Each names its usage fields differently, ends its streams differently, streams text under
different keys, and has its own error shape (the SDKs parse errors by that shape):

- OpenAI chat / completions / embeddings: ``usage.prompt_tokens``, ``completion_tokens``,
  ``prompt_tokens_details.cached_tokens``; streams end with ``data: [DONE]``; usage can be asked
  for with ``stream_options`` (handled in ``openai_usage``/``sse_usage``).
- OpenAI Responses: ``usage.input_tokens`` (cached ones included, ``input_tokens_details.cached_tokens``),
  ``output_tokens``; the stream's last event is ``response.completed`` (or ``.incomplete``/``.failed``),
  which carries the usage; text arrives as ``"delta":"..."``.
- Anthropic Messages: ``usage.input_tokens`` excludes cached ones (``cache_read_input_tokens`` and
  ``cache_creation_input_tokens`` come on top), ``output_tokens``; the stream's ``message_start``
  carries input usage and each ``message_delta`` the cumulative output, so usage objects merge;
  the last event is ``message_stop``; errors are ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from inference.metering.errors import error_body as openai_error_body
from inference.metering.openai_usage import Usage, estimated_prompt_tokens, find_usage_dict, responses_usage, token_count, usage_from_dict

# Anthropic's error types by HTTP status (its SDK maps them back to exception classes by status).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_usage(usage: dict[str, Any]) -> Usage:
    """Anthropic: prompt = input + cache reads + cache writes (all were read by the model); cached = cache reads."""
    counts = [
        token_count(usage.get(name)) for name in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "output_tokens")
    ]
    (fresh, _), (read, _), (written, _), (output, _) = counts
    prompt, bad_sum = token_count(fresh + read + written)
    return Usage(prompt, output, min(read, prompt), bad_sum or any(bad for _, bad in counts))


class ErrorStyle(Enum):
    """How an API shapes errors, and so the event that ends a stream that broke after it started."""

    OPENAI = "openai"  # {"error": {...}}; a broken stream ends with a data: event holding that document
    RESPONSES = "responses"  # OpenAI's documents; a broken stream ends with a typed `event: error`
    ANTHROPIC = "anthropic"  # {"type": "error", "error": {"type", "message"}}, also as the stream's `event: error`


@dataclass(frozen=True, slots=True)
class Dialect:
    """One API's wire conventions, as far as metering and error answers need them."""

    name: str
    usage: Callable[[dict[str, Any]], Usage]
    token_markers: tuple[bytes, ...]  # JSON keys whose non-empty string value is one streamed token
    final_events: tuple[bytes, ...] = ()  # SSE payload types that end a stream (OpenAI chat: [DONE] instead)
    merges_usage: bool = False  # later usage objects carry only what changed (Anthropic)
    asks_stream_usage: bool = False  # stream_options.include_usage can be added (OpenAI chat/completions)
    error_style: ErrorStyle = ErrorStyle.OPENAI
    forwarded: tuple[bytes, ...] = ()  # client headers this API needs upstream
    default_headers: tuple[tuple[str, str], ...] = ()  # sent when the client did not send them

    def find_usage(self, body: bytes) -> Usage | None:
        """The usage of a whole JSON answer."""
        found = find_usage_dict(body)
        return self.usage(found) if found is not None else None

    def answer_usage(self, body: bytes, request: dict[str, Any]) -> Usage:
        """A successful answer's usage; when it has none or none that parses, the prompt estimated and flagged."""
        return self.find_usage(body) or Usage(prompt_tokens=estimated_prompt_tokens(request), estimated=True)

    def error_body(self, message: str, kind: str, code: str | None = None, param: str | None = None, status: int = 400) -> bytes:
        """This API's error document (OpenAI's ``{"error": {...}}`` or Anthropic's ``{"type": "error", ...}``)."""
        if self.error_style is ErrorStyle.ANTHROPIC:
            return json.dumps({"type": "error", "error": {"type": _anthropic_type(status), "message": message}}).encode()
        return openai_error_body(message, kind, code, param)

    def stream_error(self, message: str, code: str) -> bytes:
        """An error event ending a stream that broke after it started."""
        if self.error_style is ErrorStyle.ANTHROPIC:
            return b"event: error\ndata: " + self.error_body(message, "api_error", status=500) + b"\n\n"
        if self.error_style is ErrorStyle.RESPONSES:  # a typed error event
            return (
                b"event: error\ndata: "
                + json.dumps({"type": "error", "code": code, "message": message, "param": None, "sequence_number": 0}).encode()
                + b"\n\n"
            )
        return b"data: " + self.error_body(message, "upstream_error", code) + b"\n\n"

    def normalized_error(self, content: bytes, status: int) -> bytes:
        """An upstream 4xx body in this API's shape: kept when already so, else wrapped (vLLM's, plain text)."""
        try:
            parsed = json.loads(content)
        except ValueError:
            parsed = None
        if (
            isinstance(parsed, dict)
            and isinstance(parsed.get("error"), dict)
            and (self.error_style is not ErrorStyle.ANTHROPIC or parsed.get("type") == "error")
        ):
            return content
        message = parsed.get("message") if isinstance(parsed, dict) else None
        if message is None and isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            message = parsed["error"].get("message")
        text = str(message or content[:500].decode("utf-8", "replace") or f"upstream HTTP {status}")
        return self.error_body(text, "invalid_request_error" if status < 500 else "upstream_error", str(status), status=status)

    def ends_stream(self, event: bytes) -> bool:
        """Whether this SSE event is the stream's final one (compact or spaced JSON)."""
        return any(b'"type":"' + t + b'"' in event or b'"type": "' + t + b'"' in event for t in self.final_events)


def _anthropic_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


OPENAI = Dialect("openai", usage_from_dict, (b'"content":', b'"text":', b'"reasoning_content":', b'"arguments":'), asks_stream_usage=True)
RESPONSES = Dialect(
    "responses",
    responses_usage,
    (b'"delta":',),
    final_events=(b"response.completed", b"response.incomplete", b"response.failed"),
    error_style=ErrorStyle.RESPONSES,
)
MESSAGES = Dialect(
    "messages",
    anthropic_usage,
    (b'"text":', b'"partial_json":', b'"thinking":'),
    final_events=(b"message_stop",),
    merges_usage=True,
    error_style=ErrorStyle.ANTHROPIC,
    forwarded=(b"anthropic-version", b"anthropic-beta"),
    default_headers=(("anthropic-version", "2023-06-01"),),
)
_BY_ENDPOINT = {"responses": RESPONSES, "messages": MESSAGES}


def dialect_for(endpoint: str) -> Dialect:
    """The dialect of an event endpoint name (``chat.completions``, ``responses``, ``messages``...)."""
    return _BY_ENDPOINT.get(endpoint, OPENAI)
