"""Reading OpenAI ``usage`` objects out of bodies without parsing them whole, and asking streams to carry usage.

Bodies can be megabytes (embeddings) while ``usage`` is a few dozen bytes near the end, so we
locate it and decode only that object; that keeps metering within its per-request budget.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

DECODER = json.JSONDecoder()
USAGE_KEY = b'"usage"'
_BACKSLASH = 0x5C
# The most tokens one request may report per count; anything above is clamped to it (and flagged).
# 10**9 is far beyond any context window, and 10**9 tokens times the largest price the importer
# accepts still fits the ledger's Decimal(38, 9).
MAX_TOKENS = 10**9


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one request, as the backend reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    estimated: bool = False  # not (only) as reported: counted, estimated or clamped by gpuledger


def token_count(value: Any) -> tuple[int, bool]:
    """A reported token count as an int in 0..MAX_TOKENS, and whether it had to be changed to fit.

    Absent or null is 0 (embeddings have no completion tokens). Negative, non-integral, non-finite,
    huge or non-numeric values (a buggy or hostile backend) are clamped into range or replaced by 0.
    """
    if value is None:
        return 0, False
    if type(value) is int:
        if 0 <= value <= MAX_TOKENS:
            return value, False
        return (0 if value < 0 else MAX_TOKENS), True
    if isinstance(value, float) and math.isfinite(value):
        return min(MAX_TOKENS, max(0, round(value))), True
    if isinstance(value, float) and value == math.inf:
        return MAX_TOKENS, True
    return 0, True


def usage_from_dict(usage: dict[str, Any]) -> Usage:
    """Map an OpenAI usage object (completion_tokens absent for embeddings) to ``Usage``, validated.

    A count outside 0..MAX_TOKENS or not an integer is clamped and the usage flagged ``estimated``.
    """
    return _usage_from_keys(usage, "prompt_tokens", "completion_tokens", "prompt_tokens_details")


def responses_usage(usage: dict[str, Any]) -> Usage:
    """OpenAI Responses: input (cached included), output, input_tokens_details.cached_tokens; validated like chat's."""
    return _usage_from_keys(usage, "input_tokens", "output_tokens", "input_tokens_details")


def _usage_from_keys(usage: dict[str, Any], prompt_key: str, completion_key: str, details_key: str) -> Usage:
    """Prompt (cached included), completion and ``details_key``.cached_tokens; clamped and flagged as ``usage_from_dict`` says."""
    details = usage.get(details_key)
    prompt, bad_prompt = token_count(usage.get(prompt_key))
    completion, bad_completion = token_count(usage.get(completion_key))
    cached, bad_cached = token_count(details.get("cached_tokens")) if isinstance(details, dict) else (0, False)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_prompt_tokens=min(cached, prompt),
        estimated=bad_prompt or bad_completion or bad_cached or cached > prompt,
    )


def find_usage(body: bytes) -> Usage | None:
    """The last non-null ``"usage": {...}`` member of a JSON document (or SSE event) as OpenAI chat usage, if any."""
    found = find_usage_dict(body)
    return usage_from_dict(found) if found is not None else None


def find_usage_dict(body: bytes) -> dict[str, Any] | None:
    """The last non-null ``"usage": {...}`` member of a JSON document (or SSE event), undecoded fields and all."""
    end = len(body)
    while (at := body.rfind(USAGE_KEY, 0, end)) != -1:
        end = at
        if at and body[at - 1] == _BACKSLASH:
            continue  # an escaped quote: the word is inside a string, not a key
        rest = body[at + len(USAGE_KEY) :].lstrip()
        if rest[:1] != b":":
            continue
        value = rest[1:].lstrip()
        if value[:1] != b"{":
            return None  # "usage": null
        try:
            obj, _ = DECODER.raw_decode(value.decode("utf-8", "replace"))
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None
    return None


@dataclass(frozen=True, slots=True)
class StreamUsage:
    """What metering adds to a stream's ``stream_options``, and so what the client must not be shown.

    ``final``: include_usage (the last, usage-only chunk). ``each``: vLLM's continuous_usage_stats
    (usage in every chunk), so a stream cut short still has exact prompt and completion counts.
    """

    final: bool
    each: bool


def stream_usage(request: dict[str, Any], *, continuous: bool) -> StreamUsage | None:
    """None unless streaming; ``continuous`` only for vLLM backends (OpenAI's API does not know the option)."""
    if request.get("stream") is not True:
        return None
    options = request.get("stream_options")
    options = options if isinstance(options, dict) else {}
    has_final = options.get("include_usage") is True
    has_each = has_final and options.get("continuous_usage_stats") is True
    return StreamUsage(final=not has_final, each=continuous and not has_each)


def rewrite_request(body: bytes, request: dict[str, Any], *, usage: StreamUsage | None, model: str | None = None) -> bytes:
    """The request body with stream_options added and/or the model renamed; untouched bytes when neither applies.

    Adding stream_options when absent is a byte splice (no re-serialization of a long prompt).
    """
    added: dict[str, bool] = {}
    if usage is not None and (usage.final or usage.each):
        added["include_usage"] = True
        if usage.each:
            added["continuous_usage_stats"] = True
    renamed = model is not None and model != request.get("model")
    if not added and not renamed:
        return body
    if added and not renamed and "stream_options" not in request:
        brace = body.find(b"{")
        return body[: brace + 1] + b'"stream_options":' + json.dumps(added, separators=(",", ":")).encode() + b"," + body[brace + 1 :]
    changed = dict(request)
    if renamed:
        changed["model"] = model
    if added:
        options = request.get("stream_options")
        changed["stream_options"] = {**(options if isinstance(options, dict) else {}), **added}
    return json.dumps(changed, ensure_ascii=False, separators=(",", ":")).encode()


def prompt_chars(request: dict[str, Any]) -> int:
    """Characters of text in messages / Responses input items (string or content-part lists), the prompt, system and instructions."""
    total = 0
    for field in ("messages", "input"):
        items = request.get(field)
        if isinstance(items, str):
            total += len(items)
        for item in items if isinstance(items, list) else ():
            total += _text_chars(item.get("content") if isinstance(item, dict) else item)
    for field in ("prompt", "system", "instructions"):
        total += _text_chars(request.get(field))
    return total


def _text_chars(content: Any) -> int:
    """A string, or the ``text`` of each part of a content list (OpenAI and Anthropic shapes)."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return 0


def estimated_prompt_tokens(request: dict[str, Any]) -> int:
    """OpenAI's rule of thumb, four characters a token: only for streams cut short before any usage arrived."""
    return math.ceil(prompt_chars(request) / 4)
