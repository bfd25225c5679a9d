"""What the gateway and the vLLM middleware read from a request's headers to join it to outcomes (no engines needed)."""

from __future__ import annotations

from inference.metering.events import (
    MAX_MODEL_CHARS,
    Placement,
    RequestContext,
    RequestMeter,
    request_context,
)
from inference.metering.openai_usage import Usage

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "headers": list(headers)}


def test_ids_come_from_their_headers_and_reach_the_event() -> None:
    context = request_context(
        scope(
            (b"x-request-id", b" req-1 "),
            (b"traceparent", f"00-{TRACE}-00f067aa0ba902b7-01".encode()),
            (b"x-gpuledger-session-id", b"chat-42"),
        )
    )
    assert context == RequestContext(client_request_id="req-1", trace_id=TRACE, session_id="chat-42")
    event = RequestMeter("chat.completions", context).event(
        key_id="k", model="m", placement=Placement(backend="vllm"), usage=Usage(), status="ok", streamed=False
    )
    assert (event.client_request_id, event.trace_id, event.session_id) == ("req-1", TRACE, "chat-42")


def test_x_client_request_id_is_the_fallback_and_ids_are_bounded() -> None:
    assert request_context(scope((b"x-client-request-id", b"sdk-7"))).client_request_id == "sdk-7"
    assert request_context(scope((b"x-request-id", b"a"), (b"x-client-request-id", b"b"))).client_request_id == "a"
    assert len(request_context(scope((b"x-gpuledger-session-id", b"s" * 10_000))).session_id) == MAX_MODEL_CHARS


def test_invalid_traceparents_give_no_trace_id() -> None:
    for value in (b"garbage", b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01", b"00-" + TRACE[:31].encode() + b"-00f067aa0ba902b7-01", b""):
        assert request_context(scope((b"traceparent", value))).trace_id == "", value
    assert request_context(scope((b"traceparent", f"00-{TRACE.upper()}-00f067aa0ba902b7-01".encode()))).trace_id == TRACE
    assert request_context(scope()) == RequestContext()
