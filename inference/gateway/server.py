"""The gateway's HTTP server: uvicorn with httptools, plus the limits uvicorn lacks.

uvicorn arms its keep-alive timer only after a response, and any byte received disarms it, so
a client that opens a connection and sends its headers a byte at a time ("slowloris") holds a
connection for ever. ``header_timeout_s`` closes any connection whose request headers are not
complete that long after the connection opened or after its previous response ended.
``idle_timeout_s`` is uvicorn's keep-alive timeout; ``max_client_connections`` is uvicorn's
``limit_concurrency`` (503 beyond it). Slow request bodies are bounded by the gateway itself
(``body_timeout_s``, a 408).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gpuledger.sections.gateway import GatewayConfig
from inference.metering.metrics import CONNECTIONS_CLOSED

_HEADER_TIMEOUTS = CONNECTIONS_CLOSED.labels("header_timeout")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """httptools protocol that closes a connection whose request headers take longer than ``header_timeout_s``."""

    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm_header_timer()  # the first byte of a next request on a kept-alive connection
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            _HEADER_TIMEOUTS.inc()
            self.transport.close()


def protocol_for(config: GatewayConfig) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with this configuration's header timeout."""
    return type("GatewayHttpProtocol", (GuardedHttpToolsProtocol,), {"header_timeout_s": config.header_timeout_s})


def uvicorn_config(app: Any, config: GatewayConfig, *, host: str, port: int, **extra: Any) -> uvicorn.Config:
    """The uvicorn configuration the gateway runs under (also used by the tests, so they test what runs)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_for(config),
        timeout_keep_alive=config.idle_timeout_s,  # type: ignore[arg-type]  # uvicorn says int; it goes to loop.call_later (float)
        limit_concurrency=config.max_client_connections,
        log_level="warning",
        access_log=False,
        **extra,
    )
