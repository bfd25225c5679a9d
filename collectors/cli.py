"""``gpuledger collector``: run the GPU collector agent on this node."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="GPU collector agent: samples GPUs via NVML and publishes GpuSample events to Kafka.", pretty_exceptions_enable=False
)


@app.callback(invoke_without_command=True)
def run(
    source: Annotated[str | None, typer.Option(help="nvml (real GPUs) or simulated (seeded realistic traces).")] = None,
    interval: Annotated[float | None, typer.Option(help="Sample interval in seconds (default 5).")] = None,
    once: Annotated[bool, typer.Option("--once", help="Take one interval, publish it, exit.")] = False,
    gpus: Annotated[int | None, typer.Option(help="Number of simulated GPUs.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Port of /metrics and /healthz (0: off).")] = None,
    metrics_host: Annotated[str | None, typer.Option(help="Bind address of /metrics and /healthz.")] = None,
    spool_dir: Annotated[Path | None, typer.Option(help="Where samples wait while Kafka is unreachable.")] = None,
    node: Annotated[str | None, typer.Option(help="Node name (default: $NODE_NAME or the hostname).")] = None,
) -> None:
    """Sample every GPU (or MIG instance) each interval and publish to Kafka; SIGTERM flushes and exits."""
    from collectors.agent import Agent
    from collectors.metrics import PortUnavailable
    from collectors.sampler import NvmlUnavailable
    from collectors.spool import SpoolUnavailable
    from gpuledger.logs import configure_logging
    from gpuledger.sections.collector import CollectorSettings
    from gpuledger.settings import SettingsError, get_settings

    def say(message: str) -> None:
        typer.echo(message, err=True)

    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "source": source,
            "interval_seconds": interval,
            "simulated_gpus": gpus,
            "metrics_port": metrics_port,
            "metrics_host": metrics_host,
            "spool_dir": spool_dir,
            "node": node,
        }.items()
        if v is not None
    }
    if source is not None and source not in ("nvml", "simulated"):
        raise typer.BadParameter("must be 'nvml' or 'simulated'", param_hint="--source")
    try:
        settings = get_settings()
        cfg = (
            CollectorSettings.model_validate({**settings.collector.model_dump(exclude_unset=True), **overrides})
            if overrides
            else settings.collector
        )
    except (SettingsError, ValueError) as exc:
        say(f"error: invalid configuration: {exc}")
        raise typer.Exit(2) from exc
    configure_logging(settings.log_level, settings.log_format)
    try:
        agent = Agent(cfg, settings)
        intervals = asyncio.run(agent.run(once=once))
    except NvmlUnavailable as exc:
        say(f"error: {exc}")
        raise typer.Exit(3) from exc
    except (SpoolUnavailable, PortUnavailable) as exc:  # README "Exit codes": 5, a local resource cannot be used
        say(f"error: {exc}")
        raise typer.Exit(5) from None
    if once:
        left = len(agent.spool)
        say(
            f"{intervals} interval(s), {agent.sampler.stats.samples} sample(s) taken; "
            f"published {agent.publisher.stats.published}, spooled {left} (Kafka {'reached' if not left else 'unreachable'})"
        )
        if left:
            raise typer.Exit(4)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
