"""Micro-benchmark: the gateway's per-request work that routing savings touched, in-process (no sockets, no Kafka).

    .venv/bin/python -m tests.bench.route_fields_bench [--n 20000] [--repeats 7]   (from the tree to measure)

Times, per request, what the gateway does between reading the body and handing the event to the publisher
and that the requested_model / route_rule / baseline_model fields changed: routing (``Router.resolve``
through an alias with one non-matching rule), building the ``InferenceUsage`` event, and its Avro encoding.
It runs unchanged on trees before those fields (it passes them only where ``RequestMeter.event`` accepts
them), so the same script compares two trees; the best of ``--repeats`` runs is kept, which makes it far
less sensitive to a busy machine than the latency benchmark.
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from collections.abc import Callable
from typing import Any

from gpuledger.sections.gateway import GatewayConfig
from inference.gateway.routing import Router
from inference.metering.events import Placement, RequestMeter
from inference.metering.openai_usage import Usage
from schemas import InferenceUsage, codec_for

CONFIG = GatewayConfig.model_validate(
    {
        "backends": [{"name": "fake", "kind": "vllm", "base_url": "http://127.0.0.1:1/v1", "deployment": "bench"}],
        "models": [{"name": "m", "targets": [{"backend": "fake"}]}],
        "aliases": [{"name": "auto", "default": "m", "rules": [{"model": "m", "header": {"X-Tier": "large"}}]}],
    }
)
REQUEST = {"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "Say five words about GPUs " * 8}]}
SCOPE: dict[str, Any] = {"headers": [(b"authorization", b"Bearer sk"), (b"content-type", b"application/json")]}


def per_call_us(work: Callable[[], object], n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(n):
            work()
        best = min(best, time.perf_counter() - started)
    return best / n * 1e6


def main(n: int, repeats: int) -> dict[str, float]:
    router, encode = Router(CONFIG), codec_for(InferenceUsage).encode
    with_fields = "route_rule" in inspect.signature(RequestMeter.event).parameters
    placement, usage = Placement(backend="vllm", deployment="bench"), Usage(prompt_tokens=48, completion_tokens=5)

    def event() -> InferenceUsage:
        extra = {"requested_model": "auto", "route_rule": "default", "baseline_model": "m"} if with_fields else {}
        return RequestMeter("chat.completions").event(
            key_id="bench", model="m", placement=placement, usage=usage, status="ok", streamed=False, **extra
        )

    built = event()
    return {
        "route (Router.resolve through the alias)": per_call_us(lambda: router.resolve("auto", REQUEST, SCOPE), n, repeats),
        "build the event": per_call_us(event, n, repeats),
        "Avro-encode the event": per_call_us(lambda: encode(built), n, repeats),
        "all three": per_call_us(lambda: encode(event()) and router.resolve("auto", REQUEST, SCOPE), n, repeats),
        "event bytes": float(len(encode(built))),
        "fields recorded": float(with_fields),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(json.dumps(main(args.n, args.repeats), indent=1))
