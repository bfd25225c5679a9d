"""The ``notifier`` section: where delivery state lives, routes and retry policy.

It reads alerts from ``topics.budget_alerts``, the topic the worker writes them to (no
topic of its own). Variables are ``GPULEDGER_NOTIFIER__<FIELD>`` (nested with ``__``).
Webhook URLs are ``SecretStr``: they never print in a repr or a log line.
"""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator

from gpuledger.sections import Section


class Target(Section):
    """Where an alert is posted: a Slack incoming webhook or a generic JSON webhook."""

    name: str = Field(..., min_length=1, description="Shown in logs and the state file instead of the (secret) URL.")
    url: SecretStr
    format: Literal["slack", "json"] = "slack"


class Route(Target):
    """Alerts whose scope starts with ``match`` (``org`` or ``org/team``, whole segments) go to this target."""

    match: str = Field(..., min_length=1)

    @field_validator("match")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip("/")


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class DigestSchedule(Section):
    """One team's weekly digest: posted once a week at ``weekday`` ``at`` in the team's ``timezone``, to the team's route."""

    scope: str = Field(..., description="org/team whose week is summed; the message goes to the route this scope matches (as alerts do).")
    weekday: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] = "monday"
    at: time = Field(time(9, 0), description="Local time of day, e.g. 09:00.")
    timezone: str = Field("UTC", description="IANA zone, e.g. Europe/Berlin: the week and the send time are the team's.")

    @model_validator(mode="after")
    def _valid(self) -> DigestSchedule:
        if len([s for s in self.scope.strip("/").split("/") if s]) != 2:
            raise ValueError(f"digest scope {self.scope!r} must be org/team (one digest per team)")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"digest for {self.scope!r}: unknown time zone {self.timezone!r}; use an IANA name such as Europe/Berlin"
            ) from None
        return self


class NotifierSettings(Section):
    """Everything the notifier needs beyond the shared Kafka settings and topics."""

    group_id: str = "gpuledger-notifier"
    state_dir: Path = Path(".gpuledger") / "notifier"
    routes: list[Route] = []
    default: Target | None = None
    max_attempts: int = Field(8, ge=1, description="HTTP attempts per delivery round (429, 5xx and network errors retry).")
    backoff_base_s: float = Field(0.5, ge=0, description="First backoff; roughly doubles each attempt, with jitter (gpuledger/retry.py).")
    backoff_max_s: float = Field(30.0, ge=0)
    max_retry_after_s: float = Field(300.0, ge=0, description="Cap on a 429 Retry-After wait.")
    request_timeout_s: float = Field(10.0, gt=0)
    record_history: bool = Field(
        True, description="Write each settled delivery to ClickHouse (budget_alert_deliveries) for the alert history."
    )
    redelivery_pause_s: float = Field(60.0, ge=0, description="Pause before a new round once max_attempts transient failures are spent.")
    metrics_host: str = Field("127.0.0.1", description="Address of the notifier's /metrics and /healthz.")
    metrics_port: int = Field(9404, ge=0, le=65535, description="Port of /metrics and /healthz; 0 turns them off.")
    digests: list[DigestSchedule] = Field(default_factory=list, description='Weekly Slack digests, one per team (README "Weekly digest").')
    digest_check_s: float = Field(60.0, gt=0, description="How often the notifier checks whether a digest is due.")
    digest_outcomes_view: str = Field(
        "cost_per_outcome_daily",
        description="The cost-per-outcome view the digest reads when it exists (its section is left out otherwise).",
    )

    @property
    def state_file(self) -> Path:
        return self.state_dir / "deliveries.sqlite3"
