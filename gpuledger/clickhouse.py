"""ClickHouse connections built from settings (HTTP/HTTPS through clickhouse-connect)."""

from __future__ import annotations

from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from gpuledger.settings import ClickHouseSettings

# On a cluster an insert into a Distributed table returns once every shard has stored its rows (not a local spool).
CLUSTER_WRITES = {"distributed_foreground_insert": 1}


def connect(ch: ClickHouseSettings, *, database: str | None = "") -> Client:
    """A client for ``ch``; ``database=None`` connects without selecting one (before migrations)."""
    url = urlparse(ch.url)
    secure = url.scheme == "https"
    return clickhouse_connect.get_client(
        host=url.hostname or "127.0.0.1",
        port=url.port or (8443 if secure else 8123),
        username=ch.user,
        password=ch.password.get_secret_value(),
        database=(ch.database if database == "" else database) or "",
        secure=secure,
        verify=ch.verify_tls,
        ca_cert=str(ch.ca_cert) if ch.ca_cert else None,
        compress=False,
        autogenerate_session_id=False,  # the worker inserts from several threads at once
        settings={"readonly": 1} if ch.readonly else CLUSTER_WRITES if ch.cluster else None,
    )
