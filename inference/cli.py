"""``gpuledger gateway``: run the metering gateway (mount ``inference.cli:app`` on the main CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import uvicorn

app = typer.Typer(help="The OpenAI-compatible metering gateway.", invoke_without_command=True)


@app.callback()
def run(
    config: Annotated[Path, typer.Option("--config", exists=True, dir_okay=False, help="Gateway YAML (backends, models, aliases, keys).")] = Path("gateway.yaml"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
) -> None:
    """Serve /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models in front of the configured backends."""
    from inference.gateway import create_app
    from inference.gateway_config import load_config
    from inference.server import uvicorn_config

    try:
        gateway_config = load_config(config)
    except Exception as exc:
        typer.echo(f"error: invalid gateway config {config}: {exc}", err=True)
        raise typer.Exit(1) from exc
    uvicorn.Server(uvicorn_config(create_app(gateway_config), gateway_config, host=host, port=port)).run()


if __name__ == "__main__":
    app()
