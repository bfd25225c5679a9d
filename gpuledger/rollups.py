"""The rollup tables the dashboard and the CFO summary read, and bringing them up to date on demand.

Each is written by a refreshable materialized view (migrations 0008 and 0026) every few seconds; a demo or a
test that must show the ledger as it is right now refreshes them first.
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

REFRESHES = ("spend_hourly_refresh", "spend_daily_refresh", "gpu_daily_refresh", "gpu_utilization_hourly_refresh",
             "self_hosted_vs_api_rollup_refresh", "serving_hours_refresh")


def refresh_rollups(client: Client, stopped: bool = False) -> None:
    """Refresh every rollup of ``client``'s database now and wait for it (views that are not refreshable are skipped).

    ``stopped``: the views' schedules are stopped (a benchmark, so they do not compete with what it times); each is
    started for its refresh and stopped again, one at a time.
    """
    present = {r[0] for r in client.query("SELECT name FROM system.tables WHERE database = currentDatabase()").result_rows}
    for view in REFRESHES:
        if view in present:
            if stopped:
                client.command(f"SYSTEM START VIEW {view}")
            client.command(f"SYSTEM REFRESH VIEW {view}")
            client.command(f"SYSTEM WAIT VIEW {view}")
            if stopped:
                client.command(f"SYSTEM STOP VIEW {view}")


def stop_rollups(client: Client) -> None:
    """Stop every rollup's schedule (benchmarks: refreshes would compete with the timed queries)."""
    present = {r[0] for r in client.query("SELECT name FROM system.tables WHERE database = currentDatabase()").result_rows}
    for view in REFRESHES:
        if view in present:
            client.command(f"SYSTEM STOP VIEW {view}")
