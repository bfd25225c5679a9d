"""Ids the README promises: Kafka keys of the compacted reference topics and ledger line ids.

Both are part of the contract: producers, the worker and analysts must agree on them.
"""

from __future__ import annotations

from urllib.parse import quote

from schemas.records import Budget, ModelEquivalent, OrgDirectory, Price

# The reference tables (compacted topics ``topics.<name>`` in the settings) and the record each holds.
REFERENCE_TABLES: dict[str, type] = {"orgs": OrgDirectory, "prices": Price, "equivalents": ModelEquivalent, "budgets": Budget}


def org_key(kind: str, key: str) -> bytes:
    """Directory key ``<kind>:<key>``; kind is api_key, namespace or node."""
    return f"{kind}:{key}".encode()


def price_key(price: Price) -> bytes:
    """One key per price version, so compaction keeps every version and history is never rewritten."""
    return f"{price.kind}:{price.price_id}".encode()


def equivalent_key(equivalent: ModelEquivalent) -> bytes:
    """One key per model and effective time, like prices: every version is kept."""
    return f"{equivalent.model}@{equivalent.effective_from.isoformat()}".encode()


def budget_key(budget_id: str) -> bytes:
    """Budgets and their statuses are keyed by id: the latest write wins, a tombstone deletes."""
    return budget_id.encode()


# ----- ledger line ids: deterministic from every dimension a line is grouped by -----
# Each free-text part is percent-encoded (``quote(safe="")``), so a '/' or ':' inside a team or
# pod name can never make two different lines share an id.


def _part(value: str) -> str:
    return quote(value, safe="")


def _parts(*values: str) -> str:
    return "/".join(_part(v) for v in values)


def api_line_id(event_id: str) -> str:
    """``api:<event_id>``: one line per priced API request (a whole event id is injective as it is)."""
    return f"api:{event_id}"


def gpu_share_line_id(gpu: str, window_start: int, org: str, team: str, project: str, cost_centre: str, model: str, key_id: str) -> str:
    """``gpu:<gpu>:<window>:<org>/<team>/<project>/<cost_centre>/<model>/<key_id>``: a caller group's token share."""
    return f"gpu:{_part(gpu)}:{window_start}:{_parts(org, team, project, cost_centre, model, key_id)}"


def workload_line_id(gpu: str, window_start: int, workload: str) -> str:
    """``wl:<gpu>:<window>:<workload>``: an unmetered workload's share of the window."""
    return f"wl:{_part(gpu)}:{window_start}:{_part(workload)}"


def idle_line_id(gpu: str, window_start: int, *holder: str) -> str:
    """``idle:<gpu>:<window>`` (the remainder), or with the holder it was placed on: a workload
    (``idle:<gpu>:<window>:<namespace%2Fpod>``) or a caller group (six parts, as in a share's id)."""
    base = f"idle:{_part(gpu)}:{window_start}"
    return f"{base}:{_parts(*holder)}" if holder else base


def mig_free_line_id(parent_gpu: str, window_start: int) -> str:
    """``idle:<parent gpu>:<window>:mig-free``: the parent's slices that no MIG instance holds."""
    return f"idle:{_part(parent_gpu)}:{window_start}:mig-free"


def adjustment_line_id(original_line_id: str, sequence: int) -> str:
    """``adj:<original line id>#<n>``: the n-th correction of a line whose window was already closed."""
    return f"adj:{original_line_id}#{sequence}"
