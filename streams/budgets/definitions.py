"""Budget definitions as people write them: what a valid budget is, and whether the ledger can hold its spend.

Validation checks a budget against what the ledger can actually contain: its org (and team, project) must be in
the org directory, and its currency must be one the price list uses, since spend is only ever booked in those.
Every problem is reported with what to do about it. The evaluator next to it measures the budgets these define.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas import Budget, OrgDirectory


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
