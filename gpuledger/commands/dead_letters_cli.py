"""``gpuledger dead-letters list | show | replay``: what the worker refused, decoded, and sent again after a fix."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gpuledger.commands import dead_letters as dl
from gpuledger.kafka import PublishRefused
from gpuledger.settings import get_settings

app = typer.Typer(help="Messages the worker refused (dead-letter topic): list, inspect, replay after a fix.", no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 200)

First = Annotated[int | None, typer.Option("--from", help="First dead-letter offset (inclusive).")]
Last = Annotated[int | None, typer.Option("--to", help="Last dead-letter offset (inclusive).")]
Reason = Annotated[str | None, typer.Option(help="Only those whose reason contains this text (case-insensitive).")]
Stage = Annotated[str | None, typer.Option(help="Only this stage: decode, invalid, pricing, store, reference.")]


def _selected(first: int | None, last: int | None, reason: str | None, stage: str | None) -> list[dl.DeadLetter]:
    try:
        letters = asyncio.run(dl.read(get_settings()))
    except LookupError as exc:
        console.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(1) from None
    return dl.select(letters, first=first, last=last, reason=reason, stage=stage)


@app.command("list")
def list_letters(first: First = None, last: Last = None, reason: Reason = None, stage: Stage = None) -> None:
    """Dead letters with their reason, origin (topic/partition/offset) and time, oldest first."""
    letters = _selected(first, last, reason, stage)
    table = Table("offset", "time (UTC)", "stage", "origin", "reason")
    for d in letters:
        origin = f"{d.origin_topic}/{d.origin_partition}@{d.origin_offset}" if d.origin_offset is not None else d.origin_topic
        table.add_row(str(d.offset), f"{d.time:%Y-%m-%d %H:%M:%S}", d.stage, origin, d.reason)
    console.print(table if letters else "no dead letters" + (" match" if any((first, last, reason, stage)) else ""))


@app.command("show")
def show(offset: Annotated[int, typer.Argument(help="Offset in the dead-letter topic (see `list`).")]) -> None:
    """One dead letter with its payload decoded by the project's codec (JSON)."""
    found = _selected(offset, offset, None, None)
    if not found:
        console.print(f"[bold red]error:[/bold red] no dead letter at offset {offset}")
        raise typer.Exit(1)
    d = found[0]
    detail = {
        "offset": d.offset,
        "time": d.time.isoformat(),
        "stage": d.stage,
        "reason": d.reason,
        "origin_topic": d.origin_topic,
        "origin_partition": d.origin_partition,
        "origin_offset": d.origin_offset,
        "key": d.key.decode(errors="replace") if d.key is not None else None,
        **dl.decoded(get_settings(), d),
    }
    console.print_json(json.dumps(detail))


@app.command("replay")
def replay(
    first: First = None,
    last: Last = None,
    reason: Reason = None,
    stage: Stage = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter (no filter given).")] = False,
) -> None:
    """Publish selected dead letters to their origin topic again, after fixing their cause.

    Harmless to repeat: events carry their id and the ledger is keyed by it, so a replayed event
    that was already stored replaces itself, and one still refused is dead-lettered again.
    """
    if not (all_ or any(v is not None for v in (first, last, reason, stage))):
        console.print("[bold red]error:[/bold red] choose what to replay: --from/--to offsets, --reason, --stage, or --all")
        raise typer.Exit(2)
    letters = _selected(first, last, reason, stage)
    skipped = [d for d in letters if not d.replayable]
    try:
        sent = asyncio.run(dl.replay(get_settings(), letters))
    except PublishRefused as exc:
        console.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"replayed {sent} dead letter(s) to their origin topics")
    for d in skipped:
        why = (
            "reference record: import a corrected file instead"
            if d.stage == "reference"
            else "value left out (too large); re-send it from its origin"
        )
        console.print(f"  skipped offset {d.offset}: {why}")
