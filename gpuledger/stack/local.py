"""``gpuledger stack up | down | status``: the local Kafka and ClickHouse as one unit."""

from __future__ import annotations

from dataclasses import dataclass

from gpuledger.settings import StackSettings
from gpuledger.stack import clickhouse, kafka


@dataclass(frozen=True)
class EngineStatus:
    name: str
    pid: int | None
    port: int
    log: str


def up(stack: StackSettings) -> list[EngineStatus]:
    """Start both engines (harmless when they already run) and wait until both answer."""
    stack.data_dir.mkdir(parents=True, exist_ok=True)
    kafka.start(stack)
    clickhouse.start(stack)
    return status(stack)


def down(stack: StackSettings) -> list[str]:
    """Stop only the processes this stack started (by pid file); returns the names stopped."""
    return [m.name for m in (*clickhouse.servers(stack), *kafka.nodes(stack)) if m.stop()]


def status(stack: StackSettings) -> list[EngineStatus]:
    return [EngineStatus(m.name, m.pid(), m.port, str(m.log_file)) for m in (*kafka.nodes(stack), *clickhouse.servers(stack))]
