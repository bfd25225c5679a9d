"""Following an SSE stream as it is relayed: usage seen, tokens relayed, the final event, and hiding what metering asked for.

Bytes are forwarded as received; only OpenAI chat/completions events that carry usage the client
did not ask for are rewritten. Events end at a blank line, whichever of the SSE spec's line ends
(LF, CRLF, CR) the server uses; vLLM and OpenAI use LF, which takes a fast path. The Responses
and Anthropic Messages streams are only read (``inference.metering.dialects``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from inference.metering.dialects import OPENAI, Dialect, dialect_for
from inference.metering.openai_usage import (
    DECODER,
    USAGE_KEY,
    StreamUsage,
    Usage,
    estimated_prompt_tokens,
    find_usage,
    find_usage_dict,
    usage_from_dict,
)

_USAGE_MEMBER = b',"usage":'
_LF_END = b"\n\n"
# A blank line: two line ends in a row, a line end being CRLF, a CR not followed by LF, or LF.
_ANY_END = re.compile(rb"(?:\r\n|\r(?!\n)|\n){2}")
_DONE = b"[DONE]"
# What replaces per-chunk usage hidden from a client: vLLM's /v1/completions writes null when not asked; chat omits the member.
_BLANK = {"completions": b',"usage":null'}


def _last_event_end(data: bytes) -> int:
    """Offset just past the last complete event in ``data``, 0 when there is none yet."""
    if b"\r" not in data:
        cut = data.rfind(_LF_END)
        return 0 if cut == -1 else cut + len(_LF_END)
    ends = list(_ANY_END.finditer(data))
    return ends[-1].end() if ends else 0


def _split(complete: bytes) -> list[tuple[bytes, bytes]]:
    """(event, its terminator) pairs; joining them gives back ``complete`` byte for byte."""
    if b"\r" not in complete:
        return [(event, _LF_END) for event in complete.split(_LF_END)[:-1]]
    pairs, start = [], 0
    for end in _ANY_END.finditer(complete):
        pairs.append((complete[start : end.start()], end.group()))
        start = end.end()
    return pairs


def _carries_token(event: bytes, markers: tuple[bytes, ...]) -> bool:
    """Has a non-empty string value under one of the text keys (compact or spaced JSON): one token (vLLM and OpenAI send one per chunk)."""
    for marker in markers:
        at = event.find(marker)
        value = event[at + len(marker) : at + len(marker) + 3].lstrip(b" ") if at != -1 else b""
        if value[:1] == b'"' and value[1:2] not in (b'"', b""):
            return True
    return False


def _is_usage_only_chunk(event: bytes) -> bool:
    """True for the final ``{"choices": [], "usage": {...}}`` chunk that include_usage adds."""
    if b'"choices":[]' not in event and b'"choices": []' not in event:
        return False
    try:
        chunk = json.loads(event.partition(b"data:")[2])
    except ValueError:
        return False
    return isinstance(chunk, dict) and chunk.get("choices") == [] and isinstance(chunk.get("usage"), dict)


def _strip_usage(event: bytes, blank: bytes) -> tuple[bytes, Usage | None]:
    """The event without its per-chunk usage (``blank`` put in its place), and that usage.

    vLLM writes usage as the chunk's last member, compactly: a byte splice, no re-serialization.
    Anything else is parsed and re-written.
    """
    at = event.rfind(_USAGE_MEMBER)
    close = event.rfind(b"}")
    if at != -1 and close > at:
        value = event[at + len(_USAGE_MEMBER) : close].decode("utf-8", "replace")
        try:
            obj, used = DECODER.raw_decode(value)
        except ValueError:
            used = -1
        if used == len(value):
            return event[:at] + blank + event[close:], usage_from_dict(obj) if isinstance(obj, dict) else None
    head, _, payload = event.partition(b"data:")
    try:
        chunk: Any = json.loads(payload)
    except ValueError:
        return event, None
    if not isinstance(chunk, dict):
        return event, None
    usage = chunk.pop("usage", None)
    if blank:
        chunk["usage"] = None
    return head + b"data: " + json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode(), usage_from_dict(usage) if isinstance(
        usage, dict
    ) else None


class SseUsageScanner:
    """Remembers the last usage relayed and counts token chunks relayed; hides the usage metering added.

    Only complete events (ending in a blank line) are released, so an event split across
    network reads is never half-inspected; vLLM writes one event per chunk, so nothing is delayed.
    ``endpoint`` (the event's name for it) decides what a hidden per-chunk usage leaves behind;
    ``dialect`` is that endpoint's (looked up when not given).
    """

    __slots__ = ("_blank", "_dialect", "_hide", "_markers", "_orphan_lf", "_raw", "_tail", "finished", "relayed", "usage")

    def __init__(self, hide: StreamUsage | None, endpoint: str = "chat.completions", dialect: Dialect | None = None) -> None:
        self._hide = hide or StreamUsage(final=False, each=False)
        self._blank = _BLANK.get(endpoint, b"")
        self._dialect = dialect if dialect is not None else dialect_for(endpoint)
        self._markers = self._dialect.token_markers
        self._raw: dict[str, Any] = {}  # merged usage objects (Anthropic sends input and output usage in different events)
        self._tail = b""
        self._orphan_lf = False  # a dropped event ended on a CR whose LF is still to come
        self.usage: Usage | None = None
        self.relayed = 0
        self.finished = False  # the stream's final event has been released: [DONE], or a usage chunk the client asked for

    @property
    def rewrites(self) -> bool:
        """Whether output can differ from input (else callers may forward their own bytes)."""
        return self._hide.final or self._hide.each

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to forward to the client now."""
        data = self._tail + chunk if self._tail else chunk
        if self._orphan_lf and data:
            self._orphan_lf = False
            data = data.removeprefix(b"\n")
        cut = _last_event_end(data)
        if cut == 0:
            self._tail = data
            return b""
        complete, self._tail = data[:cut], data[cut:]
        return self._scan(complete)

    def flush(self) -> bytes:
        """Whatever is left when the stream ends (an unterminated last event)."""
        rest, self._tail = self._tail, b""
        return b"".join(event + end for event, end in self._scan_events([(rest, b"")])) if rest else rest

    def usage_or_estimate(self, request: dict[str, Any]) -> Usage:
        """The backend's last figures relayed; without any, token chunks relayed and an estimated prompt."""
        if self.usage is not None:
            if self._dialect.merges_usage and not self.finished and self.relayed > self.usage.completion_tokens:
                # Anthropic cut short: message_start's output count is a placeholder; the tokens relayed are the better figure
                return dataclasses.replace(self.usage, completion_tokens=self.relayed, estimated=True)
            return self.usage
        return Usage(prompt_tokens=estimated_prompt_tokens(request), completion_tokens=self.relayed, estimated=True)

    def _scan(self, complete: bytes) -> bytes:
        pairs = _split(complete)
        kept = self._scan_events(pairs)
        return complete if kept is pairs else b"".join(event + end for event, end in kept)

    def _scan_events(self, pairs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The events to forward: ``pairs`` itself when none changed."""
        kept: list[tuple[bytes, bytes]] = []
        changed = False
        for event, end in pairs:
            if _carries_token(event, self._markers):
                self.relayed += 1
            if self._dialect is not OPENAI:
                self._follow(event)
                kept.append((event, end))
                continue
            if USAGE_KEY not in event:
                if event.endswith(_DONE) and event.rpartition(b"data:")[2].strip() == _DONE:
                    self.finished = True
                kept.append((event, end))
                continue
            if _is_usage_only_chunk(event):
                self.usage = find_usage(event) or self.usage
                self.finished = not self._hide.final
                if self._hide.final:
                    changed = True
                    if event.startswith(b"\n"):  # the LF of the previous (kept) event's CRLF, its read having ended on the CR
                        kept.append((b"\n", b""))
                    self._orphan_lf = end.endswith(b"\r")
                    continue
            elif self._hide.each:
                stripped, usage = _strip_usage(event, self._blank)
                changed = changed or stripped != event
                event, self.usage = stripped, usage or self.usage
            elif (usage := find_usage(event)) is not None:
                self.usage = usage
            kept.append((event, end))
        return kept if changed else pairs

    def _follow(self, event: bytes) -> None:
        """Responses / Messages: note usage (merged where the API splits it) and the final event; nothing is rewritten."""
        if USAGE_KEY in event and (found := find_usage_dict(event)) is not None:
            self._raw = {**self._raw, **found} if self._dialect.merges_usage else found
            self.usage = self._dialect.usage(self._raw)
        if self._dialect.ends_stream(event):
            self.finished = True
