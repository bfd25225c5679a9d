"""Configuration: environment variables over a YAML file over defaults, validated once.

Environment variables are ``GPULEDGER_<SECTION>__<FIELD>`` (e.g.
``GPULEDGER_KAFKA__BOOTSTRAP_SERVERS``); the YAML file is ``gpuledger.yaml`` in the
working directory or the path in ``GPULEDGER_CONFIG``. Every field is documented in
the README's configuration reference.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)


class KafkaSettings(BaseModel):
    """Where Kafka is and how to authenticate; the same code talks to the local stack or a cluster."""

    bootstrap_servers: str = "127.0.0.1:19092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None


class ClickHouseSettings(BaseModel):
    """The ClickHouse that holds the ledger; any server or cluster reachable over HTTP(S)."""

    url: str = "http://127.0.0.1:18123"
    user: str = "default"
    password: SecretStr = SecretStr("")
    database: str = "gpuledger"
    verify_tls: bool = True
    ca_cert: Path | None = None
    readonly: bool = Field(False, description="Send readonly=1 with every query (the dashboard sets it; also give it a read-only ClickHouse user).")


class TopicSettings(BaseModel):
    """Topic names and sizes; created by gpuledger itself (``auto.create.topics.enable=false``)."""

    gpu_samples: str = "gpuledger.gpu-samples.v1"
    inference_usage: str = "gpuledger.inference-usage.v1"
    dead_letter: str = "gpuledger.dead-letter.v1"
    budget_alerts: str = Field("gpuledger.budget-alerts.v1", description="Alerts the worker raises; the notifier's own `topic` setting must name the same topic.")
    budget_status: str = Field("gpuledger.budget-status.v1", description="Compacted: each budget's standing, read by the gateway to enforce hard budgets.")
    outcomes: str = Field("gpuledger.outcomes.v1", description="Business outcomes (OutcomeEvent) sent through the gateway or `gpuledger outcomes import`.")
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)


# Pod label keys naming each payer field by default, first present wins: the gpuledger.dev/ keys, then common
# conventions. The worker reads them (worker.*_labels); the collector copies all of them onto each GPU process.
ORG_LABELS = ("gpuledger.dev/org", "org")
TEAM_LABELS = ("gpuledger.dev/team", "team")
PROJECT_LABELS = ("gpuledger.dev/project", "project")
COST_CENTRE_LABELS = ("gpuledger.dev/cost-centre", "cost-center", "cost-centre", "cost_centre", "costcenter")


class WorkerSettings(BaseModel):
    """The stream worker: batching into ClickHouse and the GPU cost allocator."""

    app_id: str = Field("gpuledger", description="Faust app id: consumer group and table topic prefix.")
    batch_size: int = Field(5000, ge=1, description="Most events written to ClickHouse in one insert.")
    batch_seconds: float = Field(0.25, gt=0, description="Longest wait to fill a batch.")
    gpu_window_seconds: int = Field(60, ge=10, le=3600, description="GPU cost allocation window.")
    allocate_every_seconds: float = Field(5.0, gt=0, description="How often GPU windows are (re)allocated.")
    restate_hours: float = Field(6.0, gt=0, description="Windows younger than this are rewritten when late events arrive; older (closed) ones are corrected by adjustment lines in the open period.")
    unassigned_org: str = Field("unassigned", description="Org booked for identities missing from the directory.")
    idle_policy: Literal["workload", "node", "callers"] = Field(
        "workload", description="Where the idle part of a GPU serving metered inference goes: the serving workload's owner, the node owner, or the callers by token share (fully loaded)."
    )
    org_labels: list[str] = Field(list(ORG_LABELS), description="Pod label keys naming the paying org (first present wins).")
    team_labels: list[str] = Field(list(TEAM_LABELS), description="Pod label keys naming the team.")
    project_labels: list[str] = Field(list(PROJECT_LABELS), description="Pod label keys naming the project.")
    cost_centre_labels: list[str] = Field(list(COST_CENTRE_LABELS), description="Pod label keys naming the cost centre.")
    session_timeout_seconds: float = Field(10.0, ge=3, description="A worker that stops heartbeating is replaced after this long (a killed worker's partitions move on).")
    max_future_skew_seconds: float = Field(300.0, ge=0, description="Events dated further than this in the future are dead-lettered (clock skew allowance).")
    shutdown_grace_seconds: float = Field(20.0, gt=0, description="After SIGTERM the worker exits within this long, whatever it is doing (exit code 6 if it had to force it).")
    metrics_port: int = Field(
        9403, ge=0, le=65535, description="Port of the worker's Prometheus /metrics and /healthz (lag, dead letters, poison rows, retries); 0 turns them off."
    )
    metrics_host: str = Field("127.0.0.1", description="Bind address of /metrics and /healthz (0.0.0.0 to be scraped from other hosts).")
    rollup_every_seconds: float = Field(10.0, gt=0, description="How often the leader brings spend_hourly / spend_daily up to date with the ledger rows stored since its last pass.")


class BudgetSettings(BaseModel):
    """Budget evaluation in the worker: how often, and when forecast and spike alerts fire."""

    evaluate_every_seconds: float = Field(1.0, gt=0, description="How often the leader worker re-evaluates every budget.")
    late_grace_hours: float = Field(6.0, ge=0, description="After a period ends it is still evaluated this long, so late events can still cross its thresholds.")
    forecast_window_minutes: int = Field(60, ge=1, description="Run rate for forecasts = spend in this trailing window / its length.")
    forecast_min_pct: float = Field(10.0, ge=0, le=100, description="No forecast alert before spend reaches this % of the budget (too little data).")
    spike_factor: float = Field(3.0, gt=1, description="Spike: spend in the last hour >= this many times the trailing hourly baseline.")
    spike_baseline_hours: int = Field(24, ge=1, description="Trailing window (before the last hour) the spike baseline is averaged over.")
    spike_min_pct: float = Field(1.0, ge=0, le=100, description="Spikes smaller than this % of the budget are ignored.")
    top_n: int = Field(3, ge=1, le=10, description="Models and keys named in each alert.")


class StackSettings(BaseModel):
    """The local stack started by ``gpuledger stack up``."""

    data_dir: Path = Path(".gpuledger")
    jars_dir: Path = Field(Path.home() / ".cache" / "gpuledger" / "kafka-jars", description="Kafka jars, shared by every stack on this machine.")
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    clickhouse_http_port: int = 18123
    clickhouse_tcp_port: int = 19000
    kafka_heap: str = "512m"
    clickhouse_max_memory_bytes: int = 4_000_000_000
    start_timeout_seconds: float = 120.0


def _known_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}; use an IANA name such as UTC or Europe/Berlin") from exc
    return name


class UIToken(BaseModel):
    """An access token of the dashboard, stored only as its SHA-256 (hex)."""

    name: str = Field(description="Who holds the token (shown on the pages, never the token).")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the token, lowercase hex: `printf %s TOKEN | sha256sum`.")
    orgs: list[str] = Field([], description="Orgs this token may see; empty with admin: true for every org.")
    admin: bool = Field(False, description="Sees every org.")


class UISettings(BaseModel):
    """The web dashboard (``gpuledger ui``): where it listens and who may see which org."""

    host: str = "127.0.0.1"
    port: int = Field(8088, ge=1, le=65535)
    refresh_seconds: float = Field(5.0, ge=1, description="How often pages re-read their figures (JSON from the same origin).")
    anonymous: Literal["refuse", "admin"] = Field("refuse", description="Requests without a token or proxy identity: refused, or admin (only allowed when bound to a loopback address).")
    tokens: list[UIToken] = Field([], description="Hashed access tokens for small installs.")
    trusted_proxies: list[str] = Field([], description="Addresses / networks of the authenticating reverse proxy; identity headers from anywhere else are refused.")
    proxy_user_header: str = Field("X-Forwarded-User", description="Header carrying the signed-in user, set by the proxy.")
    proxy_groups_header: str = Field("X-Forwarded-Groups", description="Header carrying the user's groups (comma-separated).")
    group_orgs: dict[str, list[str]] = Field({}, description="Proxy group -> orgs its members may see.")
    admin_groups: list[str] = Field([], description="Proxy groups whose members see every org.")
    clickhouse_user: str | None = Field(None, description="Read-only ClickHouse user for the dashboard (default: clickhouse.user).")
    clickhouse_password: SecretStr | None = Field(None, description="Its password (default: clickhouse.password).")


class Settings(BaseSettings):
    """All of gpuledger's settings."""

    model_config = SettingsConfigDict(env_prefix="GPULEDGER_", env_nested_delimiter="__", extra="forbid")

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    currency: str = "USD"
    reporting_timezone: Annotated[str, AfterValidator(_known_zone)] = Field(
        "UTC", description="IANA zone the daily rollups (spend_daily, spend_by_org_daily) count days in; fixed when migration 0008 is applied."
    )
    kafka: KafkaSettings = KafkaSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    topics: TopicSettings = TopicSettings()
    worker: WorkerSettings = WorkerSettings()
    budgets: BudgetSettings = BudgetSettings()
    stack: StackSettings = StackSettings()
    ui: UISettings = UISettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = Path(os.environ.get("GPULEDGER_CONFIG", "gpuledger.yaml"))
        if "GPULEDGER_CONFIG" in os.environ and not yaml_file.is_file():
            raise FileNotFoundError(f"GPULEDGER_CONFIG points at {yaml_file}, which is not a file")
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))

    def with_stack_endpoints(self) -> Settings:
        """Point Kafka and ClickHouse at this settings' local stack ports."""
        return self.model_copy(
            update={
                "kafka": self.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{self.stack.kafka_port}"}),
                "clickhouse": self.clickhouse.model_copy(update={"url": f"http://127.0.0.1:{self.stack.clickhouse_http_port}"}),
            }
        )


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
