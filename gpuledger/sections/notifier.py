"""The ``notifier`` section: where delivery state lives, routes and retry policy.

It reads alerts from ``topics.budget_alerts``, the topic the worker writes them to (no
topic of its own). Variables are ``GPULEDGER_NOTIFIER__<FIELD>`` (nested with ``__``).
Webhook URLs are ``SecretStr``: they never print in a repr or a log line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

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


class NotifierSettings(Section):
    """Everything the notifier needs beyond the shared Kafka settings and topics."""

    group_id: str = "gpuledger-notifier"
    state_dir: Path = Path(".gpuledger") / "notifier"
    routes: list[Route] = []
    default: Target | None = None
    max_attempts: int = Field(8, ge=1, description="HTTP attempts per delivery round (429, 5xx and network errors retry).")
    backoff_base_s: float = Field(0.5, ge=0, description="First backoff; doubles each attempt.")
    backoff_max_s: float = Field(30.0, ge=0)
    max_retry_after_s: float = Field(300.0, ge=0, description="Cap on a 429 Retry-After wait.")
    request_timeout_s: float = Field(10.0, gt=0)
    record_history: bool = Field(True, description="Write each settled delivery to ClickHouse (budget_alert_deliveries) for the alert history.")
    redelivery_pause_s: float = Field(60.0, ge=0, description="Pause before a new round once max_attempts transient failures are spent.")
    metrics_host: str = Field("127.0.0.1", description="Address of the notifier's /metrics and /healthz.")
    metrics_port: int = Field(9404, ge=0, le=65535, description="Port of /metrics and /healthz; 0 turns them off.")

    @property
    def state_file(self) -> Path:
        return self.state_dir / "deliveries.sqlite3"
