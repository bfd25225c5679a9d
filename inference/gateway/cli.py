"""``gpuledger gateway``: run the metering gateway (mount ``inference.gateway.cli:app`` on the main CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import uvicorn

app = typer.Typer(help="The OpenAI-compatible metering gateway.", invoke_without_command=True)


@app.callback()
def run(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            dir_okay=False,
            help="The settings file, as `gpuledger --config` (its `gateway:` section: backends, models, aliases, keys).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
) -> None:
    """Serve /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models in front of the configured backends."""
    from gpuledger.settings import SettingsError, config_file, settings_file, use_subcommand_config
    from inference.gateway.app import create_app
    from inference.gateway.server import uvicorn_config

    try:
        settings = use_subcommand_config(config)
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if settings.gateway is None:
        where = settings_file(config_file()) or "no settings file (give --config FILE or set GPULEDGER_CONFIG)"
        typer.echo(f"error: the gateway is not configured: add a `gateway:` section (backends, models) to the settings ({where})", err=True)
        raise typer.Exit(2)
    uvicorn.Server(uvicorn_config(create_app(settings.gateway, settings), settings.gateway, host=host, port=port)).run()


if __name__ == "__main__":
    app()
