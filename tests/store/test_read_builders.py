"""Read-side SQL builders moved out of the commands: each names its database, table and bound placeholders."""

from __future__ import annotations

from streams.store import spend


def test_tokens_by_org_model_reads_usage_events_between_the_bound_times() -> None:
    sql = spend.tokens_by_org_model_sql("gl")
    assert "FROM gl.usage_events FINAL" in sql
    assert "{since:DateTime64(6)}" in sql and "{until:DateTime64(6)}" in sql
    assert sql.endswith("GROUP BY org, model")


def test_gpu_spend_by_team_reads_the_ledger_less_api_lines() -> None:
    sql = spend.gpu_spend_by_team_sql("gl")
    assert "FROM gl.ledger FINAL" in sql
    assert "WHERE kind != 'api'" in sql
    assert "{" not in sql
