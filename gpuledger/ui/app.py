"""The dashboard's ASGI app: pages (server-rendered), their JSON for live refresh, CSV downloads, sign-in.

Everything the page loads comes from this origin (the charting library is vendored under
``static/vendor``), and the Content-Security-Policy says so to the browser, so the dashboard
works on an air-gapped network and a page cannot be made to call elsewhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gpuledger.clickhouse import connect
from gpuledger.settings import Settings
from gpuledger.ui import queries
from gpuledger.ui.auth import COOKIE, Refused, authenticate, from_token, is_https
from gpuledger.ui.filters import BadFilter, Filters
from gpuledger.ui.tables import Table

HERE = Path(__file__).parent
NAV = [
    ("overview", "/", "Overview"),
    ("drill", "/drill", "Drill-down"),
    ("budgets", "/budgets", "Budgets"),
    ("gpus", "/gpus", "GPUs"),
    ("models", "/models", "Models"),
]
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self';"
    " frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


def ui_settings(settings: Settings) -> Settings:
    """The settings the dashboard reads with: its own (read-only) ClickHouse user, and readonly=1 on every query."""
    ui = settings.ui
    clickhouse = settings.clickhouse.model_copy(
        update={
            "readonly": True,
            "user": ui.clickhouse_user or settings.clickhouse.user,
            "password": ui.clickhouse_password or settings.clickhouse.password,
        }
    )
    return settings.model_copy(update={"clickhouse": clickhouse})


def heat_class(value: Any) -> str:
    """A CSS class per 10 % of utilization (classes, not inline styles: the CSP forbids inline styles)."""
    return "" if value is None else f"heat{min(int(value) // 10, 10)}"


def create_app(settings: Settings) -> Starlette:
    """The dashboard over ``settings``' ClickHouse (read-only) and Kafka (budget standings)."""
    settings = ui_settings(settings)
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.globals.update(heat_class=heat_class, nav=NAV, refresh_ms=int(settings.ui.refresh_seconds * 1000))
    state: dict[str, Any] = {}

    def client() -> Any:
        if "client" not in state:
            state["client"] = connect(settings.clickhouse)
        return state["client"]

    async def build(request: Request, page: Callable[[queries.Ctx], queries.Page]) -> tuple[queries.Ctx, queries.Page]:
        """Who asks, what the URL filters, then the page's figures (ClickHouse calls run off the event loop)."""
        viewer = authenticate(request, settings.ui)
        filters = Filters.parse(request.query_params, datetime.now(UTC).date())
        ctx = queries.Ctx(settings, await run_in_threadpool(client), viewer, filters, state)
        return ctx, await run_in_threadpool(page, ctx)

    def render_table(table: Table) -> str:
        return env.get_template("table.html").render(table=table)

    def page_route(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            ctx, page = await build(request, queries.PAGES[name])
            orgs = await run_in_threadpool(queries.visible_orgs, ctx)
            html = env.get_template("page.html").render(
                page=page,
                name=name,
                viewer=ctx.viewer,
                filters=ctx.filters,
                orgs=orgs,
                render_table=render_table,
                api_url=ctx.filters.url(f"/api/{name}"),
                csv_url=lambda t: ctx.filters.url(f"/csv/{name}/{t}"),
            )
            return HTMLResponse(html)

        return endpoint

    async def api(request: Request) -> Response:
        name = request.path_params["page"]
        if name not in queries.PAGES:
            return PlainTextResponse(f"no page {name!r}", 404)
        _, page = await build(request, queries.PAGES[name])
        return JSONResponse(
            {"generated_at": datetime.now(UTC).isoformat(), "tables": {t.name: render_table(t) for t in page.tables}, "charts": page.charts}
        )

    async def csv(request: Request) -> Response:
        name, table_name = request.path_params["page"], request.path_params["table"]
        if name not in queries.PAGES:
            return PlainTextResponse(f"no page {name!r}", 404)
        page_of = queries.PAGES[name]
        _, page = await build(request, lambda ctx: page_of(replace(ctx, row_limit=queries.LINES_CSV)))
        try:
            table = page.table(table_name)
        except StopIteration:
            return PlainTextResponse(f"page {name} has no table {table_name!r}", 404)
        filename = f"gpuledger-{name}-{table_name}.csv"
        return Response(
            table.csv(), media_type="text/csv; charset=utf-8", headers={"Content-Disposition": f'attachment; filename="{filename}"'}
        )

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return HTMLResponse(env.get_template("login.html").render(error=""))
        # the form is one urlencoded field: parse_qs rather than a multipart dependency
        token = parse_qs((await request.body()).decode(errors="replace")).get("token", [""])[0]
        try:
            from_token(token, settings.ui)
        except Refused as exc:
            return HTMLResponse(env.get_template("login.html").render(error=str(exc)), exc.status)
        response = RedirectResponse("/", 303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=is_https(request, settings.ui))
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE, httponly=True, samesite="strict", secure=is_https(request, settings.ui))
        return response

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        if exc.status == 401 and not request.url.path.startswith(("/api/", "/csv/")):
            return RedirectResponse("/login", 303)
        return PlainTextResponse(str(exc), exc.status)

    async def bad_filter(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(f"bad request: {exc}", 400)

    async def security_headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    return Starlette(
        routes=[
            *(Route(path, page_route(name)) for name, path, _ in NAV),
            Route("/lines", page_route("lines")),
            Route("/api/{page}", api),
            Route("/csv/{page}/{table}", csv),
            Route("/login", login, methods=["GET", "POST"]),
            Route("/logout", logout),
            Route("/healthz", lambda r: PlainTextResponse("ok")),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=security_headers)],
        exception_handlers={Refused: refused, BadFilter: bad_filter},
    )
