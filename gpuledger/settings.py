"""Configuration: one ``Settings`` tree for every process, loaded by one function (``load_settings``).

Sources, strongest first: environment variables ``GPULEDGER_<SECTION>__<FIELD>`` (e.g.
``GPULEDGER_KAFKA__BOOTSTRAP_SERVERS``, ``GPULEDGER_COLLECTOR__INTERVAL_SECONDS``), the older
``GPULEDGER_COLLECTOR_<FIELD>`` / ``GPULEDGER_METER_<FIELD>`` names (aliases kept for existing
DaemonSets and vLLM pods), one YAML file (``gpuledger --config FILE``, else ``GPULEDGER_CONFIG``,
else ``./gpuledger.yaml`` if present), then the defaults. A key no section knows is an error that
names its path and where it came from (``gpuledger.settings_sources``). Every field is documented in the
README's configuration reference.
"""

from __future__ import annotations

from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gpuledger.sections import Section
from gpuledger.sections.collector import CollectorSettings
from gpuledger.sections.gateway import GatewayConfig
from gpuledger.sections.labels import COST_CENTRE_LABELS, ORG_LABELS, PROJECT_LABELS, TEAM_LABELS
from gpuledger.sections.meter import MeterSettings
from gpuledger.sections.notifier import NotifierSettings
from gpuledger.settings_sources import EnvAliases, Mapping, SettingsError, describe, read_yaml, settings_file

__all__ = [
    "COST_CENTRE_LABELS",
    "ORG_LABELS",
    "PROJECT_LABELS",
    "TEAM_LABELS",
    "CollectorSettings",
    "GatewayConfig",
    "MeterSettings",
    "NotifierSettings",
    "Settings",
    "SettingsError",
    "config_file",
    "get_settings",
    "load_settings",
    "use_config_file",
    "use_subcommand_config",
]


class KafkaSettings(Section):
    """Where Kafka is and how to authenticate; the same code talks to the local stack or a cluster."""

    bootstrap_servers: str = "127.0.0.1:19092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None


class ClickHouseSettings(Section):
    """The ClickHouse that holds the ledger; any server or cluster reachable over HTTP(S)."""

    url: str = "http://127.0.0.1:18123"
    user: str = "default"
    password: SecretStr = SecretStr("")
    database: str = "gpuledger"
    verify_tls: bool = True
    ca_cert: Path | None = None
    readonly: bool = Field(
        False, description="Send readonly=1 with every query (the dashboard sets it; also give it a read-only ClickHouse user)."
    )
    cluster: str | None = Field(
        None,
        description="A `remote_servers` cluster: migrations create local tables on every node and `Distributed` ledger, usage_events and gpu_samples sharded by line, event and sample id.",
    )
    node_urls: list[str] = Field(
        [],
        description="With `cluster` and no Keeper: HTTP URLs of every node, migrations are applied node by node; empty: they run once with `ON CLUSTER` (distributed DDL, needs a Keeper).",
    )
    keeper: bool = Field(
        False,
        description="With `cluster`: a Keeper is configured, so tables use Replicated*MergeTree engines (paths /clickhouse/tables/{shard}/<db>/<table>, macros shard and replica).",
    )


class TopicSettings(Section):
    """Topic names and sizes; created by gpuledger itself (``auto.create.topics.enable=false``)."""

    gpu_samples: str = "gpuledger.gpu-samples.v1"
    inference_usage: str = "gpuledger.inference-usage.v1"
    dead_letter: str = "gpuledger.dead-letter.v1"
    budget_alerts: str = Field("gpuledger.budget-alerts.v1", description="Alerts the worker raises and the notifier posts.")
    budget_status: str = Field(
        "gpuledger.budget-status.v1", description="Compacted: each budget's standing, read by the gateway to enforce hard budgets."
    )
    outcomes: str = Field(
        "gpuledger.commands.outcomes.v1",
        description="Business outcomes (OutcomeEvent) sent through the gateway or `gpuledger outcomes import`.",
    )
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)
    # The reference data (compacted, one partition). The defaults are the names they had when they were derived from the
    # default worker.app_id, so existing data is found; set them explicitly if you ran with another app_id.
    orgs: str = Field("gpuledger-orgs-changelog", description="Compacted: the org directory (`gpuledger orgs import`).")
    prices: str = Field("gpuledger-prices-changelog", description="Compacted: the effective-dated price list (`gpuledger prices import`).")
    equivalents: str = Field(
        "gpuledger-equivalents-changelog", description="Compacted: API equivalents of self-hosted models (`gpuledger equivalents import`)."
    )
    budgets: str = Field("gpuledger-budgets-changelog", description="Compacted: the budgets (`gpuledger budgets set`).")


class WorkerSettings(Section):
    """The stream worker: batching into ClickHouse and the GPU cost allocator."""

    app_id: str = Field("gpuledger", description="Faust app id: the consumer group (reference topics are named in `topics`).")
    batch_size: int = Field(5000, ge=1, description="Most events written to ClickHouse in one insert.")
    batch_seconds: float = Field(0.25, gt=0, description="Longest wait to fill a batch.")
    fetch_wait_seconds: float = Field(
        0.1,
        gt=0,
        le=10,
        description="Longest time a broker holds the worker's fetch when its partitions have nothing new (Faust's own 1.5 s delayed the other partitions' records by as much).",
    )
    gpu_window_seconds: int = Field(60, ge=10, le=3600, description="GPU cost allocation window.")
    allocate_every_seconds: float = Field(5.0, gt=0, description="How often GPU windows are (re)allocated.")
    restate_hours: float = Field(
        6.0,
        gt=0,
        description="Windows younger than this are rewritten when late events arrive; older (closed) ones are corrected by adjustment lines in the open period.",
    )
    unassigned_org: str = Field("unassigned", description="Org booked for identities missing from the directory.")
    idle_policy: Literal["workload", "node", "callers"] = Field(
        "workload",
        description="Where the idle part of a GPU serving metered inference goes: the serving workload's owner, the node owner, or the callers by token share (fully loaded).",
    )
    org_labels: list[str] = Field(list(ORG_LABELS), description="Pod label keys naming the paying org (first present wins).")
    team_labels: list[str] = Field(list(TEAM_LABELS), description="Pod label keys naming the team.")
    project_labels: list[str] = Field(list(PROJECT_LABELS), description="Pod label keys naming the project.")
    cost_centre_labels: list[str] = Field(list(COST_CENTRE_LABELS), description="Pod label keys naming the cost centre.")
    session_timeout_seconds: float = Field(
        10.0, ge=3, description="A worker that stops heartbeating is replaced after this long (a killed worker's partitions move on)."
    )
    max_future_skew_seconds: float = Field(
        300.0, ge=0, description="Events dated further than this in the future are dead-lettered (clock skew allowance)."
    )
    shutdown_grace_seconds: float = Field(
        20.0, gt=0, description="After SIGTERM the worker exits within this long, whatever it is doing (exit code 6 if it had to force it)."
    )
    metrics_port: int = Field(
        9403,
        ge=0,
        le=65535,
        description="Port of the worker's Prometheus /metrics and /healthz (lag, dead letters, poison rows, retries); 0 turns them off.",
    )
    metrics_host: str = Field("127.0.0.1", description="Bind address of /metrics and /healthz (0.0.0.0 to be scraped from other hosts).")
    data_dir: Path = Field(
        Path(".gpuledger") / "worker",
        description="Faust's data folder (one subfolder per app_id); nothing there that Kafka cannot rebuild.",
    )
    rollup_every_seconds: float = Field(
        10.0,
        gt=0,
        description="How often the leader brings spend_hourly / spend_daily up to date with the ledger rows stored since its last pass.",
    )


class BudgetSettings(Section):
    """Budget evaluation in the worker: how often, and when forecast and spike alerts fire."""

    evaluate_every_seconds: float = Field(1.0, gt=0, description="How often the leader worker re-evaluates every budget.")
    late_grace_hours: float = Field(
        6.0, ge=0, description="After a period ends it is still evaluated this long, so late events can still cross its thresholds."
    )
    forecast_window_minutes: int = Field(60, ge=1, description="Run rate for forecasts = spend in this trailing window / its length.")
    forecast_min_pct: float = Field(
        10.0, ge=0, le=100, description="No forecast alert before spend reaches this % of the budget (too little data)."
    )
    spike_factor: float = Field(3.0, gt=1, description="Spike: spend in the last hour >= this many times the trailing hourly baseline.")
    spike_baseline_hours: int = Field(24, ge=1, description="Trailing window (before the last hour) the spike baseline is averaged over.")
    spike_min_pct: float = Field(1.0, ge=0, le=100, description="Spikes smaller than this % of the budget are ignored.")
    top_n: int = Field(3, ge=1, le=10, description="Models and keys named in each alert.")


class StackSettings(Section):
    """The local stack started by ``gpuledger stack up``."""

    data_dir: Path = Field(Path(".gpuledger"), description="The engines' data, pids and logs.")
    jars_dir: Path = Field(
        Path.home() / ".cache" / "gpuledger" / "kafka-jars", description="Kafka jars, shared by every stack on this machine."
    )
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    clickhouse_http_port: int = 18123
    clickhouse_tcp_port: int = 19000
    kafka_heap: str = "512m"
    clickhouse_max_memory_bytes: int = 4_000_000_000
    start_timeout_seconds: float = 120.0
    kafka_brokers: int = Field(
        1,
        ge=1,
        le=9,
        description="Kafka nodes (combined broker+controller); node n listens on kafka_port + 10*(n-1), its controller on kafka_controller_port + 10*(n-1).",
    )
    clickhouse_shards: int = Field(
        1,
        ge=1,
        le=9,
        description="ClickHouse servers, one shard each, in the cluster `clickhouse_cluster`; shard n listens on the ports + 10*(n-1).",
    )
    clickhouse_cluster: str = Field(
        "gpuledger",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of the local ClickHouse cluster (remote_servers) when clickhouse_shards > 1.",
    )

    def kafka_ports(self, node: int) -> tuple[int, int]:
        """(client, controller) ports of Kafka node ``node`` (0-based)."""
        return self.kafka_port + 10 * node, self.kafka_controller_port + 10 * node

    def clickhouse_ports(self, shard: int) -> tuple[int, int]:
        """(HTTP, native TCP) ports of ClickHouse shard ``shard`` (0-based)."""
        return self.clickhouse_http_port + 10 * shard, self.clickhouse_tcp_port + 10 * shard


def _known_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}; use an IANA name such as UTC or Europe/Berlin") from exc
    return name


class UIToken(Section):
    """An access token of the dashboard, stored only as its SHA-256 (hex)."""

    name: str = Field(description="Who holds the token (shown on the pages, never the token).")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the token, lowercase hex: `printf %s TOKEN | sha256sum`.")
    orgs: list[str] = Field([], description="Orgs this token may see; empty with admin: true for every org.")
    admin: bool = Field(False, description="Sees every org.")


class UISettings(Section):
    """The web dashboard (``gpuledger ui``): where it listens and who may see which org."""

    host: str = "127.0.0.1"
    port: int = Field(8088, ge=1, le=65535)
    refresh_seconds: float = Field(5.0, ge=1, description="How often pages re-read their figures (JSON from the same origin).")
    anonymous: Literal["refuse", "admin"] = Field(
        "refuse",
        description="Requests without a token or proxy identity: refused, or admin (only allowed when bound to a loopback address).",
    )
    tokens: list[UIToken] = Field([], description="Hashed access tokens for small installs.")
    trusted_proxies: list[str] = Field(
        [], description="Addresses / networks of the authenticating reverse proxy; identity headers from anywhere else are refused."
    )
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
        "UTC",
        description="IANA zone the daily rollups (spend_daily, spend_by_org_daily) count days in; fixed when migration 0008 is applied.",
    )
    kafka: KafkaSettings = KafkaSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    topics: TopicSettings = TopicSettings()
    worker: WorkerSettings = WorkerSettings()
    budgets: BudgetSettings = BudgetSettings()
    stack: StackSettings = StackSettings()
    ui: UISettings = UISettings()
    collector: CollectorSettings = Field(default_factory=CollectorSettings, description="The GPU collector agent (`gpuledger collector`).")
    meter: MeterSettings = Field(default_factory=MeterSettings, description="The usage middleware inside vLLM.")
    gateway: GatewayConfig | None = Field(
        None, description="The metering gateway (`gpuledger gateway`): backends, models, aliases, virtual keys."
    )
    notifier: NotifierSettings = Field(default_factory=NotifierSettings, description="The budget-alert notifier (`gpuledger notifier`).")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then ``GPULEDGER_<SECTION>__<FIELD>``, then the alias names, then the YAML file."""
        chosen = _loading.get()
        if chosen is None:  # built directly, not by load_settings: the same file load_settings would read
            path = settings_file()
            chosen = (path, read_yaml(path) if path else {})
        return (init_settings, env_settings, EnvAliases(settings_cls), Mapping(settings_cls, chosen[1]))

    def with_stack_endpoints(self) -> Settings:
        """Point Kafka and ClickHouse at this settings' local stack ports (all its nodes when it is a cluster)."""
        stack = self.stack
        brokers = ",".join(f"127.0.0.1:{stack.kafka_ports(n)[0]}" for n in range(stack.kafka_brokers))
        urls = [f"http://127.0.0.1:{stack.clickhouse_ports(n)[0]}" for n in range(stack.clickhouse_shards)]
        sharded = {"cluster": stack.clickhouse_cluster, "node_urls": urls} if stack.clickhouse_shards > 1 else {}
        replicated = {"replication_factor": min(3, stack.kafka_brokers)} if stack.kafka_brokers > 1 else {}
        return self.model_copy(
            update={
                "kafka": self.kafka.model_copy(update={"bootstrap_servers": brokers}),
                "clickhouse": self.clickhouse.model_copy(update={"url": urls[0], **sharded}),
                "topics": self.topics.model_copy(update=replicated),
            }
        )


# What load_settings is reading now: (the file or None, its contents). Set and reset within one call.
_loading: ContextVar[tuple[Path | None, dict[str, Any]] | None] = ContextVar("gpuledger_settings_loading", default=None)
_config_file: Path | None = None  # chosen by `gpuledger --config` (use_config_file)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """The settings of every process: ``overrides``, the environment, ``config_file`` (see ``settings_file``), defaults."""
    path = settings_file(config_file)
    data = read_yaml(path) if path else {}
    token = _loading.set((path, data))
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe(exc, path, data)) from None
    except ValueError as exc:  # pydantic-settings could not parse an environment variable (e.g. JSON of a list)
        raise SettingsError(f"invalid settings: {exc}") from None
    finally:
        _loading.reset(token)


def use_config_file(path: Path | None) -> None:
    """Read the settings from ``path`` from now on (``gpuledger --config``); the next ``get_settings()`` loads them."""
    global _config_file
    _config_file = path
    get_settings.cache_clear()


def config_file() -> Path | None:
    """The file ``--config`` chose, if any."""
    return _config_file


def use_subcommand_config(path: Path | None) -> Settings:
    """A subcommand's own ``--config`` (``gpuledger gateway --config X``) means the global one; the settings it selects.

    Giving both with different files is an error, not a silent choice.
    """
    if path is not None:
        if _config_file is not None and _config_file.resolve() != path.resolve():
            raise SettingsError(
                f"--config given twice with different files: {_config_file} and {path}; give it once (`gpuledger --config FILE <command>`)"
            )
        use_config_file(path)
    return get_settings()


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings(_config_file)
