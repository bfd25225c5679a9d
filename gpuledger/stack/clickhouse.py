"""The local ClickHouse: the real 26.9 engine from the ``chdb-core`` wheel, serving HTTP and native TCP.

chdb's clickhouse-local path opens ClickHouse's own listeners when asked with
``SYSTEM START LISTEN QUERIES ALL`` and reads ``config.xml`` from its working
directory; a never-ending query keeps that process serving. See ``../shared/INFRA.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from gpuledger.settings import StackSettings
from gpuledger.stack.processes import Managed, StackError

CONFIG = """<clickhouse>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <max_server_memory_usage>{max_memory}</max_server_memory_usage>
  <logger><level>warning</level><console>1</console></logger>
</clickhouse>
"""

# Runs inside the server process: the first (and only) chdb query in it becomes the server.
SERVE = (
    "SYSTEM START LISTEN QUERIES ALL; "
    "SELECT sleepEachRow(1) FROM system.numbers SETTINGS max_execution_time = 0, max_block_size = 1"
)


def managed(stack: StackSettings) -> Managed:
    return Managed("clickhouse", stack.data_dir / "clickhouse", stack.clickhouse_http_port)


def ping(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1.0).text.strip() == "Ok."


def start(stack: StackSettings) -> None:
    """Start ClickHouse unless ours is already running; block until ``/ping`` answers."""
    server = managed(stack)
    if server.pid() is not None:
        return
    try:
        import chdb  # noqa: F401
    except ImportError as exc:
        raise StackError("the local ClickHouse needs the chdb-core wheel: pip install 'gpuledger[local]'") from exc
    server.workdir.mkdir(parents=True, exist_ok=True)
    (server.workdir / "config.xml").write_text(
        CONFIG.format(http_port=stack.clickhouse_http_port, tcp_port=stack.clickhouse_tcp_port, max_memory=stack.clickhouse_max_memory_bytes)
    )
    proc = server.start([sys.executable, "-m", "gpuledger.stack.clickhouse", str((server.workdir / "data").resolve())], cwd=server.workdir)
    server.wait_ready(proc, lambda: ping(stack.clickhouse_http_port), stack.start_timeout_seconds)


def serve(data_dir: Path) -> None:
    """Become the ClickHouse server (this call never returns while serving)."""
    from chdb import _chdb

    _chdb.query(SERVE, "TabSeparated", path=str(data_dir))


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
