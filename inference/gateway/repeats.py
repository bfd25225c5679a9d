"""Remembering recently refused request ids, so a client retrying the same refused request is metered once.

A budget refusal is one event per request, not per attempt: SDKs retry 429s (ours says
``x-should-retry: false``, but other clients, proxies and scripts may not listen), and each
attempt carries the same ``x-request-id`` or ``idempotency-key``. Memory is bounded by count
and by age; forgetting early only means one more event, never a lost one.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class RecentIds:
    """At most ``capacity`` ids, each remembered for ``ttl_s`` seconds (oldest forgotten first)."""

    def __init__(self, capacity: int = 10_000, ttl_s: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._capacity, self._ttl, self._clock = capacity, ttl_s, clock

    def first_time(self, key_id: str, request_id: str) -> bool:
        """True the first time (key, request id) is seen within ``ttl_s``; remembers it either way."""
        now = self._clock()
        while self._seen and (len(self._seen) >= self._capacity or next(iter(self._seen.values())) <= now - self._ttl):
            self._seen.popitem(last=False)
        key = (key_id, request_id)
        if key in self._seen:  # not expired: expired ones were evicted above
            return False
        self._seen[key] = now
        return True
