"""The SSE usage scanner on its own: event framing per the SSE spec, byte-faithful relaying, usage hiding, token counting."""

from __future__ import annotations

import json

import pytest

from inference.metering.openai_usage import StreamUsage, Usage
from inference.metering.sse_usage import SseUsageScanner

HEAD = '"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m"'


def chunk(content: str | None, usage: dict[str, int] | None = None, *, choices: bool = True) -> bytes:
    """A vLLM chat chunk, compact JSON; ``usage`` last as vLLM writes it."""
    body = f'{{{HEAD},"choices":' + (
        f'[{{"index":0,"delta":{{"content":{json.dumps(content)}}},"logprobs":null,"finish_reason":null}}]' if choices else "[]"
    )
    return (body + (f',"usage":{json.dumps(usage, separators=(",", ":"))}' if usage else "") + "}").encode()


def running(n_out: int) -> dict[str, int]:
    return {"prompt_tokens": 7, "total_tokens": 7 + n_out, "completion_tokens": n_out}


def relay(scanner: SseUsageScanner, reads: list[bytes]) -> bytes:
    return b"".join(scanner.feed(r) for r in reads) + scanner.flush()


@pytest.mark.parametrize("end", [b"\n\n", b"\r\n\r\n", b"\r\r", b"\r\n\n", b"\n\r\n"])
def test_every_blank_line_form_ends_an_event(end: bytes) -> None:
    events = [
        b"data: " + chunk(""),
        b"data: " + chunk("a "),
        b"data: " + chunk("b "),
        b"data: " + chunk(None, running(2), choices=False),
        b"data: [DONE]",
    ]
    stream = end.join(events) + end
    scanner = SseUsageScanner(StreamUsage(final=True, each=False))
    out = relay(scanner, [stream[i : i + 7] for i in range(0, len(stream), 7)])  # reads split everywhere, CR and LF apart too
    assert out == end.join(events[:3] + events[4:]) + end, "only the usage-only chunk is dropped, the framing kept byte for byte"
    assert scanner.usage == Usage(7, 2) and scanner.relayed == 2


def test_a_crlf_split_between_reads_is_not_taken_for_an_event_end() -> None:
    scanner = SseUsageScanner(None)
    assert scanner.feed(b"data: " + chunk("a ") + b"\r") == b""
    assert scanner.feed(b"\n") == b"", "CR LF is one line end, not two"
    assert scanner.feed(b"\r\n") == b"data: " + chunk("a ") + b"\r\n\r\n"
    assert scanner.relayed == 1


def test_unasked_per_chunk_usage_is_hidden_and_the_last_relayed_figures_kept() -> None:
    scanner = SseUsageScanner(StreamUsage(final=True, each=True))
    reads = [b"data: " + chunk("", running(0)) + b"\n\n", b"data: " + chunk("a ", running(1)) + b"\n\n"]
    out = relay(scanner, reads)
    assert out == b"data: " + chunk("") + b"\n\n" + b"data: " + chunk("a ") + b"\n\n"
    assert scanner.usage == Usage(7, 1), "a stream cut here is charged exactly"


def test_completions_keep_a_null_usage_member_and_spaced_json_is_rewritten() -> None:
    compact = b'data: {"id":"c","choices":[{"index":0,"text":"a ","logprobs":null}],"usage":{"prompt_tokens":2,"total_tokens":3,"completion_tokens":1,"prompt_tokens_details":null}}\n\n'
    spaced = b'data: {"id": "c", "usage": {"prompt_tokens": 2, "completion_tokens": 2}, "choices": [{"index": 0, "text": "b "}]}\n\n'
    scanner = SseUsageScanner(StreamUsage(final=False, each=True), "completions")
    out = relay(scanner, [compact, spaced])
    assert out.split(b"\n\n")[0] == b'data: {"id":"c","choices":[{"index":0,"text":"a ","logprobs":null}],"usage":null}'
    assert json.loads(out.split(b"\n\n")[1][6:]) == {"id": "c", "choices": [{"index": 0, "text": "b "}], "usage": None}
    assert scanner.usage == Usage(2, 2) and scanner.relayed == 2


def test_without_any_usage_the_relayed_chunks_count_and_the_prompt_is_estimated() -> None:
    scanner = SseUsageScanner(StreamUsage(final=True, each=False))
    stream = b"".join(b"data: " + chunk(c) + b"\n\n" for c in ["", "a ", "b ", "", "c "])
    assert relay(scanner, [stream]) == stream, "nothing to hide: the very same bytes"
    assert scanner.usage is None and scanner.relayed == 3
    assert scanner.usage_or_estimate({"messages": [{"role": "user", "content": "x" * 9}]}) == Usage(
        prompt_tokens=3, completion_tokens=3, estimated=True
    )


def test_an_unterminated_last_event_is_released_on_flush() -> None:
    scanner = SseUsageScanner(StreamUsage(final=True, each=False))
    assert scanner.feed(b"data: " + chunk(None, running(4), choices=False)) == b""
    assert scanner.flush() == b"" and scanner.usage == Usage(7, 4)
