"""Who the dashboard lets in, and that it can only read (the real ClickHouse; the app in-process).

The TCP peer address is what decides whether proxy headers are believed, so these tests set it
explicitly (Starlette's test client lets a test choose the client address); the browser tests in
test_dashboard.py run the app as a real server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from gpuledger.clickhouse import connect
from gpuledger.settings import Settings, UISettings, UIToken
from gpuledger.ui.app import create_app, ui_settings
from gpuledger.ui.auth import token_digest
from tests.support import ROOT, isolated

pytestmark = pytest.mark.engines


@pytest.fixture(scope="module")
def settings(stack_settings: Settings) -> Settings:
    base = isolated(stack_settings, "ui_access")
    return base.model_copy(
        update={
            "ui": UISettings(
                trusted_proxies=["10.0.0.0/24"],
                group_orgs={"research-people": ["research"]},
                admin_groups=["finops"],
                tokens=[UIToken(name="ci", sha256=token_digest("s3cret"), orgs=["search"])],
            )
        }
    )


def client(settings: Settings, peer: str) -> Iterator[TestClient]:
    return TestClient(create_app(settings), client=(peer, 40000), follow_redirects=False)


def test_proxy_headers_count_only_from_the_configured_proxy(settings: Settings) -> None:
    research = {"X-Forwarded-User": "ana", "X-Forwarded-Groups": "research-people"}
    with client(settings, "10.0.0.7") as proxy:
        assert proxy.get("/api/drill", headers=research).status_code == 200
        assert proxy.get("/api/drill?org=search", headers=research).status_code == 403
        assert proxy.get("/api/drill?org=search", headers={**research, "X-Forwarded-Groups": "finops"}).status_code == 200
        unmapped = proxy.get("/api/drill", headers={**research, "X-Forwarded-Groups": "nobody"})
        assert unmapped.status_code == 403 and "no group mapped" in unmapped.text
    with client(settings, "192.0.2.9") as elsewhere:  # the same headers straight from a client: refused
        refused = elsewhere.get("/api/drill", headers=research)
        assert refused.status_code == 403 and "not a trusted proxy" in refused.text


def test_tokens_are_checked_by_their_hash_and_pages_send_strangers_to_sign_in(settings: Settings) -> None:
    with client(settings, "192.0.2.9") as c:
        assert c.get("/api/overview", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/api/overview?org=research", headers={"Authorization": "Bearer s3cret"}).status_code == 403
        assert c.get("/api/overview", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.get("/drill").headers["location"] == "/login"
        signed_in = c.post("/login", data={"token": "s3cret"})
        assert signed_in.status_code == 303 and "httponly" in signed_in.headers["set-cookie"].lower()
        assert c.get("/api/overview").status_code == 200  # the cookie now carries the token


def test_bad_filters_are_refused_with_what_to_fix(settings: Settings) -> None:
    with client(settings, "192.0.2.9") as c:
        auth = {"Authorization": "Bearer s3cret"}
        bad = c.get("/api/drill?since=2026-13-01", headers=auth)
        assert bad.status_code == 400 and "since='2026-13-01' is not a date; use YYYY-MM-DD" in bad.text
        empty = c.get("/api/drill?since=2026-11-05&until=2026-11-05", headers=auth)
        assert empty.status_code == 400 and "not before" in empty.text


def test_every_response_forbids_other_origins(settings: Settings) -> None:
    with client(settings, "192.0.2.9") as c:
        csp = c.get("/login").headers["content-security-policy"]
        assert "default-src 'self'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp


def test_anonymous_admin_is_refused_on_a_non_loopback_address() -> None:
    env = {**os.environ, "GPULEDGER_UI__ANONYMOUS": "admin"}
    env.pop("GPULEDGER_CONFIG", None)
    run = subprocess.run(
        [sys.executable, "-m", "gpuledger.commands.cli", "ui", "--host", "0.0.0.0"],
        check=False,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1 and "only allowed on a loopback address, not 0.0.0.0" in run.stderr


def test_the_dashboards_clickhouse_connection_cannot_write(settings: Settings) -> None:
    readonly = connect(ui_settings(settings).clickhouse)
    assert readonly.query("SELECT getSetting('readonly')").result_rows == [(1,)]
    with pytest.raises(Exception, match="readonly"):
        readonly.command("CREATE TABLE ui_must_not_write (a UInt8) ENGINE = Memory")


def test_the_sign_in_cookie_is_secure_behind_a_tls_ingress_only_when_the_proxy_says_so(settings: Settings) -> None:
    """A TLS ingress forwards plain HTTP with ``X-Forwarded-Proto: https``: believed from the configured proxy only."""

    def cookie(peer: str, headers: dict[str, str]) -> str:
        with client(settings, peer) as c:
            response = c.post("/login", data={"token": "s3cret"}, headers=headers)
            assert response.status_code == 303
            return response.headers["set-cookie"].lower()

    https = {"X-Forwarded-Proto": "https"}
    assert "; secure" in cookie("10.0.0.7", https)  # the trusted proxy terminated TLS
    assert "; secure" not in cookie("10.0.0.7", {})  # plain HTTP all the way (a local install)
    assert "; secure" not in cookie("192.0.2.9", https)  # anyone else's header is ignored
    assert "; secure" not in cookie("10.0.0.7", {"X-Forwarded-Proto": "http"})
    with client(settings, "10.0.0.7") as c:
        assert "; secure" in c.get("/logout", headers=https).headers["set-cookie"].lower()
