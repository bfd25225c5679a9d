"""Cost per outcome end to end: the real gateway in front of a fake OpenAI-compatible backend, the real worker,
Kafka and ClickHouse (``tests.inference.fake_vllm.FakeVllm`` speaks the OpenAI wire format; no paid API is reachable).

100 support tickets, 3 chat requests each, 80 resolved: linked by client request ids, by W3C trace id and by
session id (a third each); the first 10 outcomes are sent before their requests. 20 more requests belong to no
ticket. Every expected figure is computed here from the README's rules and the demo price list, never with
the worker's pricing code.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

from gpuledger.clickhouse import connect
from gpuledger.commands import outcomes_cli
from gpuledger.commands.budgets import save
from gpuledger.commands.reference_import import import_orgs, import_prices
from gpuledger.kafka import AckedSender, read_all
from gpuledger.sections.gateway import GatewayConfig
from gpuledger.settings import Settings
from inference.gateway.app import create_app
from schemas import BudgetAlert, OutcomeEvent, codec_for
from streams.budgets.definitions import BudgetSpec
from tests.inference.fake_vllm import FakeVllm
from tests.inference.servers import serve
from tests.support import (
    DEMO,
    ROOT,
    WorkerProcess,
    consumer_lag,
    isolated,
    settings_env,
    wait_until,
)

RUN = uuid.uuid4().hex[:8]
SECRET = f"sk-support-{RUN}"
KEY_ID = "key-support-bot"  # support / chatbot / helpdesk in the demo org directory
TICKETS, SUCCESSES, EARLY, UNLINKED = 100, 80, 10, 20
LINKED_PROMPT, LINKED_COMPLETION = 10, 5  # FakeVllm counts whitespace-separated words as tokens
UNLINKED_PROMPT, UNLINKED_COMPLETION = 10, 10
TICKET_VALUE = Decimal("2.50")


def api_cost(prompt: int, completion: int, sku: str = "gpt-4o-mini") -> Decimal:
    """README, "API models": (prompt x input + completion x output) / 1,000,000, from the demo price file itself."""
    price = next(p for p in yaml.safe_load((DEMO / "prices.yaml").read_text())["prices"] if p["sku"] == sku)
    return (prompt * Decimal(price["input_per_mtok"]) + completion * Decimal(price["output_per_mtok"])) / 1_000_000


def trace_of(ticket: int) -> str:
    return hashlib.md5(f"{RUN}-{ticket}".encode()).hexdigest()


def link_of(ticket: int) -> str:
    return ("request_id", "trace", "session")[ticket % 3]


def headers_of(ticket: int, call: int) -> dict[str, str]:
    """The correlation header a client of this ticket sends (one mechanism per ticket)."""
    return {
        "request_id": {"x-request-id": f"req-{RUN}-{ticket}-{call}"},
        "trace": {"traceparent": f"00-{trace_of(ticket)}-{call + 1:016x}-01"},
        "session": {"x-gpuledger-session-id": f"sess-{RUN}-{ticket}"},
    }[link_of(ticket)]


def outcome_of(ticket: int) -> dict[str, Any]:
    body: dict[str, Any] = {"outcome_id": f"ticket-{RUN}-{ticket}", "kind": "ticket_resolved", "success": ticket < SUCCESSES}
    if ticket < SUCCESSES:
        body |= {"value": str(TICKET_VALUE), "currency": "USD"}
    link = link_of(ticket)
    if link == "request_id":
        body["request_ids"] = [f"req-{RUN}-{ticket}-{call}" for call in range(3)]
    elif link == "trace":
        body["trace_id"] = trace_of(ticket)
    else:
        body["session_id"] = f"sess-{RUN}-{ticket}"
    return body


@dataclass
class World:
    settings: Settings
    gateway: httpx.Client
    worker: WorkerProcess
    data_dir: Path
    early_cost_before_requests: tuple[int, Decimal]

    def query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        return connect(self.settings.clickhouse).query(sql, parameters=params).result_rows  # type: ignore[no-any-return]

    def cli(self, *args: str) -> Result:
        """``gpuledger outcomes ...`` in this process (a subprocess costs seconds of imports on a busy machine)."""
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(outcomes_cli, "get_settings", lambda: self.settings)
            return CliRunner().invoke(outcomes_cli.app, list(args))

    def subprocess_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **settings_env(self.settings, self.data_dir)}
        env.pop("GPULEDGER_CONFIG", None)
        return subprocess.run(
            [sys.executable, "-m", "gpuledger.commands.cli", *args],
            check=False,
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )


def _chat(client: httpx.Client, prompt: int, completion: int, headers: dict[str, str]) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": " ".join(["word"] * prompt)}], "max_tokens": completion}
    response = client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text


def _post_outcome(client: httpx.Client, body: dict[str, Any]) -> None:
    response = client.post("/v1/outcomes", json=body)
    assert response.status_code == 202, response.text


@pytest.fixture(scope="module")
def world(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = isolated(stack_settings, f"oc{RUN}")
    asyncio.run(import_orgs(settings, DEMO / "orgs.yaml"))
    asyncio.run(import_prices(settings, DEMO / "prices.yaml"))
    data_dir = tmp_path_factory.mktemp("outcomes")
    config = GatewayConfig.model_validate(
        {
            "backends": [{"name": "api", "kind": "openai", "base_url": "http://127.0.0.1:1/v1"}],  # replaced below, once the fake listens
            "models": [{"name": "gpt-4o-mini", "targets": [{"backend": "api"}]}],
            "keys": [
                {
                    "id": KEY_ID,
                    "sha256": hashlib.sha256(SECRET.encode()).hexdigest(),
                    "org": "support",
                    "team": "chatbot",
                    "project": "helpdesk",
                }
            ],
            "enforce_budgets": False,
        }
    )
    with ExitStack() as stack:
        worker = WorkerProcess(settings, data_dir / "worker").start()
        stack.callback(worker.stop)
        config.backends[0].base_url = stack.enter_context(serve(FakeVllm().app())) + "/v1"
        url = stack.enter_context(serve(create_app(config, settings)))
        client = stack.enter_context(httpx.Client(base_url=url, headers={"authorization": f"Bearer {SECRET}"}, timeout=30))
        w = World(settings, client, worker, data_dir, (0, Decimal(0)))
        for ticket in range(EARLY):  # outcomes first: stored before any of their requests exist
            _post_outcome(client, outcome_of(ticket))
        wait_until(lambda: w.query("SELECT count() FROM outcomes FINAL") == [(EARLY,)], 60, "the early outcomes stored", worker)
        ((count, cost),) = w.query("SELECT count(), sum(cost) FROM outcome_costs WHERE requests = 0")
        w.early_cost_before_requests = (count, Decimal(cost))
        for ticket in range(TICKETS):
            for call in range(3):
                _chat(client, LINKED_PROMPT, LINKED_COMPLETION, headers_of(ticket, call))
        for _ in range(UNLINKED):
            _chat(client, UNLINKED_PROMPT, UNLINKED_COMPLETION, {})
        for ticket in range(EARLY, TICKETS):
            _post_outcome(client, outcome_of(ticket))
        requests = 3 * TICKETS + UNLINKED
        wait_until(
            lambda: (
                w.query("SELECT count() FROM outcomes FINAL")[0][0] == TICKETS
                and w.query("SELECT countIf(cost > 0) FROM request_costs")[0][0] == requests
            ),
            90,
            "every outcome and priced request stored",
            worker,
        )
        yield w


def test_cost_per_success_is_the_kinds_whole_cost_over_its_successes_exactly(world: World) -> None:
    total = 3 * TICKETS * api_cost(LINKED_PROMPT, LINKED_COMPLETION)
    per_success = total / SUCCESSES
    assert per_success == per_success.quantize(Decimal("1e-9")), "the example is chosen so that the quotient is exact to 9 places"
    ((outcomes, successes, requests, cost, cost_per_success, cost_per_outcome),) = world.query(
        "SELECT sum(outcomes), sum(successes), sum(requests), sum(cost), sum(cost) / sum(successes), sum(cost) / sum(outcomes) "
        "FROM cost_per_outcome_daily WHERE kind = 'ticket_resolved'"
    )
    assert (outcomes, successes, requests) == (TICKETS, SUCCESSES, 3 * TICKETS)
    assert (Decimal(cost), Decimal(cost_per_success), Decimal(cost_per_outcome)) == (total, per_success, total / TICKETS)
    # Each ticket carries exactly its own three requests, whichever way they were linked.
    by_link = world.query("SELECT countIf(requests = 3), count() FROM outcome_costs WHERE kind = 'ticket_resolved'")
    assert by_link == [(TICKETS, TICKETS)]
    matched = dict(world.query("SELECT matched_by, count() FROM request_outcomes GROUP BY matched_by"))
    assert matched == {"request_id": 3 * 34, "trace": 3 * 33, "session": 3 * 33}

    report = world.cli("report", "--by", "kind", "--format", "json")
    assert report.exit_code == 0, report.output
    (row,) = json.loads(report.stdout)
    assert row["group"] == "ticket_resolved" and row["currency"] == "USD"
    assert (int(row["outcomes"]), int(row["successes"]), Decimal(row["cost"])) == (TICKETS, SUCCESSES, total)
    assert Decimal(row["cost_per_success"]) == per_success
    assert Decimal(row["value_per_cost"]) == (SUCCESSES * TICKET_VALUE / total).quantize(Decimal("0.0001"))


def test_an_outcome_sent_before_its_requests_gains_their_cost_when_they_arrive(world: World) -> None:
    assert world.early_cost_before_requests == (EARLY, Decimal(0))  # stored first, costing nothing then
    rows = world.query(
        f"SELECT requests, cost FROM outcome_costs WHERE outcome_id IN ('ticket-{RUN}-0', 'ticket-{RUN}-1', 'ticket-{RUN}-2')"
    )
    assert [(n, Decimal(c)) for n, c in rows] == [(3, 3 * api_cost(LINKED_PROMPT, LINKED_COMPLETION))] * 3


def test_requests_no_outcome_names_show_as_coverage(world: World) -> None:
    linked = 3 * TICKETS * api_cost(LINKED_PROMPT, LINKED_COMPLETION)
    unlinked = UNLINKED * api_cost(UNLINKED_PROMPT, UNLINKED_COMPLETION)
    assert unlinked * 10 == linked + unlinked, "the example's unlinked requests are exactly 10 % of the cost"
    coverage = {
        kind: (Decimal(linked_cost), Decimal(project_cost), Decimal(c))
        for kind, linked_cost, project_cost, c in world.query(
            "SELECT kind, sum(linked_cost), sum(project_cost), sum(linked_cost) / sum(project_cost) FROM outcome_coverage_daily "
            "WHERE org = 'support' GROUP BY kind"
        )
    }
    assert coverage == {"ticket_resolved": (linked, linked + unlinked, Decimal("0.9")), "": (unlinked, linked + unlinked, Decimal("0.1"))}
    report = world.subprocess_cli("outcomes", "report", "--by", "team", "--format", "csv")
    assert report.returncode == 0, report.stderr
    assert "support/chatbot" in report.stdout and ",0.9000" in report.stdout
    table = world.cli("report")  # the default: by kind, a rich table
    assert table.exit_code == 0 and "ticket_resolved" in table.output and "0.000016875" in table.output and " 0.9 " in table.output, (
        table.output
    )


def test_replayed_usage_and_outcomes_change_nothing(world: World) -> None:
    figures = "SELECT kind, count(), sum(requests), sum(cost) FROM outcome_costs GROUP BY kind ORDER BY kind"
    coverage = "SELECT kind, linked_cost, project_cost FROM outcome_coverage_daily ORDER BY kind"
    before = (world.query(figures), world.query(coverage))
    s = world.settings

    async def replay() -> None:
        sender = AckedSender(s.kafka)
        try:
            for topic in (s.topics.inference_usage, s.topics.outcomes):
                await sender.send_all(topic, [(m.key, m.value) for m in await read_all(s.kafka, topic)])
        finally:
            await sender.stop()

    asyncio.run(replay())
    _post_outcome(world.gateway, outcome_of(0))  # a client resending an outcome
    wait_until(
        lambda: asyncio.run(consumer_lag(s, [s.topics.inference_usage, s.topics.outcomes])) == 0, 60, "the replay consumed", world.worker
    )
    assert (world.query(figures), world.query(coverage)) == before
    assert world.query("SELECT count() FROM outcomes FINAL") == [(TICKETS,)]


def test_unit_budget_alerts_once_per_threshold(world: World) -> None:
    """0.00002 USD per resolved ticket against 0.000016875 spent per success (84 %): 50 % and 80 % fire, once each."""
    s = world.settings
    spec = BudgetSpec.model_validate(
        {
            "id": f"tickets-{RUN}",
            "org": "support",
            "team": "chatbot",
            "project": "helpdesk",
            "period": "week",
            "amount": "0.00002",
            "outcome_kind": "ticket_resolved",
        }
    )
    asyncio.run(save(s, [spec]))
    per_success = 3 * TICKETS * api_cost(LINKED_PROMPT, LINKED_COMPLETION) / SUCCESSES
    alerts = "SELECT threshold_pct, spend FROM budget_alerts FINAL WHERE budget_id = {b:String} ORDER BY threshold_pct"
    wait_until(lambda: len(world.query(alerts, b=spec.id)) == 2, 60, "two unit budget alerts", world.worker)
    assert [(pct, Decimal(spend)) for pct, spend in world.query(alerts, b=spec.id)] == [(50, per_success), (80, per_success)]
    # Several more evaluations later, still exactly one message per threshold on the alerts topic.
    recorded = world.query("SELECT count() FROM budget_alerts")[0][0]
    time.sleep(3 * s.budgets.evaluate_every_seconds + 1)
    published = [codec_for(BudgetAlert).decode(m.value) for m in asyncio.run(read_all(s.kafka, s.topics.budget_alerts))]
    mine = [a for a in published if a.budget_id == spec.id]
    assert sorted(a.threshold_pct for a in mine) == [50, 80]
    assert "per successful ticket_resolved" in mine[0].message and "0.000016875 USD" in mine[0].message
    assert world.query("SELECT count() FROM budget_alerts")[0][0] == recorded


def test_gateway_refuses_bad_outcomes_with_openai_errors(world: World) -> None:
    anonymous = httpx.post(f"{world.gateway.base_url}/v1/outcomes", json=outcome_of(1))
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"
    cases = [
        ({**outcome_of(1), "team": "search"}, 403, "payer_mismatch", "this key belongs to team 'chatbot'"),
        ({"outcome_id": "x", "kind": "ticket_resolved", "success": True}, 400, "invalid_outcome", "names none of its requests"),
        ({**outcome_of(1), "value": "1.5", "currency": ""}, 400, "invalid_outcome", "value needs its currency"),
        ({**outcome_of(1), "success": "yes"}, 400, "invalid_outcome", "success"),
        ({**outcome_of(1), "occurred_at": "2026-11-29T10:00:00"}, 400, "invalid_outcome", "needs a time zone"),
    ]
    for body, status, code, words in cases:
        response = world.gateway.post("/v1/outcomes", json=body)
        error = response.json()["error"]
        assert (response.status_code, error["code"]) == (status, code), response.text
        assert words in error["message"] and set(error) == {"message", "type", "param", "code"}
    # The usage events carry what the joins use, as the gateway read it from the headers.
    rows = world.query(
        f"SELECT client_request_id, trace_id, session_id FROM usage_events FINAL WHERE client_request_id = 'req-{RUN}-0-0' "
        f"OR trace_id = '{trace_of(1)}' OR session_id = 'sess-{RUN}-2' ORDER BY client_request_id DESC, trace_id DESC"
    )
    assert rows == [(f"req-{RUN}-0-0", "", "")] + [("", trace_of(1), "")] * 3 + [("", "", f"sess-{RUN}-2")] * 3


def test_import_is_all_or_nothing_and_lists_every_bad_row(world: World, tmp_path: Path) -> None:
    s = world.settings
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "outcome_id,kind,org,occurred_at,success,request_ids,value,currency\n"
        f"imp-{RUN}-1,ticket_resolved,support,2026-11-29T10:00:00Z,true,req-a req-b,,\n"
        f"imp-{RUN}-2,ticket_resolved,support,2026-11-29T10:00:00Z,maybe,req-c,,\n"
        f"imp-{RUN}-3,ticket_resolved,support,2026-11-29T10:00:00Z,false,,,\n"
        f"imp-{RUN}-1,ticket_resolved,support,2026-11-29T10:00:00Z,true,req-d,-3,USD\n"
    )
    before = len(asyncio.run(read_all(s.kafka, s.topics.outcomes)))
    result = world.cli("import", str(bad))
    assert result.exit_code == 1
    message = " ".join(result.stdout.split())
    assert "nothing imported" in message
    assert "row 2 (line 3): success" in message and "row 3 (line 4)" in message and "names none of its requests" in message
    assert "row 4 (line 5): value" in message and "negative" in message and f"duplicate outcome_id 'imp-{RUN}-1'" in message
    assert len(asyncio.run(read_all(s.kafka, s.topics.outcomes))) == before

    good = tmp_path / "good.jsonl"
    good.write_text(
        "\n".join(
            json.dumps(
                {
                    **outcome_of(2),
                    "outcome_id": f"imp-{RUN}-{n}",
                    "kind": "csat_survey",
                    "org": "support",
                    "team": "chatbot",
                    "project": "helpdesk",
                    "occurred_at": datetime.now(UTC).isoformat(),
                }
            )
            for n in range(2)
        )
        + "\n"
    )
    result = world.cli("import", str(good))
    assert result.exit_code == 0, result.output
    wait_until(
        lambda: world.query("SELECT count() FROM outcomes FINAL WHERE kind = 'csat_survey'") == [(2,)],
        30,
        "imported outcomes",
        world.worker,
    )
    # Both name ticket 2's session; its requests stay with the earlier outcome, the ticket (one outcome per request).
    assert world.query(
        "SELECT outcome_kind, count() FROM request_outcomes WHERE event_id IN "
        f"(SELECT event_id FROM usage_events FINAL WHERE session_id = 'sess-{RUN}-2') GROUP BY outcome_kind"
    ) == [("ticket_resolved", 3)]


def test_outcomes_the_worker_cannot_store_go_to_the_dead_letter_topic(world: World) -> None:
    """Any producer can write the topic: a non-Avro message and an outcome without org are refused with their reason, not lost."""
    s = world.settings
    orphan = codec_for(OutcomeEvent).encode(
        OutcomeEvent(outcome_id=f"bad-{RUN}", kind="ticket_resolved", org="", occurred_at=datetime.now(UTC), success=True, session_id="s")
    )

    async def send() -> None:
        sender = AckedSender(s.kafka)
        try:
            await sender.send_all(s.topics.outcomes, [(b"garbage", b"not avro"), (f"bad-{RUN}".encode(), orphan)])
        finally:
            await sender.stop()

    asyncio.run(send())

    def refused() -> list[str]:
        return [
            dict(m.headers)["x-reason"].decode()
            for m in asyncio.run(read_all(s.kafka, s.topics.dead_letter))
            if dict(m.headers).get("x-origin-topic") == s.topics.outcomes.encode()
        ]

    reasons = wait_until(lambda: len(refused()) == 2 and refused(), 30, "two dead letters", world.worker)
    assert any(r.startswith("decode:") for r in reasons) and "invalid: org is empty" in reasons
    assert world.query(f"SELECT count() FROM outcomes FINAL WHERE outcome_id = 'bad-{RUN}'") == [(0,)]
