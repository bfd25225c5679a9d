"""Which upstream response headers reach the client, and in what form.

Clients pace themselves by the provider's rate-limit headers (OpenAI's SDKs honour
``retry-after-ms`` and ``retry-after``), and operators quote request ids, so those pass
through; everything else (cookies, server banners, framing) is the gateway's own business.
Values are passed only when they are visible ASCII (RFC 9110 field values, minus obs-text)
and at most ``MAX_VALUE_BYTES`` long: a non-latin-1 or control-character value from a buggy
backend is dropped, never a reason to fail the response.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Exact names passed through (lower case).
PASSED = frozenset(
    {
        b"x-request-id",
        b"retry-after",
        b"retry-after-ms",
        b"openai-processing-ms",
        b"openai-version",
        b"anthropic-organization-id",
        b"request-id",
    }
)
# Name prefixes passed through: OpenAI's and Anthropic's rate-limit families.
PASSED_PREFIXES = (b"x-ratelimit-", b"anthropic-ratelimit-")
MAX_VALUE_BYTES = 512
_VISIBLE = re.compile(rb"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


def clean_value(value: bytes) -> bytes | None:
    """The value if it is safe to send on (visible ASCII, inner spaces allowed, bounded), else None."""
    value = value.strip(b" \t")
    if len(value) > MAX_VALUE_BYTES or not _VISIBLE.fullmatch(value):
        return None
    return value


def passed_through(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The allowlisted headers of an upstream response, cleaned (``raw``: aiohttp's ``raw_headers``)."""
    out = []
    for name, value in raw:
        lower = name.lower()
        if lower in PASSED or lower.startswith(PASSED_PREFIXES):
            clean = clean_value(value)
            if clean is not None:
                out.append((lower, clean))
    return out
