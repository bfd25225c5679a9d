"""OpenAI-style error bodies, so OpenAI SDKs surface the message and the status maps to the right exception."""

from __future__ import annotations

import json

from inference.metering.asgi_body import Send

JSON_HEADERS = [(b"content-type", b"application/json")]


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> bytes:
    """``{"error": {"message", "type", "param", "code"}}``."""
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}}).encode()


async def send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A complete JSON response (``headers``: extra ones)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *(headers or ())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
