"""``gpuledger topics``: create gpuledger's topics, or tail one with its Avro values decoded."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

app = typer.Typer(help="gpuledger's Kafka topics. Without a subcommand: create them (as `topics create`).", invoke_without_command=True)


@app.callback()
def topics(ctx: typer.Context) -> None:
    """Plain `gpuledger topics` keeps its old meaning: create the topics."""
    if ctx.invoked_subcommand is None:
        create()


@app.command()
def create() -> None:
    """Create gpuledger's Kafka topics if missing (the worker also does this at start)."""
    from gpuledger.kafka import ensure_topics
    from gpuledger.settings import get_settings

    created = asyncio.run(ensure_topics(get_settings()))
    typer.echo(f"created: {', '.join(created) or 'none (all exist)'}")


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="Topic name, e.g. gpuledger.dead-letter.v1.")],
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Start at the oldest message instead of new ones only.")] = False,
    max_messages: Annotated[int | None, typer.Option(min=1, help="Stop after this many messages.")] = None,
    idle_timeout: Annotated[float | None, typer.Option(min=0.1, help="Stop after this many seconds without a message.")] = None,
) -> None:
    """Print messages as JSON lines, Avro values decoded with gpuledger's codec (dead letters with their headers)."""
    from gpuledger.commands.tail import UnknownTopic, tail_topic
    from gpuledger.settings import get_settings

    try:
        asyncio.run(
            tail_topic(
                get_settings().kafka,
                topic,
                from_beginning=from_beginning,
                max_messages=max_messages,
                idle_timeout=idle_timeout,
                out=typer.echo,
            )
        )
    except UnknownTopic as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        pass
