"""Choosing a target for an alert: the longest route whose ``match`` is a whole-segment prefix of the scope."""

from __future__ import annotations

from gpuledger.sections.notifier import NotifierSettings, Target


def segments(scope: str) -> list[str]:
    """``org/team/project`` parts; a per-model budget's `` model=<m>`` suffix does not change the route."""
    path = scope.split(" model=", 1)[0]
    return [s for s in path.strip("/").split("/") if s]


def route_for(scope: str, settings: NotifierSettings) -> Target | None:
    """``acme/ml`` matches scopes ``acme/ml`` and ``acme/ml/x``, never ``acme/mlops``; else the default (or None)."""
    parts = segments(scope)
    best: Target | None = None
    best_len = -1
    for route in settings.routes:
        want = segments(route.match)
        if parts[: len(want)] == want and len(want) > best_len:
            best, best_len = route, len(want)
    return best if best is not None else settings.default
