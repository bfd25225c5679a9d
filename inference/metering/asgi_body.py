"""Small ASGI helpers shared by the middleware and the gateway: reading a request body and replaying it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Scope = MutableMapping[str, Any]


class BodyTooLarge(Exception):
    """The request body passed the configured limit."""


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


async def read_body(receive: Receive, limit: int | None = None) -> bytes:
    """The whole request body; raises ``BodyTooLarge`` past ``limit`` bytes, ``ClientGone`` on disconnect."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False) and (limit is None or len(body) <= limit):
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body", False):
        if limit is not None and size > limit:
            raise BodyTooLarge
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        parts.append(chunk)
        size += len(chunk)
    if limit is not None and size > limit:
        raise BodyTooLarge
    return b"".join(parts)


def header(scope: Scope, name: bytes) -> bytes | None:
    """A request header by lower-case name."""
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def bearer_token(scope: Scope) -> str | None:
    """The token of ``Authorization: Bearer <token>``, else of ``x-api-key`` (how Anthropic clients send it), if present."""
    value = header(scope, b"authorization")
    if value is None or not value[:7].lower() == b"bearer ":
        api_key = header(scope, b"x-api-key")
        if api_key is None:
            return None
        return api_key.strip().decode("latin-1") or None
    return value[7:].strip().decode("latin-1") or None
