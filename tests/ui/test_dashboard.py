"""The dashboard in a real Chromium (Debian's ``chromium``, driven by Playwright) against the real engines.

A simulated fleet goes through the real Kafka and worker into ClickHouse; ``gpuledger ui`` runs as its
own process. Nothing is mocked: figures on the pages are compared with ClickHouse's own sums.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, Page, expect, sync_playwright

from gpuledger.clickhouse import connect
from gpuledger.commands.budgets import save
from gpuledger.commands.reference_import import import_equivalents, import_orgs, import_prices
from gpuledger.commands.simulate import publish_fleet
from gpuledger.settings import Settings
from gpuledger.ui.auth import token_digest
from streams.budgets.definitions import parse_specs
from tests.conftest import BASE
from tests.support import (
    ROOT,
    WorkerProcess,
    expected_totals,
    isolated,
    org_totals,
    settings_env,
    wait_until,
)

DEMO = ROOT / "gpuledger" / "data" / "demo"
CHROMIUM = "/usr/bin/chromium"
PORT = BASE + 700
ORIGIN = f"http://127.0.0.1:{PORT}"
ADMIN_TOKEN, RESEARCH_TOKEN = "admin-secret-1", "research-secret-2"
CENT = Decimal("0.01")
PAGES = ["/", "/drill", "/budgets", "/gpus", "/models", "/lines?org=research"]
pytestmark = [
    pytest.mark.engines,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]


@dataclass
class Dashboard:
    settings: Settings
    shots: Path

    def ch(self, sql: str, **params: Any) -> list[tuple]:
        return connect(self.settings.clickhouse).query(sql, parameters=params).result_rows


def cents(value: Decimal) -> str:
    return f"{Decimal(value).quantize(CENT, ROUND_HALF_EVEN):,}"


@pytest.fixture(scope="module")
def dashboard(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """A fleet booked by the real worker, two tiny budgets that alert, and `gpuledger ui` serving it."""
    tmp = tmp_path_factory.mktemp("ui")
    settings = isolated(stack_settings, "ui")
    asyncio.run(import_orgs(settings, DEMO / "orgs.yaml"))
    asyncio.run(import_prices(settings, DEMO / "prices.yaml"))
    asyncio.run(import_equivalents(settings, DEMO / "equivalents.yaml"))
    asyncio.run(
        save(
            settings,
            parse_specs(
                [
                    {"id": "research-tiny", "org": "research", "amount": "0.05", "period": "day"},
                    {"id": "support-tiny", "org": "support", "amount": "0.05", "period": "day"},
                ],
                "test",
            ),
        )
    )
    worker = WorkerProcess(settings, tmp / "worker").start()
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=4)
    truth = asyncio.run(
        publish_fleet(
            settings,
            seed=16,
            start=start,
            minutes=3,
            scale=0.5,
            orgs=DEMO / "orgs.yaml",
            prices=DEMO / "prices.yaml",
            truth_path=tmp / "truth.json",
            console=None,
        )
    )
    wait_until(lambda: org_totals(settings) == expected_totals(truth), 120, "the ledger to equal the simulation", worker)
    client = connect(settings.clickhouse)
    wait_until(lambda: client.query("SELECT count() FROM budget_alerts").result_rows[0][0] >= 2, 60, "budget alerts", worker)
    config = tmp / "gpuledger.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "ui": {
                    "refresh_seconds": 1,
                    "tokens": [
                        {"name": "finops", "sha256": token_digest(ADMIN_TOKEN), "admin": True},
                        {"name": "research-lead", "sha256": token_digest(RESEARCH_TOKEN), "orgs": ["research"]},
                    ],
                    "trusted_proxies": ["127.0.0.1/32"],
                    "group_orgs": {"support-leads": ["support"]},
                }
            }
        )
    )
    env = {**os.environ, **settings_env(settings, tmp / "ui"), "GPULEDGER_CONFIG": str(config)}
    log = (tmp / "ui.log").open("wb")
    ui = subprocess.Popen(
        [sys.executable, "-m", "gpuledger.commands.cli", "ui", "--port", str(PORT)], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_until(lambda: _healthy() or ui.poll() is not None, 30, "gpuledger ui to answer")
        assert ui.poll() is None, f"gpuledger ui exited: {(tmp / 'ui.log').read_text()[-2000:]}"
        yield Dashboard(settings, tmp / "screenshots")
    finally:
        ui.terminate()
        ui.wait(10)
        worker.stop()


def _healthy() -> bool:
    try:
        return httpx.get(f"{ORIGIN}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def open_page(browser: Browser, token: str, width: int = 1280) -> tuple[Page, list[str], list[str]]:
    """A page signed in with ``token``; returns it with the console errors and every URL it requested."""
    context = browser.new_context(viewport={"width": width, "height": 900}, extra_http_headers={"Authorization": f"Bearer {token}"})
    page = context.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    return page, errors, requests


def cell(page: Page, table: str, label_key: str, label: str, key: str) -> str:
    """The ``key`` cell of the body row whose ``label_key`` cell reads exactly ``label``."""
    label_cell = page.locator(f"td[data-key='{label_key}']", has_text=re.compile(f"^{re.escape(label)}$"))
    row = page.locator(f"#table-{table} tbody tr").filter(has=label_cell)
    expect(row).to_have_count(1)
    return row.locator(f"td[data-key='{key}']").inner_text()


def column(page: Page, table: str, key: str) -> list[str]:
    return page.locator(f"#table-{table} tbody td[data-key='{key}']").all_inner_texts()


def total_cell(page: Page, table: str, key: str) -> str:
    return page.locator(f"#table-{table} tfoot tr.total td[data-key='{key}']").first.inner_text()


def test_every_page_loads_clean_from_its_own_origin_at_desktop_and_phone_widths(dashboard: Dashboard, browser: Browser) -> None:
    dashboard.shots.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        page, errors, requests = open_page(browser, ADMIN_TOKEN, width)
        for path in PAGES:
            response = page.goto(ORIGIN + path)
            assert response is not None and response.status == 200, path
            expect(page.locator("#updated")).to_contain_text(":")  # the live refresh ran
            name = path.strip("/").split("?")[0] or "overview"
            page.screenshot(path=str(dashboard.shots / f"{name}-{width}.png"), full_page=True)
            # usable: the page itself never scrolls sideways (wide tables scroll in their own box) and the nav is on screen
            assert page.evaluate("document.documentElement.scrollWidth") <= width, (path, width)
            assert page.locator("header nav a").last.bounding_box()["x"] < width
        assert errors == [], errors
        foreign = [u for u in requests if not u.startswith(ORIGIN + "/")]
        assert foreign == [] and len(requests) > 2 * len(PAGES), foreign
        page.context.close()
    print(f"screenshots: {dashboard.shots}")


def test_figures_equal_clickhouse_to_the_cent(dashboard: Dashboard, browser: Browser) -> None:
    client = connect(dashboard.settings.clickhouse)
    totals = (
        "SELECT (SELECT sum(cost) FROM spend_daily) = (SELECT sum(cost) FROM ledger FINAL)"
        " AND (SELECT sum(cost) FROM gpu_daily WHERE kind = 'idle') = (SELECT sum(cost) FROM ledger FINAL WHERE kind = 'idle')"
    )
    wait_until(lambda: client.query(totals).result_rows[0][0], 30, "the worker's rollup pass to catch up with the ledger")
    month = datetime.now(UTC).date().replace(day=1)
    ledger = dict(dashboard.ch("SELECT org, sum(cost) FROM ledger FINAL WHERE event_time >= {m:Date} GROUP BY org", m=month))
    page, errors, _ = open_page(browser, ADMIN_TOKEN)
    page.goto(ORIGIN + "/")
    for org, total in ledger.items():
        assert cell(page, "orgs", "group", org, "this") == cents(total), org
    assert total_cell(page, "orgs", "this") == cents(sum(ledger.values()))
    page.goto(ORIGIN + "/drill?org=research")
    teams = dict(dashboard.ch("SELECT team, sum(cost) FROM ledger FINAL WHERE org = 'research' GROUP BY team"))
    for team, total in teams.items():
        assert cell(page, "spend", "name", team, "total") == cents(total)
    assert total_cell(page, "spend", "total") == cents(sum(teams.values()))
    # The CSV carries the exact figures: its rows add up to the ledger to the nano-unit.
    csv = httpx.get(f"{ORIGIN}/csv/drill/spend?org=research", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).text.splitlines()
    header = csv[0].split(",")
    assert sum(Decimal(line.split(",")[header.index("total")]) for line in csv[1:]) == sum(teams.values())
    idle = dashboard.ch("SELECT sum(cost) FROM ledger FINAL WHERE kind = 'idle'")[0][0]
    page.goto(ORIGIN + "/gpus")
    assert total_cell(page, "idle", "cost") == cents(idle)
    assert errors == []


def test_drill_down_to_the_ledger_lines_and_the_filter_form(dashboard: Dashboard, browser: Browser) -> None:
    page, errors, _ = open_page(browser, ADMIN_TOKEN)
    page.goto(ORIGIN + "/")
    page.locator("#table-orgs a", has_text="research").click()
    page.wait_for_url("**/drill?*org=research*")
    page.locator("#table-spend td[data-key='name'] a", has_text="agents").click()  # org -> team
    page.wait_for_url("**team=agents*")
    page.locator("#table-spend td[data-key='name'] a").first.click()  # team -> project
    page.locator("#table-spend td[data-key='name'] a").first.click()  # project -> model
    page.wait_for_url("**model=*")
    assert page.locator("#table-spend th").first.inner_text() == "key"
    model = page.url.split("model=")[1].split("&")[0]
    page.locator("#table-spend td[data-key='lines'] a").first.click()  # the lines behind the first key's figure
    page.wait_for_url("**/lines?*key_id=*")
    line_ids = column(page, "lines", "line_id")
    key = page.url.split("key_id=")[1].split("&")[0]
    expected = dashboard.ch(
        "SELECT line_id FROM ledger FINAL WHERE org = 'research' AND team = 'agents' AND key_id = {k:String} AND model = {m:String}",
        k=key,
        m=model.replace("%2F", "/").replace("+", " "),
    )
    assert line_ids and sorted(line_ids) == sorted(r[0] for r in expected)
    assert all(column(page, "lines", "price_id"))  # every line names its price
    # The filter form writes the org into the URL (a shareable link) and the page follows it.
    page.goto(ORIGIN + "/drill")
    page.select_option("select[name=org]", "support")
    page.locator("form.filters button").click()
    page.wait_for_url("**org=support*")
    assert page.locator("#table-spend th").first.inner_text() == "team"
    assert "chatbot" in page.locator("#table-spend").inner_text()
    assert errors == []


def test_an_org_scoped_viewer_cannot_reach_another_org(dashboard: Dashboard, browser: Browser) -> None:
    page, _, _ = open_page(browser, RESEARCH_TOKEN)
    page.goto(ORIGIN + "/")
    orgs = column(page, "orgs", "group")
    assert orgs == ["research"]
    page.goto(ORIGIN + "/budgets")
    assert column(page, "standings", "budget_id") == ["research-tiny"]
    assert set(column(page, "alerts", "budget_id")) == {"research-tiny"}
    for path in (
        "/drill?org=support",
        "/api/drill?org=support",
        "/csv/lines/lines?org=support",
        "/lines?org=support",
        "/gpus?org=support",
        "/models?org=support",
        "/budgets?org=support",
        "/api/overview?org=support",
    ):
        response = page.goto(ORIGIN + path)
        assert response is not None and response.status == 403, path
    # Without an org in the URL, the query layer still keeps to research: no support line leaks through a team filter.
    body = httpx.get(f"{ORIGIN}/csv/lines/lines?team=chatbot", headers={"Authorization": f"Bearer {RESEARCH_TOKEN}"}).text.splitlines()
    assert len(body) == 1, body[:3]
    everything = httpx.get(f"{ORIGIN}/csv/lines/lines", headers={"Authorization": f"Bearer {RESEARCH_TOKEN}"}).text.splitlines()
    org_column = everything[0].split(",").index("org")
    assert len(everything) > 1 and {line.split(",")[org_column] for line in everything[1:]} == {"research"}


def test_sign_in_by_proxy_headers_and_by_token_form(dashboard: Dashboard, browser: Browser) -> None:
    proxied = {"X-Forwarded-User": "sam", "X-Forwarded-Groups": "support-leads,staff"}
    assert httpx.get(f"{ORIGIN}/api/drill?org=support", headers=proxied).status_code == 200  # 127.0.0.1 is the trusted proxy here
    assert httpx.get(f"{ORIGIN}/api/drill?org=research", headers=proxied).status_code == 403
    assert httpx.get(f"{ORIGIN}/api/overview").status_code == 401
    assert httpx.get(f"{ORIGIN}/api/overview", headers={"Authorization": "Bearer wrong"}).status_code == 401
    context = browser.new_context()
    page = context.new_page()
    page.goto(ORIGIN + "/")
    page.wait_for_url("**/login")
    page.fill("#token", RESEARCH_TOKEN)
    page.locator("form button").click()
    page.wait_for_url(ORIGIN + "/")
    assert "research-lead" in page.locator("header .who").inner_text()
    context.close()


def test_figures_refresh_without_a_reload(dashboard: Dashboard, browser: Browser, tmp_path: Path) -> None:
    page, errors, _ = open_page(browser, ADMIN_TOKEN)
    page.goto(ORIGIN + "/lines?org=research")
    before = page.locator("#table-summary td[data-key='lines']").inner_text()
    page.evaluate("window.__marker = 1")  # survives only if the page is not reloaded
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's event loop
        pool.submit(
            asyncio.run,
            publish_fleet(
                dashboard.settings,
                seed=99,
                start=start,
                minutes=1,
                scale=0.2,
                orgs=DEMO / "orgs.yaml",
                prices=DEMO / "prices.yaml",
                truth_path=tmp_path / "truth.json",
                console=None,
            ),
        ).result()
    began = time.monotonic()
    expect(page.locator("#table-summary td[data-key='lines']")).not_to_have_text(before, timeout=30_000)
    assert page.evaluate("window.__marker") == 1
    print(f"new lines shown {time.monotonic() - began:.1f} s after publishing")
    assert errors == []
