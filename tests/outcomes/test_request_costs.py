"""The ``request_costs`` view's GPU path on the real ClickHouse, from hand-written ledger lines and usage rows.

README, "Cost per outcome": a self-hosted request costs its tokens' share of its caller group's token-share
line on each GPU and window it ran on (line cost x request tokens / the line's share_tokens, rounded toward
zero to 9 places); an API request costs its API line. The expected figures below follow that rule with
Python's Decimal, not the worker's allocator.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal

from gpuledger.clickhouse import connect
from gpuledger.settings import Settings
from tests.support import isolated

NANO = Decimal("0.000000001")
GROUP = {"org": "search", "team": "ranking", "project": "reranker", "cost_centre": "CC-1001", "model": "llama-8b", "key_id": "key-search"}


def share(line_cost: str, tokens: int, share_tokens: int) -> Decimal:
    return (Decimal(line_cost) * tokens / share_tokens).quantize(NANO, ROUND_DOWN)


def test_gpu_requests_cost_their_token_share_of_each_window_and_gpu(stack_settings: Settings) -> None:
    settings = isolated(stack_settings, "ocgpu")
    client = connect(settings.clickhouse)
    w0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    w1 = w0 + timedelta(seconds=60)
    usage = [  # event, end, gpus, prompt, completion, priced_as, api cost
        ("a", w0 + timedelta(seconds=10), ["GPU-x"], 800, 200, "gpu"),
        ("b", w0 + timedelta(seconds=20), ["GPU-x"], 700, 300, "gpu"),
        ("c", w0 + timedelta(seconds=30), ["GPU-x", "GPU-y"], 900, 100, "gpu"),  # tensor parallel: a share on each GPU
        ("e", w1, ["GPU-x"], 400, 100, "gpu"),  # the first instant of the next window
        ("d", w0 + timedelta(seconds=40), [], 1200, 350, "api"),
    ]
    client.insert(
        "usage_events",
        [
            [
                event,
                end - timedelta(seconds=1),
                end,
                GROUP["key_id"],
                GROUP["model"] if priced == "gpu" else "gpt-4o-mini",
                "vllm",
                gpus,
                p,
                c,
                100.0,
                "ok",
                GROUP["org"],
                GROUP["team"],
                GROUP["project"],
                GROUP["cost_centre"],
                priced,
                Decimal(0),
            ]
            for event, end, gpus, p, c, priced in usage
        ],
        column_names=[
            "event_id",
            "request_start",
            "event_time",
            "key_id",
            "model",
            "backend",
            "gpu_uuids",
            "prompt_tokens",
            "completion_tokens",
            "latency_ms",
            "status",
            "org",
            "team",
            "project",
            "cost_centre",
            "priced_as",
            "cost",
        ],
    )
    lines = [  # line, kind, window, gpu, event, share_tokens, cost
        ("gpu:x:w0", "gpu", w0, "GPU-x", "", 3000, "0.02334375"),  # a + b + c on GPU-x: the README's search line
        ("gpu:y:w0", "gpu", w0, "GPU-y", "", 1000, "0.01"),  # c on GPU-y
        ("gpu:x:w1", "gpu", w1, "GPU-x", "", 1500, "0.001"),  # e and 1,000 tokens of requests not stored here
        ("api:d", "api", w0 + timedelta(seconds=40), "", "d", 0, "0.000315"),
    ]
    client.insert(
        "ledger",
        [
            [line, kind, at, 60, *GROUP.values(), event, gpu, tokens, tokens, Decimal(cost), "USD", "tokens" if kind == "gpu" else "", 1]
            for line, kind, at, gpu, event, tokens, cost in lines
        ],
        column_names=[
            "line_id",
            "kind",
            "event_time",
            "window_seconds",
            *GROUP,
            "event_id",
            "gpu_uuid",
            "share_tokens",
            "window_tokens",
            "cost",
            "currency",
            "basis",
            "version",
        ],
    )
    client.insert(
        "outcomes",
        [["o1", "search_answered", "search", w0 + timedelta(minutes=2), True, ["a", "c"]]],
        column_names=["outcome_id", "kind", "org", "occurred_at", "success", "request_ids"],
    )

    costs = {
        event: (Decimal(cost), currency)
        for event, cost, currency in client.query("SELECT event_id, cost, currency FROM request_costs").result_rows
    }
    expected = {
        "a": share("0.02334375", 1000, 3000),
        "b": share("0.02334375", 1000, 3000),
        "c": share("0.02334375", 1000, 3000) + share("0.01", 1000, 1000),
        "e": share("0.001", 500, 1500),  # 0.000333333(3): rounded toward zero
        "d": Decimal("0.000315"),
    }
    assert costs == {event: (cost, "USD") for event, cost in expected.items()}
    assert (costs["a"][0], costs["e"][0]) == (Decimal("0.00778125"), Decimal("0.000333333"))
    assert client.query("SELECT requests, cost FROM outcome_costs WHERE outcome_id = 'o1'").result_rows == [
        (2, expected["a"] + expected["c"])
    ]
