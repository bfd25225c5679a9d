"""The local ClickHouse: the real 26.9 engine from the ``chdb-core`` wheel, serving HTTP and native TCP.

chdb's clickhouse-local path opens ClickHouse's own listeners when asked with
``SYSTEM START LISTEN QUERIES ALL`` and reads ``config.xml`` from its working
directory; a never-ending query keeps that process serving. See ``../shared/INFRA.md``.

``stack.clickhouse_shards`` > 1 starts one such server per shard, each with the same
``remote_servers`` entry naming them all (one replica per shard: chdb runs no Keeper).
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import httpx

from gpuledger.settings import StackSettings
from gpuledger.stack.processes import Managed, StackError

CONFIG = """<clickhouse>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <max_server_memory_usage>{max_memory}</max_server_memory_usage>
  <logger><level>warning</level><console>1</console></logger>{cluster}
</clickhouse>
"""
CLUSTER = """
  <remote_servers><{name}>{shards}</{name}></remote_servers>
  <macros><shard>{shard}</shard><replica>r1</replica></macros>"""
SHARD = "<shard><internal_replication>true</internal_replication><replica><host>127.0.0.1</host><port>{port}</port></replica></shard>"

# Runs inside the server process: the first (and only) chdb query in it becomes the server.
SERVE = "SYSTEM START LISTEN QUERIES ALL; SELECT sleepEachRow(1) FROM system.numbers SETTINGS max_execution_time = 0, max_block_size = 1"


def managed(stack: StackSettings, shard: int = 0) -> Managed:
    name = "clickhouse" if shard == 0 else f"clickhouse-{shard + 1}"
    return Managed(name, stack.data_dir / name, stack.clickhouse_ports(shard)[0])


def servers(stack: StackSettings) -> list[Managed]:
    return [managed(stack, shard) for shard in range(stack.clickhouse_shards)]


def config(stack: StackSettings, shard: int) -> str:
    """config.xml of shard ``shard``: its listeners, memory cap and, for a cluster, every shard's native port."""
    http_port, tcp_port = stack.clickhouse_ports(shard)
    cluster = ""
    if stack.clickhouse_shards > 1:
        shards = "".join(SHARD.format(port=stack.clickhouse_ports(n)[1]) for n in range(stack.clickhouse_shards))
        cluster = CLUSTER.format(name=stack.clickhouse_cluster, shards=shards, shard=shard + 1)
    return CONFIG.format(http_port=http_port, tcp_port=tcp_port, max_memory=stack.clickhouse_max_memory_bytes, cluster=cluster)


def ping(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1.0).text.strip() == "Ok."


def start(stack: StackSettings) -> None:
    """Start every ClickHouse server of the stack not already running; block until each answers ``/ping``."""
    try:
        import chdb  # noqa: F401
    except ImportError as exc:
        raise StackError("the local ClickHouse needs the chdb-core wheel: pip install 'gpuledger[local]'") from exc
    for shard, server in enumerate(servers(stack)):
        if server.pid() is not None:
            continue
        server.workdir.mkdir(parents=True, exist_ok=True)
        (server.workdir / "config.xml").write_text(config(stack, shard))
        proc = server.start(
            [sys.executable, "-m", "gpuledger.stack.clickhouse", str((server.workdir / "data").resolve())], cwd=server.workdir
        )
        server.wait_ready(proc, partial(ping, server.port), stack.start_timeout_seconds)


def serve(data_dir: Path) -> None:
    """Become the ClickHouse server (this call never returns while serving)."""
    from chdb import _chdb

    _chdb.query(SERVE, "TabSeparated", path=str(data_dir))  # type: ignore[attr-defined]  # chdb's _chdb stub omits query


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
