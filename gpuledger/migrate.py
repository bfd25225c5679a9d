"""``gpuledger migrate``: apply ``sql/migrations/NNNN_name.sql`` in order, once each.

Applied versions are recorded with a checksum in ``schema_migrations``; editing an
applied migration is refused (add a new one instead), so every environment's schema
has the same history.

On a ClickHouse cluster (``clickhouse.cluster``) each statement is applied in its cluster
form (``gpuledger.cluster_ddl``): with ``ON CLUSTER`` through the entry node, or on every
node of ``clickhouse.node_urls`` in turn where no Keeper runs distributed DDL.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import structlog
from clickhouse_connect.driver.client import Client

from gpuledger.clickhouse import connect
from gpuledger.cluster_ddl import ClusterForm, render
from gpuledger.settings import ClickHouseSettings, Settings

log = structlog.get_logger()
FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
PARAMETERS = {"raw_retention_days": 90, "rollup_refresh_seconds": 10}


class MigrationError(RuntimeError):
    """A migration that cannot be applied as it stands."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self, database: str, parameters: dict[str, object] | None = None) -> list[str]:
        text = self.sql.format(db=database, **{**PARAMETERS, **(parameters or {})})
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        return [s.strip() for s in body.split(";") if s.strip()]


def load_migrations() -> list[Migration]:
    """All migrations shipped in the ``sql`` package, by version."""
    found = []
    for entry in resources.files("sql").joinpath("migrations").iterdir():
        match = FILENAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number: {versions}")
    return found


def _nodes(ch: ClickHouseSettings) -> tuple[list[Client], ClusterForm | None]:
    """The servers each DDL statement runs on, and the cluster form it is rendered in (None: one server)."""
    if not ch.cluster:
        return [connect(ch, database=None)], None
    urls = ch.node_urls or [ch.url]
    form = ClusterForm(ch.cluster, on_cluster=not ch.node_urls, replicated=ch.keeper)
    return [connect(ch.model_copy(update={"url": url}), database=None) for url in urls], form


def apply_migrations(settings: Settings) -> list[Migration]:
    """Create the database if needed and apply pending migrations; returns those applied now."""
    db = settings.clickhouse.database
    admin = connect(settings.clickhouse, database=None)
    nodes, form = _nodes(settings.clickhouse)
    for node in nodes:
        node.command(f"CREATE DATABASE IF NOT EXISTS {db}" + (f" ON CLUSTER {form.cluster}" if form and form.on_cluster else ""))
    admin.command(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
        "(version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = MergeTree ORDER BY version"
    )
    applied = {row[0]: row[1] for row in admin.query(f"SELECT version, checksum FROM {db}.schema_migrations").result_rows}
    done = []
    for migration in load_migrations():
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} changed after it was applied; "
                    "restore it and put the change in a new migration"
                )
            continue
        for statement in migration.statements(db, {"reporting_timezone": settings.reporting_timezone}):
            for rendered in render(statement, form) if form else [statement]:
                for node in nodes:
                    node.command(rendered)
        admin.insert(
            f"{db}.schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
        log.info("migration applied", version=migration.version, name=migration.name)
        done.append(migration)
    return done
