"""Last success and last error of each provider, shared by all worker processes.

Stages report ``ok(name)`` / ``error(name, reason)``; the dashboard and /health read
``snapshot()``. Successes are written at most every few seconds per process, so a busy
pipeline does not turn health bookkeeping into a write per message.
"""
from __future__ import annotations

import threading
import time

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.db import utcnow
from app.models import ProviderStatus
from app.ops import metrics
from app.redaction import redact

_OK_WRITE_INTERVAL = 10.0


class ProviderHealth:
    def __init__(self, db):
        self.db = db
        self._last_ok_write: dict[str, float] = {}
        self._lock = threading.Lock()

    def ok(self, name: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last_ok_write.get(name, -1e9) < _OK_WRITE_INTERVAL:
                return
            self._last_ok_write[name] = now
        self._write(name, last_ok_at=utcnow())

    def error(self, name: str, reason: str, kind: str | None = None) -> None:
        """Record a failed call; ``kind`` is the gateway's error kind (a metrics label)."""
        metrics.provider_error(name, kind)
        with self._lock:
            self._last_ok_write.pop(name, None)
        self._write(name, last_error_at=utcnow(), last_error=redact(reason)[:500])

    def _write(self, name: str, **fields) -> None:
        try:
            with self.db.session() as session:
                # One upsert: two processes writing a provider's first status at once must not
                # race into a duplicate-key error (a get-then-insert did).
                insert = sqlite_insert if self.db.is_sqlite else pg_insert
                statement = insert(ProviderStatus).values(name=name, **fields)
                session.execute(statement.on_conflict_do_update(index_elements=["name"], set_=fields))
        except Exception:  # noqa: BLE001 - bookkeeping must never break a turn
            import logging

            logging.getLogger(__name__).warning("could not record provider status for %s", name, exc_info=True)

    def snapshot(self) -> dict[str, dict]:
        with self.db.session() as session:
            rows = session.query(ProviderStatus).all()
            return {
                row.name: {
                    "last_ok_at": row.last_ok_at.isoformat() + "Z" if row.last_ok_at else None,
                    "last_error_at": row.last_error_at.isoformat() + "Z" if row.last_error_at else None,
                    "last_error": row.last_error,
                    "state": _state(row),
                }
                for row in rows
            }


def _state(row: ProviderStatus) -> str:
    if row.last_error_at and (row.last_ok_at is None or row.last_error_at > row.last_ok_at):
        return "degraded"
    return "healthy" if row.last_ok_at else "configured"
