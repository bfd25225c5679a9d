"""The cluster form of a migration statement: local tables on every node, ``Distributed`` tables over them.

The migrations are written for one server. On a cluster (``clickhouse.cluster``) each statement
is rendered again:

- the three big tables (``SHARDED``) become ``<name>_local`` on every node plus a ``Distributed``
  table under the old name, sharded by a hash of the row's own id: every version of a ledger
  line (or of a raw event) lands on the same shard, so ReplacingMergeTree's deduplication and
  ``FINAL`` stay exact;
- ``ALTER``s of those tables go to the local table, and the column changes also to the
  ``Distributed`` one (indexes and their materialization are local only);
- everything else (small tables, views, refreshable views) is created on every node as written;
- with a Keeper (``clickhouse.keeper``), ``*MergeTree`` engines become ``Replicated*MergeTree``;
- without ``clickhouse.node_urls`` each statement carries ``ON CLUSTER`` (distributed DDL, which
  needs a Keeper); with them, the caller runs each statement on every node itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Table -> sharding key: the id that names a row, so all versions of a row share a shard.
SHARDED = {"ledger": "cityHash64(line_id)", "usage_events": "cityHash64(event_id)", "gpu_samples": "cityHash64(sample_id)"}
HEAD = re.compile(
    r"^(?P<verb>CREATE\s+(?:MATERIALIZED\s+)?(?:TABLE|VIEW)|ALTER\s+TABLE|DROP\s+(?:TABLE|VIEW))(?P<cond>\s+IF\s+(?:NOT\s+)?EXISTS)?\s+"
    r"(?P<db>\w+)\.(?P<name>\w+)(?P<rest>.*)$",
    re.IGNORECASE | re.DOTALL,
)
ENGINE = re.compile(r"\bENGINE\s*=\s*(?P<kind>\w*)MergeTree\b(?:\((?P<args>[^()]*)\))?", re.IGNORECASE)
COLUMN_CHANGE = re.compile(r"^\s*(ADD|DROP|MODIFY|RENAME)\s+COLUMN\b", re.IGNORECASE)


@dataclass(frozen=True)
class ClusterForm:
    """How the statements are rendered: the cluster's name, whether DDL is distributed and whether a Keeper replicates."""

    cluster: str
    on_cluster: bool
    replicated: bool


def render(statement: str, form: ClusterForm) -> list[str]:
    """The statements that do ``statement``'s job on the cluster, in order."""
    head = HEAD.match(statement.strip())
    if head is None:
        return [statement]
    verb, cond, db, name, rest = (head[k] for k in ("verb", "cond", "db", "name", "rest"))
    on = f" ON CLUSTER {form.cluster}" if form.on_cluster else ""
    kind = verb.split()[0].upper()

    def named(table: str, body: str) -> str:
        return f"{verb}{cond or ''} {db}.{table}{on}{body}"

    if name not in SHARDED or "VIEW" in verb.upper():
        return [named(name, _replicated(rest, db, name) if form.replicated else rest)]
    local = f"{name}_local"
    if kind == "CREATE":
        body = _replicated(rest, db, local) if form.replicated else rest
        distributed = f" AS {db}.{local} ENGINE = Distributed({form.cluster}, {db}, {local}, {SHARDED[name]})"
        return [named(local, body), f"CREATE TABLE IF NOT EXISTS {db}.{name}{on}{distributed}"]
    if kind == "DROP":
        return [named(name, rest), named(local, rest)]
    columns = [clause for clause in split_clauses(rest) if COLUMN_CHANGE.match(clause)]
    return [named(local, rest), *([named(name, " " + ",".join(c.strip() for c in columns))] if columns else [])]


def _replicated(body: str, db: str, table: str) -> str:
    """``body`` with its MergeTree engine replicated through the Keeper (path per shard, replica from macros)."""

    def swap(match: re.Match[str]) -> str:
        args = f"'/clickhouse/tables/{{shard}}/{db}/{table}', '{{replica}}'" + (f", {match['args']}" if match["args"] else "")
        return f"ENGINE = Replicated{match['kind']}MergeTree({args})"

    return ENGINE.sub(swap, body, count=1)


def split_clauses(text: str) -> list[str]:
    """``text`` split at top-level commas (outside quotes and parentheses): the clauses of an ALTER."""
    clauses, depth, quoted, start, i = [], 0, False, 0, 0
    while i < len(text):
        char = text[i]
        if quoted:
            if char == "'" and text[i + 1 : i + 2] == "'":
                i += 1  # '' is an escaped quote
            elif char == "\\":
                i += 1
            elif char == "'":
                quoted = False
        elif char == "'":
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            clauses.append(text[start:i])
            start = i + 1
        i += 1
    clauses.append(text[start:])
    return clauses
