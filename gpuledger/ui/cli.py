"""``gpuledger ui``: serve the dashboard (uvicorn), by default on 127.0.0.1 only."""

from __future__ import annotations

from typing import Annotated

import typer

from gpuledger.settings import get_settings


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default: ui.host, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: ui.port, 8088).")] = None,
) -> None:
    """Serve the web dashboard: spend, drill-down to ledger lines, budgets, GPUs, models (read-only)."""
    import uvicorn

    from gpuledger.ui.app import create_app
    from gpuledger.ui.auth import is_loopback

    settings = get_settings()
    bind = host or settings.ui.host
    if settings.ui.anonymous == "admin" and not is_loopback(bind):
        typer.echo(
            f"error: ui.anonymous=admin is only allowed on a loopback address, not {bind}; configure ui.tokens or a trusted proxy", err=True
        )
        raise typer.Exit(1)
    if settings.ui.anonymous == "refuse" and not settings.ui.tokens and not settings.ui.trusted_proxies:
        typer.echo(
            "warning: no ui.tokens and no ui.trusted_proxies: every request will be refused (set GPULEDGER_UI__ANONYMOUS=admin for local use)",
            err=True,
        )
    uvicorn.run(create_app(settings), host=bind, port=port or settings.ui.port, log_level="warning", access_log=False)
