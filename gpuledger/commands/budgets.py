"""``gpuledger budgets set | import | list | delete``: validate budgets, publish them to their compacted topic.

Validation checks a budget against what the ledger can actually contain: its org (and
team, project) must be in the org directory, and its currency must be one the price
list uses, since spend is only ever booked in those. Every problem is reported with
what to do about it; nothing is published unless every budget in the request is valid.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from gpuledger.commands.reference_import import ReferenceFileError, load_yaml, publish
from gpuledger.kafka import ensure_topics, read_records, table_topic
from gpuledger.settings import Settings
from schemas import Budget, BudgetStatus, OrgDirectory, Price, codec_for
from schemas.keys import budget_key
from streams.budgets.definitions import BudgetError, BudgetSpec, check_against

log = structlog.get_logger()
R = TypeVar("R")


def read_file(path: Path) -> list[dict[str, Any]]:
    """The entries of a budgets YAML file; BudgetError for a missing, binary or invalid file or a key given twice."""
    try:
        data, _ = load_yaml(path)
    except ReferenceFileError as exc:
        raise BudgetError(str(exc)) from None
    entries = data.get("budgets") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise BudgetError(f"{path}: expected a non-empty list under 'budgets:'")
    return entries


async def _known(settings: Settings) -> tuple[list[OrgDirectory], set[str]]:
    """The org directory and the currencies of the price list, read from their topics."""
    orgs = await read_records(settings.kafka, table_topic(settings, "orgs"), OrgDirectory)
    currencies = {p.currency for p in await read_records(settings.kafka, table_topic(settings, "prices"), Price)}
    return orgs, currencies


async def save(settings: Settings, specs: list[BudgetSpec]) -> list[Budget]:
    """Validate ``specs`` against the directory and price list, then publish them (all or nothing)."""
    await ensure_topics(settings)
    directory, currencies = await _known(settings)
    check_against(specs, directory, currencies)
    now = datetime.now(UTC)
    budgets = [s.record(now) for s in specs]
    encode = codec_for(Budget).encode
    await publish(settings, "budgets", [(budget_key(b.budget_id), encode(b)) for b in budgets])
    return budgets


async def current(settings: Settings, *, read_only: bool = False) -> tuple[list[Budget], dict[str, BudgetStatus]]:
    """Every live budget, by id, and the latest standing the worker published for each.

    ``read_only`` (the dashboard): create no topic; one that does not exist yet reads as empty.
    """
    if not read_only:
        await ensure_topics(settings)

    async def live(topic: str, record_type: type[R]) -> list[R]:
        try:
            return await read_records(settings.kafka, topic, record_type)
        except LookupError:
            if read_only:
                return []
            raise

    budgets, statuses = await asyncio.gather(
        live(table_topic(settings, "budgets"), Budget), live(settings.topics.budget_status, BudgetStatus)
    )
    return sorted(budgets, key=lambda b: b.budget_id), {s.budget_id: s for s in statuses}


async def delete(settings: Settings, budget_ids: list[str]) -> None:
    """Tombstone each budget; unknown ids are refused, naming the known ones."""
    known = {b.budget_id for b in (await current(settings))[0]}
    unknown = [i for i in budget_ids if i not in known]
    if unknown:
        raise BudgetError(f"no budget {', '.join(map(repr, unknown))}; existing budgets: {', '.join(sorted(known)) or 'none'}")
    await publish(settings, "budgets", [(budget_key(i), None) for i in budget_ids])
