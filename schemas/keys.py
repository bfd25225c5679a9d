"""Kafka message keys of the compacted reference topics (part of the contract: producers and the worker must agree)."""

from __future__ import annotations

from schemas.records import Price


def org_key(kind: str, key: str) -> bytes:
    """Directory key ``<kind>:<key>``; kind is api_key, namespace or node."""
    return f"{kind}:{key}".encode()


def price_key(price: Price) -> bytes:
    """One key per price version, so compaction keeps every version and history is never rewritten."""
    return f"{price.kind}:{price.price_id}".encode()


def budget_key(budget_id: str) -> bytes:
    """Budgets and their statuses are keyed by id: the latest write wins, a tombstone deletes."""
    return budget_id.encode()
