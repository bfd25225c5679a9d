"""An outcome as a client writes it (``POST /v1/outcomes`` on the gateway, or a row of ``gpuledger outcomes import``).

One pydantic model for both doors, so the gateway and the importer accept and refuse exactly the
same things; the worker re-checks what arrives on the topic (``streams.outcomes``), since any
producer can write there. An outcome must name at least one way to reach its requests (request
ids, a trace id or a session id): without one it could never carry any cost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, model_validator

from gpuledger.limits import aware_utc, money_problem
from schemas import OutcomeEvent

MAX_ID = 256  # an outcome id, request id or session id (the gateway cuts request ids on usage events to this too)
MAX_REQUEST_IDS = 10_000
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")]


def _fits_ledger(value: Decimal) -> Decimal:
    problem = money_problem(value)
    if problem:
        raise ValueError(problem)
    if value < 0:
        raise ValueError(f"{value} is negative; an outcome's value is what it is worth, 0 or more")
    return value


class OutcomeIn(BaseModel):
    """One business outcome; ``org`` / ``team`` / ``project`` may come from the gateway key instead of the body."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    outcome_id: Identifier = Field(description="Unique per outcome; sending it again replaces it.")
    kind: Name = Field(description="What happened, e.g. ticket_resolved, pr_merged.")
    success: StrictBool
    occurred_at: Annotated[datetime, AfterValidator(aware_utc)] = Field(default_factory=lambda: datetime.now(UTC))
    org: str = Field("", max_length=MAX_ID)
    team: str = Field("", max_length=MAX_ID)
    project: str = Field("", max_length=MAX_ID)
    value: Annotated[Decimal, Field(allow_inf_nan=False), AfterValidator(_fits_ledger)] | None = None
    currency: str = Field("", pattern=r"^([A-Z]{3})?$", description="ISO 4217 code of value, e.g. USD.")
    request_ids: list[Identifier] = Field(
        default_factory=list, max_length=MAX_REQUEST_IDS, description="Usage event ids or the clients' request ids (x-request-id)."
    )
    trace_id: str = Field("", pattern=r"^([0-9a-f]{32})?$", description="W3C trace id: 32 lower-case hex digits.")
    session_id: str = Field("", max_length=MAX_ID, description="The x-gpuledger-session-id its requests carried.")

    @model_validator(mode="after")
    def _linkable(self) -> OutcomeIn:
        if not (self.request_ids or self.trace_id or self.session_id):
            raise ValueError("names none of its requests: give request_ids, trace_id or session_id (otherwise it could never carry a cost)")
        if self.value is not None and not self.currency:
            raise ValueError("value needs its currency (an ISO 4217 code such as USD)")
        if self.project and not self.team:
            raise ValueError("a project needs its team too")
        return self

    def record(self, *, key_id: str = "") -> OutcomeEvent:
        """The contract record; request ids keep their order, each once."""
        return OutcomeEvent(
            outcome_id=self.outcome_id,
            kind=self.kind,
            org=self.org,
            team=self.team,
            project=self.project,
            occurred_at=self.occurred_at,
            success=self.success,
            value=self.value,
            currency=self.currency,
            request_ids=list(dict.fromkeys(self.request_ids)),
            trace_id=self.trace_id,
            session_id=self.session_id,
            key_id=key_id,
        )


def outcome_key(outcome_id: str) -> bytes:
    """Kafka key: one outcome always lands on one partition, so a resend follows the original."""
    return outcome_id.encode()
