"""Budgets in the worker: per-period spend kept current from the ledger, alerts raised once, status for the gateway."""
