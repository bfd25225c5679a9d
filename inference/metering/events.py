"""Turning one timed request into an ``InferenceUsage`` event; shared by the vLLM middleware and the gateway."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from gpuledger.sections.gateway import MAX_MODEL_CHARS
from inference.metering.asgi_body import Scope
from inference.metering.openai_usage import Usage
from schemas import InferenceUsage

# Request path -> the event's endpoint name; only these paths are metered.
ENDPOINTS: dict[str, str] = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",  # OpenAI Responses API
    "/v1/messages": "messages",  # Anthropic Messages API
}
NO_USAGE = Usage()


def key_id_for_secret(secret: str) -> str:
    """A stable, non-reversible identifier for an API key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a request ran: the event's backend kind, deployment, node and GPUs."""

    backend: str
    deployment: str = ""
    node: str | None = None
    gpu_uuids: list[str] = field(default_factory=list)


class RequestContext(NamedTuple):
    """What joins a request to the business outcomes it served (never any text of the request).

    A NamedTuple: built on every metered request, and a frozen dataclass costs several times more to build.
    """

    client_request_id: str = ""
    trace_id: str = ""
    session_id: str = ""


NO_CONTEXT = RequestContext()
# W3C trace context: version-traceid-parentid-flags; an all-zero trace id is invalid.
TRACEPARENT = re.compile(rb"^\s*[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
SESSION_HEADER = b"x-gpuledger-session-id"


CONTEXT_HEADERS = frozenset({b"x-request-id", b"x-client-request-id", b"traceparent", SESSION_HEADER})


def _id(value: bytes | None) -> str:
    """A client-set id, trimmed and cut to ``MAX_MODEL_CHARS`` (never unbounded)."""
    return value.strip().decode("latin-1")[:MAX_MODEL_CHARS] if value and value.strip() else ""


def request_context(scope: Scope) -> RequestContext:
    """The client's request id (``x-request-id``, else ``x-client-request-id``), W3C trace id (``traceparent``) and session id.

    One pass over the headers (this runs on every metered request); none of them present: the shared empty context.
    """
    found = {name: value for name, value in scope["headers"] if name in CONTEXT_HEADERS}
    if not found:
        return NO_CONTEXT
    traceparent = found.get(b"traceparent")
    match = TRACEPARENT.match(traceparent.lower()) if traceparent else None
    return RequestContext(
        client_request_id=_id(found.get(b"x-request-id")) or _id(found.get(b"x-client-request-id")),
        trace_id=match[1].decode() if match and match[1].strip(b"0") else "",
        session_id=_id(found.get(SESSION_HEADER)),
    )


@dataclass(slots=True)
class RequestMeter:
    """Clocks one request (wall time for the record, a monotonic clock for durations)."""

    endpoint: str
    context: RequestContext = NO_CONTEXT
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=time.perf_counter)
    first_byte: float | None = None

    def mark_first_byte(self) -> None:
        """Time to first token is measured at the first response body chunk."""
        if self.first_byte is None:
            self.first_byte = time.perf_counter()

    def event(
        self,
        *,
        key_id: str,
        model: str,
        placement: Placement,
        usage: Usage | None,
        status: str,
        streamed: bool,
        requested_model: str = "",
        route_rule: str = "",
        baseline_model: str = "",
    ) -> InferenceUsage:
        """The finished request as an event; TTFT only for streams, where the first chunk is the first token.

        A JSON answer's first byte comes after its last token: as "TTFT" it would repeat latency_ms
        and skew TTFT percentiles, so non-streamed requests carry none (null).
        """
        elapsed = time.perf_counter() - self.started
        usage = usage or NO_USAGE
        ttft = (self.first_byte - self.started) * 1000.0 if streamed and self.first_byte is not None else None
        return InferenceUsage(
            event_id=uuid.uuid4().hex,
            request_start=self.started_at,
            request_end=self.started_at + timedelta(seconds=elapsed),
            key_id=key_id,
            model=model,
            backend=placement.backend,
            deployment=placement.deployment,
            node=placement.node,
            gpu_uuids=placement.gpu_uuids,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_prompt_tokens=usage.cached_prompt_tokens,
            usage_estimated=usage.estimated,
            ttft_ms=ttft,
            latency_ms=elapsed * 1000.0,
            status=status,
            endpoint=self.endpoint,
            client_request_id=self.context.client_request_id,
            trace_id=self.context.trace_id,
            session_id=self.context.session_id,
            requested_model=requested_model,
            route_rule=route_rule,
            baseline_model=baseline_model,
        )
