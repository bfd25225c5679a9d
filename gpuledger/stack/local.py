"""``gpuledger stack up | down | status``: the local Kafka and ClickHouse as one unit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
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
    servers = [*clickhouse.servers(stack), *kafka.nodes(stack)]
    with ThreadPoolExecutor(len(servers)) as pool:  # a cluster's nodes shut down side by side
        stopped = list(pool.map(lambda m: m.stop(), servers))
    return [m.name for m, was_running in zip(servers, stopped, strict=True) if was_running]


def status(stack: StackSettings) -> list[EngineStatus]:
    return [EngineStatus(m.name, m.pid(), m.port, str(m.log_file)) for m in (*kafka.nodes(stack), *clickhouse.servers(stack))]
