"""A client that hangs up mid-stream, as impatient users do: the case metering must still charge right."""

from __future__ import annotations

import json

import httpx


async def hang_up_after(client: httpx.AsyncClient, body: dict[str, object], tokens: int) -> list[str]:
    """Stream a chat completion and disconnect once ``tokens`` content chunks have arrived; returns the lines read."""
    lines: list[str] = []
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        seen = 0
        async for line in response.aiter_lines():
            lines.append(line)
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                seen += 1
                if seen == tokens:
                    break
    return lines
