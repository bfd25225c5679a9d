"""``gpuledger budgets set | import | list | delete``: validate budgets, publish them to their compacted topic.

Validation checks a budget against what the ledger can actually contain: its org (and
team, project) must be in the org directory, and its currency must be one the price
list uses, since spend is only ever booked in those. Every problem is reported with
what to do about it; nothing is published unless every budget in the request is valid.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gpuledger.commands.reference_import import ReferenceFileError, load_yaml, publish
from gpuledger.kafka import ensure_topics, read_records, table_topic
from gpuledger.settings import Settings
from schemas import Budget, BudgetStatus, OrgDirectory, Price, codec_for
from schemas.keys import budget_key

log = structlog.get_logger()
R = TypeVar("R")


class BudgetError(ValueError):
    """Budgets that cannot be saved; the message lists every problem and how to fix it."""


class BudgetSpec(BaseModel):
    """One budget as a person writes it (CLI options or a YAML entry)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", description="Letters, digits and . _ : - (no slashes).")
    org: str = Field(min_length=1)
    team: str = ""
    project: str = ""
    model: str | None = None
    period: Literal["day", "week", "month"] = "month"
    timezone: str = "UTC"
    amount: Annotated[Decimal, Field(gt=0, max_digits=38, decimal_places=9, allow_inf_nan=False)]
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. USD.")
    thresholds: list[int] = Field(default_factory=lambda: [50, 80, 100], min_length=1)
    mode: Literal["soft", "hard"] = "soft"
    outcome_kind: str = Field(
        "",
        pattern=r"^([A-Za-z0-9][A-Za-z0-9_.:/-]{0,127})?$",
        description="Set: a unit budget; amount caps the cost per successful outcome of this kind.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as UTC or Europe/Berlin") from None
        return value

    @field_validator("thresholds")
    @classmethod
    def _thresholds_in_range(cls, value: list[int]) -> list[int]:
        bad = [t for t in value if not 1 <= t <= 200]
        if bad:
            raise ValueError(f"thresholds {bad} are out of range; each must be a percentage from 1 to 200")
        return sorted(set(value))

    @model_validator(mode="after")
    def _project_needs_team(self) -> BudgetSpec:
        if self.project and not self.team:
            raise ValueError("a project budget needs its team too (projects belong to teams in the org directory)")
        return self

    @model_validator(mode="after")
    def _unit_budget_is_soft(self) -> BudgetSpec:
        """A cost per outcome is a ratio: blocking traffic on it would stop the requests that produce outcomes."""
        if self.outcome_kind and (self.mode == "hard" or self.model):
            raise ValueError("a unit budget (outcome_kind) alerts only: it cannot be hard nor limited to one model")
        return self

    def record(self, now: datetime) -> Budget:
        return Budget(
            budget_id=self.id,
            org=self.org,
            team=self.team,
            project=self.project,
            model=self.model or None,
            period=self.period,
            timezone=self.timezone,
            amount=self.amount,
            currency=self.currency,
            thresholds=self.thresholds,
            mode=self.mode,
            updated_at=now,
            outcome_kind=self.outcome_kind,
        )


def parse_specs(entries: list[dict[str, Any]], source: str) -> list[BudgetSpec]:
    """Every entry as a ``BudgetSpec``, or ``BudgetError`` naming each bad entry and field."""
    problems, specs = [], []
    for number, entry in enumerate(entries, start=1):
        try:
            specs.append(BudgetSpec.model_validate(entry))
        except ValidationError as exc:
            name = entry.get("id", f"#{number}") if isinstance(entry, dict) else f"#{number}"
            for error in exc.errors():
                where = ".".join(str(p) for p in error["loc"]) or "budget"
                problems.append(f"{source} budget {name}: {where}: {error['msg'].removeprefix('Value error, ')}")
    ids = [s.id for s in specs]
    problems += [f"{source}: budget id {i!r} appears more than once" for i in sorted({i for i in ids if ids.count(i) > 1})]
    if problems:
        raise BudgetError("nothing saved; fix these:\n  " + "\n  ".join(problems))
    return specs


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


def check_against(specs: list[BudgetSpec], directory: list[OrgDirectory], currencies: set[str]) -> None:
    """Refuse budgets for scopes the ledger can never book, or currencies it never uses."""
    scopes = {(d.org, d.team, d.project) for d in directory}
    orgs = sorted({o for o, _, _ in scopes})
    problems = []
    for s in specs:
        if s.org not in orgs:
            problems.append(
                f"budget {s.id}: unknown org {s.org!r}; known orgs: {', '.join(orgs) or 'none'} (add it with `gpuledger orgs import`)"
            )
        elif s.team and not any(o == s.org and t == s.team for o, t, _ in scopes):
            teams = sorted({t for o, t, _ in scopes if o == s.org and t})
            problems.append(
                f"budget {s.id}: org {s.org!r} has no team {s.team!r} in the org directory; its teams: {', '.join(teams) or 'none'}"
            )
        elif s.project and (s.org, s.team, s.project) not in scopes:
            projects = sorted({p for o, t, p in scopes if o == s.org and t == s.team and p})
            problems.append(
                f"budget {s.id}: team {s.org}/{s.team} has no project {s.project!r}; its projects: {', '.join(projects) or 'none'}"
            )
        if s.currency not in currencies:
            problems.append(
                f"budget {s.id}: currency {s.currency} is not used by any price, so no spend is ever booked in it; "
                f"use one of: {', '.join(sorted(currencies)) or 'none (import prices first with `gpuledger prices import`)'}"
            )
    if problems:
        raise BudgetError("nothing saved; fix these:\n  " + "\n  ".join(problems))


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
