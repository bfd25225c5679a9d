"""Reading OpenAI ``usage`` objects out of responses and SSE streams without parsing whole bodies.

Bodies can be megabytes (embeddings) while ``usage`` is a few dozen bytes near the end, so we
locate it and decode only that object; that keeps metering within its per-request budget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_DECODER = json.JSONDecoder()
_USAGE = b'"usage"'
_EVENT_END = b"\n\n"
_BACKSLASH = 0x5C


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one request, as the backend reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0


def usage_from_dict(usage: dict[str, Any]) -> Usage:
    """Map an OpenAI usage object (completion_tokens absent for embeddings) to ``Usage``."""
    details = usage.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_prompt_tokens=int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
    )


def find_usage(body: bytes) -> Usage | None:
    """The last non-null ``"usage": {...}`` member of a JSON document (or SSE event), if any."""
    end = len(body)
    while (at := body.rfind(_USAGE, 0, end)) != -1:
        end = at
        if at and body[at - 1] == _BACKSLASH:
            continue  # an escaped quote: the word is inside a string, not a key
        rest = body[at + len(_USAGE) :].lstrip()
        if rest[:1] != b":":
            continue
        value = rest[1:].lstrip()
        if value[:1] != b"{":
            return None  # "usage": null
        try:
            obj, _ = _DECODER.raw_decode(value.decode("utf-8", "replace"))
        except ValueError:
            return None
        return usage_from_dict(obj) if isinstance(obj, dict) else None
    return None


def _is_usage_only_chunk(event: bytes) -> bool:
    """True for the final ``{"choices": [], "usage": {...}}`` chunk that include_usage adds."""
    payload = event.partition(b"data:")[2].strip()
    try:
        chunk = json.loads(payload)
    except ValueError:
        return False
    return isinstance(chunk, dict) and chunk.get("choices") == [] and isinstance(chunk.get("usage"), dict)


class SseUsageScanner:
    """Follows an SSE stream chunk by chunk: remembers the last usage seen and can drop the usage-only chunk.

    Only complete events (ending in a blank line) are released, so an event split across
    network reads is never half-inspected; vLLM writes one event per chunk, so nothing is delayed.
    """

    __slots__ = ("_strip", "_tail", "usage")

    def __init__(self, *, strip_usage_chunk: bool) -> None:
        self._strip = strip_usage_chunk
        self._tail = b""
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to forward to the client now."""
        data = self._tail + chunk if self._tail else chunk
        cut = data.rfind(_EVENT_END)
        if cut == -1:
            self._tail = data
            return b""
        cut += len(_EVENT_END)
        complete, self._tail = data[:cut], data[cut:]
        return self._scan(complete) if _USAGE in complete else complete

    def flush(self) -> bytes:
        """Whatever is left when the stream ends (an unterminated last event)."""
        rest, self._tail = self._tail, b""
        return self._scan(rest) if _USAGE in rest else rest

    def _scan(self, complete: bytes) -> bytes:
        kept: list[bytes] = []
        for event in complete.split(_EVENT_END):
            if not event:
                continue
            if _USAGE in event and (usage := find_usage(event)) is not None:
                self.usage = usage
                if self._strip and _is_usage_only_chunk(event):
                    continue
            kept.append(event + _EVENT_END)
        return b"".join(kept)


def wants_usage_injection(request: dict[str, Any]) -> bool:
    """A streamed request whose client did not ask for the final usage chunk."""
    if request.get("stream") is not True:
        return False
    options = request.get("stream_options")
    return not (isinstance(options, dict) and options.get("include_usage") is True)


def rewrite_request(body: bytes, request: dict[str, Any], *, inject_usage: bool, model: str | None = None) -> bytes:
    """The request body with include_usage set and/or the model renamed; untouched bytes when neither applies.

    Adding stream_options when absent is a byte splice (no re-serialization of a long prompt).
    """
    renamed = model is not None and model != request.get("model")
    if not inject_usage and not renamed:
        return body
    if inject_usage and not renamed and "stream_options" not in request:
        brace = body.find(b"{")
        return body[: brace + 1] + b'"stream_options":{"include_usage":true},' + body[brace + 1 :]
    changed = dict(request)
    if renamed:
        changed["model"] = model
    if inject_usage:
        options = request.get("stream_options")
        changed["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return json.dumps(changed, ensure_ascii=False, separators=(",", ":")).encode()
