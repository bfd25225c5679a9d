"""Sending a request to a model's upstreams in order, falling back on connect errors, timeouts and 5xx/429.

Only failures before any byte reaches the client can fall back; a stream that breaks midway is
ended for that client (and its event says error).

The client is aiohttp's: its C HTTP parser and dict-of-deques pool cost a fraction of the CPU
httpx/httpcore spent per request (measured: see the README's gateway benchmark).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import aiohttp
import structlog
from yarl import URL

from gpuledger.sections.gateway import GatewayConfig
from inference.gateway.routing import Upstream
from inference.gateway.upstream_headers import passed_through
from inference.metering.metrics import UPSTREAM_DURATION, UPSTREAM_RESPONSES, labelled

log = structlog.get_logger()
Headers = Sequence[tuple[str, str]]


@dataclass(slots=True)
class UpstreamFailure(Exception):
    """Every upstream failed; ``status``/``message`` are what the client gets, about the last attempt."""

    status: int
    message: str
    code: str
    upstream: Upstream | None = None
    body: bytes | None = field(default=None)


@dataclass(slots=True)
class Answer:
    """The upstream that answered, its status, the headers passed on to the client, and its body (None while a stream is still open)."""

    upstream: Upstream
    status: int
    headers: list[tuple[bytes, bytes]]
    content: bytes | None
    _response: aiohttp.ClientResponse

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (de-chunked, never decompressed)."""
        return self._response.content.iter_any()

    def close(self) -> None:
        """Back to the pool when read to the end; otherwise the connection is closed, which tells vLLM to abort."""
        self._response.release()


class UpstreamClient:
    """One pool of keep-alive connections to all backends (reused connections are what keep added latency low)."""

    def __init__(self, config: GatewayConfig) -> None:
        connector = aiohttp.TCPConnector(limit=config.max_connections, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        self._fallback = frozenset(config.fallback_statuses)
        # pool wait and each read: timeout_s; opening a connection: connect_timeout_s (httpx's semantics, kept)
        self._timeouts = {
            b.name: aiohttp.ClientTimeout(total=None, connect=b.timeout_s, sock_connect=b.connect_timeout_s, sock_read=b.timeout_s)
            for b in config.backends
        }
        self._urls: dict[tuple[str, str], URL] = {}

    def _url(self, upstream: Upstream, path: str) -> URL:
        """Parsed once per route, not per request."""
        url = self._urls.get((upstream.url_base, path))
        if url is None:
            url = self._urls[(upstream.url_base, path)] = URL(upstream.url_base + path)
        return url

    async def aclose(self) -> None:
        await self._session.close()

    async def call(self, upstreams: list[Upstream], path: str, bodies: list[bytes], *, stream: bool, headers: Headers = ()) -> Answer:
        """The first acceptable answer; raises ``UpstreamFailure`` when none is. ``headers`` are the client's forwarded ones."""
        failure = UpstreamFailure(502, "no upstream configured", "upstream_unavailable")
        last = len(upstreams) - 1
        for i, (upstream, body) in enumerate(zip(upstreams, bodies, strict=True)):
            name = upstream.backend.name
            sent = [("Content-Type", "application/json"), ("Accept-Encoding", "identity"), *headers]
            if upstream.auth:
                sent.append(upstream.auth)
            started = time.perf_counter()
            try:
                response = await self._session.post(
                    self._url(upstream, path), data=body, headers=sent, allow_redirects=False, timeout=self._timeouts[name]
                )
            except TimeoutError:
                labelled(UPSTREAM_RESPONSES, name, "timeout").inc()
                failure = UpstreamFailure(504, f"backend {name!r} did not answer within its timeout", "upstream_timeout", upstream)
                log.warning("upstream_timeout", backend=name, attempt=i + 1)
                continue
            except (aiohttp.ClientError, ValueError) as exc:  # ValueError: headers or status line aiohttp could not parse
                labelled(UPSTREAM_RESPONSES, name, "unreachable").inc()
                failure = UpstreamFailure(
                    502,
                    f"backend {name!r} is unreachable or sent an invalid response ({type(exc).__name__})",
                    "upstream_unavailable",
                    upstream,
                )
                log.warning("upstream_unreachable", backend=name, attempt=i + 1, error=type(exc).__name__)
                continue
            labelled(UPSTREAM_DURATION, name).observe(time.perf_counter() - started)
            status = response.status
            labelled(UPSTREAM_RESPONSES, name, str(status)).inc()
            if status in self._fallback and i < last:
                response.close()
                log.warning("upstream_failed_falling_back", backend=name, status=status)
                continue
            if stream and status < 400:
                return Answer(upstream, status, passed_through(response.raw_headers), None, response)
            try:
                content = await response.read()
            except TimeoutError:
                failure = UpstreamFailure(504, f"backend {name!r} stopped answering within its timeout", "upstream_timeout", upstream)
                continue
            except (aiohttp.ClientError, ValueError) as exc:
                labelled(UPSTREAM_RESPONSES, name, "broken").inc()
                failure = UpstreamFailure(
                    502, f"backend {name!r} broke the connection ({type(exc).__name__})", "upstream_unavailable", upstream
                )
                continue
            finally:
                response.release()
            if status >= 500:
                raise UpstreamFailure(502, f"backend {name!r} failed with HTTP {status}", "upstream_error", upstream, content)
            return Answer(upstream, status, passed_through(response.raw_headers), content, response)
        raise failure
