"""Usage metering inside vLLM's OpenAI server, as a pure ASGI middleware.

Load with ``vllm serve MODEL --middleware inference.vllm_meter.middleware.UsageMeteringMiddleware``.
vLLM builds it with only ``app``, so everything else comes from the environment (see
gpuledger's settings: the ``meter`` section, ``GPULEDGER_KAFKA__*``, ``GPULEDGER_CONFIG``).

Per request it reads the body once, asks streams for usage in every chunk and in a final chunk
(hiding from the client what it did not ask for), watches the response go by and queues one
``InferenceUsage`` event. Per-chunk usage is what makes a stream the client hangs up on still
count exactly. It never holds a response back, and never records text.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import structlog
from starlette.requests import ClientDisconnect

from gpuledger.sections.meter import MeterSettings
from gpuledger.settings import Settings, get_settings
from inference.metering.asgi_body import ClientGone, Message, Receive, Scope, Send, bearer_token, header, read_body
from inference.metering.dialects import Dialect, dialect_for
from inference.metering.events import ENDPOINTS, MAX_MODEL_CHARS, Placement, RequestMeter, key_id_for_secret, request_context
from inference.metering.openai_usage import StreamUsage, Usage, rewrite_request, stream_usage
from inference.metering.publisher import UsagePublisher
from inference.metering.sse_usage import SseUsageScanner
from inference.vllm_meter.config import placement

log = structlog.get_logger()
ANONYMOUS = "anonymous"


class UsageMeteringMiddleware:
    """Meters POST /v1/completions, /v1/chat/completions, /v1/embeddings, /v1/responses and /v1/messages; passes everything else through."""

    def __init__(self, app: Any, *, settings: Settings | None = None, meter: MeterSettings | None = None) -> None:
        self.app = app
        settings = settings or get_settings()
        meter = meter or settings.meter
        self.placement: Placement = placement(meter)
        self.key_header = meter.key_header.lower().encode() if meter.key_header else None
        self.publisher = UsagePublisher(settings.kafka, settings.topics.inference_usage, component="vllm", queue_size=meter.queue_size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        endpoint = ENDPOINTS.get(scope.get("path", "")) if scope["type"] == "http" and scope["method"] == "POST" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        await MeteredRequest(self, endpoint, scope, receive, send).run()

    def key_id(self, scope: Scope) -> str:
        """The caller: the configured header's value, else a hash prefix of the bearer key."""
        if self.key_header is not None:
            value = header(scope, self.key_header)
            if value:
                return value.decode("latin-1")
        token = bearer_token(scope)
        return key_id_for_secret(token) if token else ANONYMOUS

    def _lifespan_receive(self, receive: Receive) -> Receive:
        """Flush queued events when the server shuts down."""

        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.publisher.close()
            return message

        return wrapped


class MeteredRequest:
    """One metered request: the replayed body, the watched response, the event at the end."""

    __slots__ = (
        "body",
        "chunks",
        "complete",
        "dialect",
        "endpoint",
        "hidden",
        "meter",
        "mw",
        "receive",
        "replayed",
        "request",
        "scanner",
        "scope",
        "send",
        "status",
    )

    def __init__(self, mw: UsageMeteringMiddleware, endpoint: str, scope: Scope, receive: Receive, send: Send) -> None:
        self.mw, self.endpoint, self.scope, self.receive, self.send = mw, endpoint, scope, receive, send
        self.dialect: Dialect = dialect_for(endpoint)
        self.meter = RequestMeter(endpoint, request_context(scope))
        self.body = b""
        self.replayed = False
        self.status = 0
        self.complete = False
        self.hidden: StreamUsage | None = None
        self.request: dict[str, Any] = {}
        self.scanner: SseUsageScanner | None = None
        self.chunks: list[bytes] = []

    async def run(self) -> None:
        try:
            self.body = await read_body(self.receive)
        except ClientGone:
            return
        self.request = request = _parse(self.body)
        scope = self.scope
        self.hidden = stream_usage(request, continuous=True) if self.dialect.asks_stream_usage else None
        body = rewrite_request(self.body, request, usage=self.hidden)
        if body is not self.body:
            self.body = body
            scope = dict(scope)
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-length"] + [
                (b"content-length", str(len(self.body)).encode())
            ]
        failed = False
        try:
            await self.mw.app(scope, self._receive, self._send)
        except (OSError, asyncio.CancelledError, ClientDisconnect):  # a client gone mid-response: ok or not by what it was sent
            raise
        except BaseException:
            failed = True
            raise
        finally:
            self._emit(failed)

    async def _receive(self) -> Message:
        if not self.replayed:
            self.replayed = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        return await self.receive()

    def _delivered(self) -> bool:
        """The body has ended, or a stream's final event ([DONE], or the usage chunk the client asked for) went out."""
        return self.complete or (self.scanner is not None and self.scanner.finished)

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            self.meter.mark_first_byte()
            body = message.get("body", b"")
            more = message.get("more_body", False)
            self.complete = not more
            if self.scanner is not None:
                out = self.scanner.feed(body)
                if not more:
                    out += self.scanner.flush()
                if self.scanner.rewrites:  # forward the scanner's output, which lacks the usage we asked for
                    if more and not out:
                        return
                    message = {"type": "http.response.body", "body": out, "more_body": more}
            elif self.status < 400:
                self.chunks.append(body)
        elif kind == "http.response.start":
            self.status = message["status"]
            content_type = header({"headers": message.get("headers", [])}, b"content-type") or b""
            if self.status < 400 and content_type.startswith(b"text/event-stream"):
                self.scanner = SseUsageScanner(self.hidden, self.endpoint, self.dialect)
        await self.send(message)

    def _emit(self, failed: bool) -> None:
        streamed = self.scanner is not None
        if failed or self.status >= 400:
            status, usage = "error", None
        elif not self._delivered():  # a disconnect after the final event is a client that read all it wanted
            status, usage = "client_disconnected", self._usage()
        else:
            status, usage = "ok", self._usage()
        model = self.request.get("model")
        model = model[:MAX_MODEL_CHARS] if isinstance(model, str) else ""
        event = self.meter.event(
            key_id=self.mw.key_id(self.scope)[:MAX_MODEL_CHARS],
            model=model,
            placement=self.mw.placement,
            usage=usage,
            status=status,
            streamed=streamed,
        )
        self.mw.publisher.submit(event)

    def _usage(self) -> Usage | None:
        if self.scanner is not None:
            return self.scanner.usage_or_estimate(self.request)
        return self.dialect.answer_usage(b"".join(self.chunks), self.request) if self.chunks else None


def _parse(body: bytes) -> dict[str, Any]:
    try:
        request = json.loads(body)
    except ValueError:
        return {}
    return request if isinstance(request, dict) else {}
