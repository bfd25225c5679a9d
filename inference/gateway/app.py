"""The metering gateway: an OpenAI-compatible front for several backends that emits one usage event per request.

Routes are plain ASGI endpoints inside a Starlette app, so each request is read once, forwarded
as raw bytes (re-serialized only when the model is renamed or usage must be requested), and
watched for client disconnects, at a cost of tens of microseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gpuledger.kafka import AckedSender
from gpuledger.sections.gateway import GatewayConfig, VirtualKey
from gpuledger.settings import Settings, get_settings
from inference.gateway.auth import KeyRing
from inference.gateway.budget_guard import BudgetGuard
from inference.gateway.outcomes import OutcomesRoute
from inference.gateway.repeats import RecentIds
from inference.gateway.routing import Router, Upstream
from inference.gateway.upstream import Answer, UpstreamClient, UpstreamFailure
from inference.gateway.upstream_headers import clean_value
from inference.metering.asgi_body import BodyTooLarge, ClientGone, Receive, Scope, Send, header, read_body
from inference.metering.dialects import Dialect, dialect_for
from inference.metering.errors import error_body, send_json
from inference.metering.events import ENDPOINTS, Placement, RequestMeter, request_context
from inference.metering.metrics import REFUSALS, REQUEST_DURATION, REQUESTS, labelled
from inference.metering.openai_usage import StreamUsage, Usage, rewrite_request, stream_usage
from inference.metering.publisher import UsagePublisher
from inference.metering.sse_usage import SseUsageScanner
from schemas import BudgetStatus

log = structlog.get_logger()
NOWHERE = Placement(backend="gateway")
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
NO_AUTH = "Missing or invalid API key: send 'Authorization: Bearer <your gateway key>'."


class Rejected(Exception):
    """A request refused before any backend saw it (event status ``rejected``); ``reason`` labels the refusal metric."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        *,
        reason: str = "invalid",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.reason, self.headers = reason, headers or []


@dataclass(slots=True)
class Outcome:
    """What the usage event will say; filled in as the request progresses."""

    key_id: str
    model: str = ""
    placement: Placement = NOWHERE
    usage: Usage | None = None
    status: str = "ok"
    streamed: bool = False
    complete: bool = False  # the client has been sent everything that matters (a stream: its final event)
    started: bool = False  # the response has started: errors can no longer be answered with a status
    metered: bool = True  # False: an unauthenticated refusal, or a repeat of a refusal already metered
    requested_model: str = ""  # the alias or model the client asked for
    route_rule: str = ""  # the rule, default, forced or fallback:<n> that chose the backend
    baseline_model: str = ""  # the model it would have gone to without tiering


class Gateway:
    """Shared state of one gateway process: routing, keys, the upstream pool and the usage publisher."""

    def __init__(self, config: GatewayConfig, settings: Settings) -> None:
        self.config = config
        self.router = Router(config)
        self.keys = KeyRing(config.keys)
        self.publisher = UsagePublisher(settings.kafka, settings.topics.inference_usage, component="gateway", queue_size=config.queue_size)
        self.upstream: UpstreamClient | None = None
        self.budgets = BudgetGuard(settings.kafka, settings.topics.budget_status) if config.enforce_budgets else None
        self.refused = RecentIds()
        self.outcome_sender = AckedSender(settings.kafka)
        self.outcomes = OutcomesRoute(self.keys, self.outcome_sender, settings.topics.outcomes, max_body_bytes=config.max_body_bytes)

    def app(self) -> Starlette:
        routes = [Route(path, OpenAIRoute(self, path, endpoint), methods=["POST"]) for path, endpoint in ENDPOINTS.items()]
        routes += [
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", self.model, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/v1/outcomes", self.outcomes.endpoint, methods=["POST"]),
        ]
        return Starlette(routes=routes, lifespan=self.lifespan, exception_handlers={HTTPException: http_error, Exception: internal_error})

    @contextlib.asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        self.upstream = UpstreamClient(self.config)
        if self.budgets is not None:
            self.budgets.start()
        # Everything loaded so far lives for good; frozen, it is left out of full GC passes, which
        # otherwise walk it all (25-40 ms measured here, stalling every request in flight).
        gc.freeze()
        log.info("gateway_started", backends=[b.name for b in self.config.backends], models=self.router.names())
        try:
            yield
        finally:
            if self.budgets is not None:
                await self.budgets.stop()
            await self.upstream.aclose()
            await self.publisher.close()
            await self.outcome_sender.stop()

    async def models(self, request: Request) -> Response:
        key, _ = self.keys.authenticate(request.scope)
        if key is None:
            return _unauthenticated()
        return JSONResponse({"object": "list", "data": [_model_object(n) for n in self.router.names()]})

    async def model(self, request: Request) -> Response:
        """``GET /v1/models/{id}`` (the SDKs' ``models.retrieve``)."""
        key, _ = self.keys.authenticate(request.scope)
        if key is None:
            return _unauthenticated()
        name = request.path_params["model_id"]
        if name not in self.router.names():
            labelled(REFUSALS, "model_not_found").inc()
            return Response(
                error_body(
                    f"The model '{name[: self.config.max_model_chars]}' does not exist on this gateway; GET /v1/models lists them.",
                    "invalid_request_error",
                    "model_not_found",
                    "model",
                ),
                404,
                media_type="application/json",
            )
        return JSONResponse(_model_object(name))


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "gpuledger"}


def _unauthenticated() -> Response:
    labelled(REFUSALS, "auth").inc()
    return Response(error_body(NO_AUTH, "invalid_request_error", "invalid_api_key"), 401, media_type="application/json")


async def http_error(request: Request, exc: Exception) -> Response:
    """Unknown routes (404) and methods (405) in OpenAI's error shape, as the SDKs expect."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        labelled(REFUSALS, "route_not_found").inc()
        message, code = (
            f"Unknown route {request.method} {request.url.path}: this gateway serves {', '.join(ENDPOINTS)}, /v1/outcomes (POST) and /v1/models (GET).",
            "unknown_url",
        )
    elif exc.status_code == 405:
        labelled(REFUSALS, "method_not_allowed").inc()
        message, code = (
            f"{request.method} is not allowed on {request.url.path}; allowed: {(exc.headers or {}).get('Allow', 'none')}.",
            "method_not_allowed",
        )
    else:
        message, code = exc.detail, None
    return Response(error_body(message, "invalid_request_error", code), exc.status_code, headers=exc.headers, media_type="application/json")


async def internal_error(_: Request, exc: Exception) -> Response:
    """A bug of the gateway's own: still an OpenAI-shaped answer, and logged."""
    log.error("gateway_internal_error", error=type(exc).__name__)
    return Response(
        error_body("The gateway failed internally; the error was logged.", "server_error", "internal_error"),
        500,
        media_type="application/json",
    )


class OpenAIRoute:
    """One metered endpoint (an ASGI app, so Starlette hands it the raw scope/receive/send), speaking its API's dialect."""

    def __init__(self, gateway: Gateway, path: str, endpoint: str) -> None:
        self.gw, self.suffix, self.endpoint = gateway, path.removeprefix("/v1"), endpoint
        self.dialect: Dialect = dialect_for(endpoint)
        self.forward = frozenset(h.lower().encode() for h in gateway.config.forward_headers) | frozenset(self.dialect.forwarded)

    async def _error(
        self,
        send: Send,
        status: int,
        message: str,
        kind: str,
        code: str | None = None,
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        await send_json(send, status, self.dialect.error_body(message, kind, code, param, status), headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        meter = RequestMeter(self.endpoint, request_context(scope))
        key, key_id = self.gw.keys.authenticate(scope)
        outcome = Outcome(key_id=key_id)
        try:
            if key is None:
                # Anyone can send these: counted, but never one event (one Kafka and ClickHouse row) each.
                outcome.metered = False
                raise Rejected(401, NO_AUTH, code="invalid_api_key", reason="auth")
            request, body = await self._admit(scope, receive, outcome)
            await self._forward_watching_disconnect(scope, receive, send, key, request, body, outcome, meter)
        except Rejected as exc:
            outcome.status = "rejected"
            labelled(REFUSALS, exc.reason).inc()
            await self._error(send, exc.status, exc.message, exc.kind, exc.code, exc.param, exc.headers)
        except ClientGone:
            outcome.status = "client_disconnected"
        except Exception as exc:  # noqa: BLE001 - whatever an upstream sent, the client gets an answer and the request is metered
            outcome.status = "error"
            log.error("gateway_request_failed", endpoint=self.endpoint, error=type(exc).__name__)
            if not outcome.started:
                await self._error(
                    send,
                    502,
                    f"The gateway could not relay the backend's answer ({type(exc).__name__}).",
                    "upstream_error",
                    "upstream_invalid_response",
                )
        finally:
            labelled(REQUESTS, self.endpoint, outcome.status).inc()
            labelled(REQUEST_DURATION, self.endpoint).observe(time.perf_counter() - meter.started)
            if outcome.metered:
                self.gw.publisher.submit(
                    meter.event(
                        key_id=outcome.key_id,
                        model=outcome.model,
                        placement=outcome.placement,
                        usage=outcome.usage,
                        status=outcome.status,
                        streamed=outcome.streamed,
                        requested_model=outcome.requested_model,
                        route_rule=outcome.route_rule,
                        baseline_model=outcome.baseline_model,
                    )
                )

    async def _admit(self, scope: Scope, receive: Receive, outcome: Outcome) -> tuple[dict[str, Any], bytes]:
        """Read and validate the body; raises ``Rejected`` with a message that says what to fix."""
        config = self.gw.config
        limit = config.max_body_bytes
        too_large = Rejected(
            413,
            f"Request body is larger than this gateway's limit of {limit} bytes; send a shorter prompt or raise max_body_bytes.",
            code="request_too_large",
            reason="too_large",
        )
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        try:
            async with asyncio.timeout(config.body_timeout_s):
                body = await read_body(receive, limit)
        except BodyTooLarge:
            raise too_large from None
        except TimeoutError:
            raise Rejected(
                408, f"The request body did not arrive within {config.body_timeout_s:g} s.", code="request_timeout", reason="body_timeout"
            ) from None
        try:
            request = json.loads(body)
        except ValueError as exc:
            raise Rejected(
                400, f"Request body is not valid JSON ({exc}); send a JSON object with Content-Type: application/json.", code="invalid_json"
            ) from None
        if not isinstance(request, dict):
            raise Rejected(400, "Request body must be a JSON object.", code="invalid_json")
        model = request.get("model")
        if not isinstance(model, str) or not model:
            raise Rejected(400, "Missing 'model': name one of GET /v1/models.", param="model", code="missing_model")
        outcome.model = model[: config.max_model_chars]
        if len(model) > config.max_model_chars:
            raise Rejected(
                400,
                f"'model' is {len(model)} characters long; this gateway accepts at most {config.max_model_chars}: name one of GET /v1/models.",
                param="model",
                code="model_too_long",
            )
        return request, body

    async def _forward_watching_disconnect(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        key: VirtualKey,
        request: dict[str, Any],
        body: bytes,
        outcome: Outcome,
        meter: RequestMeter,
    ) -> None:
        """Forward; if the client goes away first, stop (cancelling the upstream call) and record it."""
        this = asyncio.current_task()
        assert this is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            if not outcome.complete:
                gone = True
                this.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self._forward(scope, send, key, request, body, outcome, meter)
        except asyncio.CancelledError:
            if not gone:
                raise
            this.uncancel()
            outcome.status = "client_disconnected"
        finally:
            watcher.cancel()

    async def _forward(
        self, scope: Scope, send: Send, key: VirtualKey, request: dict[str, Any], body: bytes, outcome: Outcome, meter: RequestMeter
    ) -> None:
        asked = outcome.requested_model = outcome.model
        route = self.gw.router.resolve(outcome.model, request, scope)
        if route is None:
            raise Rejected(
                404,
                f"The model '{outcome.model}' does not exist on this gateway; choose one of: {', '.join(self.gw.router.names())}.",
                param="model",
                code="model_not_found",
                reason="model_not_found",
            )
        outcome.model, upstreams, outcome.route_rule, outcome.baseline_model = route.model, route.upstreams, route.rule, route.baseline
        if self.gw.budgets is not None and (
            hard := self.gw.budgets.blocking(key.org, key.team, key.project, {asked, outcome.model, *(u.model for u in upstreams)})
        ):
            request_id = header(scope, b"x-request-id") or header(scope, b"idempotency-key")
            outcome.metered = request_id is None or self.gw.refused.first_time(outcome.key_id, request_id.decode("latin-1"))
            raise Rejected(
                429,
                _exhausted_message(hard),
                kind="insufficient_quota",
                code="budget_exceeded",
                reason="budget",
                headers=_dont_retry_before(hard.period_end, self.gw.config.budget_retry_after_max_s),
            )
        stream = request.get("stream") is True
        bodies = [rewrite_request(body, request, usage=self._usage_asked(request, u), model=u.model) for u in upstreams]
        forwarded = [
            (k.decode("latin-1"), clean.decode("latin-1"))
            for k, v in scope["headers"]
            if k in self.forward and (clean := clean_value(v)) is not None
        ]
        forwarded += [(name, value) for name, value in self.dialect.default_headers if all(k != name for k, _ in forwarded)]
        assert self.gw.upstream is not None
        try:
            answer = await self.gw.upstream.call(upstreams, self.suffix, bodies, stream=stream, headers=forwarded)
        except UpstreamFailure as failure:
            outcome.status = "error"
            if failure.upstream is not None:
                outcome.placement = failure.upstream.placement
                outcome.route_rule = self.gw.router.rule_after(route, failure.upstream)
            await self._error(send, failure.status, failure.message, "upstream_error", failure.code)
            return
        outcome.placement = answer.upstream.placement
        outcome.model = answer.upstream.model
        outcome.route_rule = self.gw.router.rule_after(route, answer.upstream)
        if answer.content is None:
            await self._stream(send, answer, request, outcome, meter)
        else:
            await self._reply(send, answer, request, outcome)

    def _usage_asked(self, request: dict[str, Any], upstream: Upstream) -> StreamUsage | None:
        """What a stream asks this upstream for; per-chunk usage only of vLLM (OpenAI's API would refuse the option).

        Responses and Messages streams always end with their usage: nothing to ask for.
        """
        return stream_usage(request, continuous=upstream.backend.kind == "vllm") if self.dialect.asks_stream_usage else None

    async def _reply(self, send: Send, answer: Answer, request: dict[str, Any], outcome: Outcome) -> None:
        """A whole JSON answer; upstream 4xx pass through (normalized to the API's error shape)."""
        content = answer.content or b""
        status = answer.status
        if status >= 400:
            outcome.status = "error"
            content = self.dialect.normalized_error(content, status)
        else:
            outcome.usage = self.dialect.answer_usage(content, request)
        outcome.complete = outcome.started = True
        await send_json(send, status, content, answer.headers)

    async def _stream(self, send: Send, answer: Answer, request: dict[str, Any], outcome: Outcome, meter: RequestMeter) -> None:
        """Relay SSE as it arrives, noting usage and hiding the usage this gateway asked for.

        Usage is taken however the stream ends, so a client that hangs up is charged for what it was sent.
        """
        outcome.streamed = True
        scanner = SseUsageScanner(self._usage_asked(request, answer.upstream), self.endpoint, self.dialect)
        try:
            outcome.started = True
            await send({"type": "http.response.start", "status": answer.status, "headers": SSE_HEADERS + answer.headers})
            try:
                async for chunk in answer.chunks():
                    meter.mark_first_byte()
                    out = scanner.feed(chunk)
                    if out:
                        await send({"type": "http.response.body", "body": out, "more_body": True})
                        # Clients stop reading at [DONE] (or at the usage chunk they asked for) and hang up
                        # before the backend ends its body: from here on, leaving is not a disconnect.
                        outcome.complete = outcome.complete or scanner.finished
                tail = scanner.flush()
            except Exception as exc:  # read errors/timeouts mid-stream: nothing can fall back now
                log.warning(
                    "upstream_stream_broken",
                    backend=answer.upstream.backend.name,
                    error=type(exc).__name__,
                    after_final_event=scanner.finished,
                )
                tail = b""
                if not scanner.finished:  # after the final event the client has its whole answer: only the backend's tail was lost
                    outcome.status = "error"
                    tail = self.dialect.stream_error(
                        f"backend {answer.upstream.backend.name!r} broke off the stream ({type(exc).__name__})", "upstream_stream_broken"
                    )
            outcome.complete = True
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            outcome.usage = scanner.usage_or_estimate(request)
            answer.close()


def _exhausted_message(hard: BudgetStatus) -> str:
    """Names the budget, its scope and when requests will be accepted again."""
    scope = "/".join(part for part in (hard.org, hard.team, hard.project) if part) + (f" model={hard.model}" if hard.model else "")
    until = hard.period_end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"Hard budget '{hard.budget_id}' ({scope}) is exhausted: {_plain(hard.spend)} of {_plain(hard.amount)} {hard.currency} spent this period; "
        f"requests are refused until the period ends ({until}) or the budget is raised."
    )


def _plain(amount: Decimal) -> str:
    """0.0090 -> '0.009', 100.00 -> '100' (never '1E+2')."""
    return format(amount.normalize(), "f")


def _dont_retry_before(period_end: datetime, cap_s: int) -> list[tuple[bytes, bytes]]:
    """``Retry-After``: seconds until the budget period ends (at least 1, at most ``cap_s``); and SDKs must not retry on their own."""
    wait = min(cap_s, max(1, math.ceil((period_end - datetime.now(UTC)).total_seconds())))
    return [(b"retry-after", str(wait).encode()), (b"x-should-retry", b"false")]


async def metrics(_: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def health(_: Request) -> Response:
    return Response("ok", media_type="text/plain")


def create_app(config: GatewayConfig, settings: Settings | None = None) -> Starlette:
    """The gateway ASGI app (``settings`` defaults to the process-wide ones, for Kafka and topics)."""
    return Gateway(config, settings or get_settings()).app()
