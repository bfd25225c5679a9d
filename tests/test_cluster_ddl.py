"""The cluster form of the migrations (``gpuledger.cluster_ddl``), as text.

The node-by-node form runs on two real ClickHouse shards in ``tests/test_cluster.py``; the ``ON CLUSTER`` and
``Replicated*`` forms need a Keeper, which chdb cannot run (README, Scale-out), so they are checked here as text.
"""

from __future__ import annotations

from gpuledger.cluster_ddl import ClusterForm, render, split_clauses
from gpuledger.migrate import load_migrations

NODES = ClusterForm("c1", on_cluster=False, replicated=False)
KEEPER = ClusterForm("c1", on_cluster=True, replicated=True)


def test_a_sharded_table_becomes_local_tables_and_a_distributed_one_sharded_by_its_id() -> None:
    local, distributed = render(
        "CREATE TABLE IF NOT EXISTS db.ledger\n(line_id String)\nENGINE = ReplacingMergeTree(version, is_deleted)\nORDER BY line_id", NODES
    )
    assert local.startswith("CREATE TABLE IF NOT EXISTS db.ledger_local\n(line_id String)")
    assert (
        distributed
        == "CREATE TABLE IF NOT EXISTS db.ledger AS db.ledger_local ENGINE = Distributed(c1, db, ledger_local, cityHash64(line_id))"
    )


def test_keeper_form_replicates_and_runs_on_cluster() -> None:
    local, distributed = render(
        "CREATE TABLE IF NOT EXISTS db.usage_events (event_id String) ENGINE = ReplacingMergeTree(ingested_at) ORDER BY event_id", KEEPER
    )
    assert local == (
        "CREATE TABLE IF NOT EXISTS db.usage_events_local ON CLUSTER c1 (event_id String) ENGINE = "
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/usage_events_local', '{replica}', ingested_at) ORDER BY event_id"
    )
    assert distributed.endswith(
        "ON CLUSTER c1 AS db.usage_events_local ENGINE = Distributed(c1, db, usage_events_local, cityHash64(event_id))"
    )
    (small,) = render("CREATE TABLE IF NOT EXISTS db.budgets (id String) ENGINE = MergeTree ORDER BY id", KEEPER)
    assert "ON CLUSTER c1" in small and "ReplicatedMergeTree('/clickhouse/tables/{shard}/db/budgets', '{replica}')" in small


def test_alters_go_to_the_local_table_and_only_column_changes_to_the_distributed_one() -> None:
    statement = "ALTER TABLE db.gpu_samples\n    ADD COLUMN IF NOT EXISTS x String DEFAULT '' COMMENT 'a, b (c)',\n    ADD INDEX IF NOT EXISTS i x TYPE minmax GRANULARITY 1"
    local, distributed = render(statement, NODES)
    assert local.startswith("ALTER TABLE db.gpu_samples_local\n")
    assert distributed == "ALTER TABLE db.gpu_samples ADD COLUMN IF NOT EXISTS x String DEFAULT '' COMMENT 'a, b (c)'"
    assert render("ALTER TABLE db.gpu_samples MATERIALIZE INDEX i", NODES) == ["ALTER TABLE db.gpu_samples_local MATERIALIZE INDEX i"]


def test_views_and_unsharded_tables_are_kept_as_written() -> None:
    view = "CREATE VIEW IF NOT EXISTS db.spend AS SELECT sum(cost) FROM db.ledger FINAL"
    assert render(view, NODES) == [view]
    assert render("SELECT 1", KEEPER) == ["SELECT 1"]


def test_clauses_split_at_top_level_commas_only() -> None:
    assert split_clauses(" A 'x, ''y''', B f(1, 2), C") == [" A 'x, ''y'''", " B f(1, 2)", " C"]


def test_every_shipped_migration_renders() -> None:
    """Each statement of every migration has a cluster form; the sharded tables get both their tables."""
    rendered = [
        s for m in load_migrations() for statement in m.statements("db", {"reporting_timezone": "UTC"}) for s in render(statement, NODES)
    ]
    for table in ("ledger", "usage_events", "gpu_samples"):
        assert any(s.startswith(f"CREATE TABLE IF NOT EXISTS db.{table}_local") for s in rendered)
        assert any(f"Distributed(c1, db, {table}_local" in s for s in rendered)
