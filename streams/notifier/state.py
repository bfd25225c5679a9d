"""Durable delivery ledger: one sqlite3 row per ``alert_id`` (WAL, ``synchronous=FULL``).

Statuses: ``sending`` (a POST may be in flight), ``delivered`` and ``failed`` (final).
A ``sending`` row found at start-up means the previous process died mid-send; the
alert is sent again (at-least-once), because Slack offers no idempotency key to ask
whether the first POST landed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

FINAL = ("delivered", "failed")


@dataclass(frozen=True)
class Delivery:
    alert_id: str
    status: str
    route: str
    attempts: int
    last_http_status: int | None
    last_detail: str
    updated_at: str


class DeliveryState:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS deliveries (alert_id TEXT PRIMARY KEY, status TEXT NOT NULL, route TEXT NOT NULL,"
            " attempts INTEGER NOT NULL DEFAULT 0, last_http_status INTEGER, last_detail TEXT NOT NULL DEFAULT '',"
            " updated_at TEXT NOT NULL)"
        )

    def close(self) -> None:
        self._db.close()

    def get(self, alert_id: str) -> Delivery | None:
        row = self._db.execute("SELECT * FROM deliveries WHERE alert_id = ?", (alert_id,)).fetchone()
        return Delivery(*row) if row else None

    def is_final(self, alert_id: str) -> bool:
        found = self.get(alert_id)
        return found is not None and found.status in FINAL

    def begin(self, alert_id: str, route: str) -> None:
        """Mark ``sending`` before the first POST (keeps the attempts of an earlier, interrupted run)."""
        self._db.execute(
            "INSERT INTO deliveries (alert_id, status, route, updated_at) VALUES (?, 'sending', ?, ?)"
            " ON CONFLICT(alert_id) DO UPDATE SET status='sending', route=excluded.route, updated_at=excluded.updated_at",
            (alert_id, route, _now()),
        )

    def attempt(self, alert_id: str, http_status: int | None, detail: str) -> None:
        self._db.execute(
            "UPDATE deliveries SET attempts = attempts + 1, last_http_status = ?, last_detail = ?, updated_at = ? WHERE alert_id = ?",
            (http_status, detail[:500], _now(), alert_id),
        )

    def finish(self, alert_id: str, status: str, route: str, detail: str = "") -> None:
        assert status in FINAL
        self._db.execute(
            "INSERT INTO deliveries (alert_id, status, route, last_detail, updated_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(alert_id) DO UPDATE SET status=excluded.status, updated_at=excluded.updated_at,"
            " last_detail=CASE WHEN excluded.last_detail = '' THEN last_detail ELSE excluded.last_detail END",
            (alert_id, status, route, detail[:500], _now()),
        )

    def all(self) -> list[Delivery]:
        return [Delivery(*row) for row in self._db.execute("SELECT * FROM deliveries ORDER BY updated_at")]

    def counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall())


def _now() -> str:
    return datetime.now(UTC).isoformat()
