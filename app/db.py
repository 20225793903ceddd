"""Database engine, sessions and start-up migrations.

One engine per app (``Database``). SQLite runs in WAL mode with synchronous=NORMAL: a
crashed process loses no committed row, and a commit does not wait on an fsync (the WAL
is synced at checkpoints, so a power cut may lose the last commits). The design notes
beside this repository (../shared/DESIGN.md, not part of it) measured synchronous=FULL:
p99 near 500 ms from fsync stalls; docs/PERFORMANCE.md has our webhook's figures.
PostgreSQL is used through psycopg2.

Migrations are Alembic's (migrations/); ``Database.migrate()`` applies them under a lock
(an advisory lock on PostgreSQL, a file lock on SQLite) so several gunicorn workers
starting at once do not race.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from app.config import PROJECT_ROOT

log = logging.getLogger(__name__)

# Arbitrary constant: the advisory lock that serialises migrations on PostgreSQL.
_PG_MIGRATION_LOCK = 7_150_312


def utcnow() -> dt.datetime:
    """Naive UTC now: every timestamp in the database is naive UTC (SQLite has no time zones)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Writers from several threads/processes wait for the lock instead of failing at once.
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Database:
    """Engine + session factory for one database URL."""

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self._ensure_sqlite_dir(url)
            self.engine: Engine = create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": 10},
                pool_size=20,
                max_overflow=20,
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        path = url.split("///", 1)[-1] if self.is_sqlite else ""
        self._write_lock_path = (path + ".write.lock") if path and path != ":memory:" else None
        self._write_lock_file = None

    @staticmethod
    def _ensure_sqlite_dir(url: str) -> None:
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def session(self):
        """A session that commits on success and rolls back on error."""
        with self.Session() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextlib.contextmanager
    def write_lock(self):
        """On SQLite, serialise a hot writer across processes with a kernel file lock.

        SQLite's own busy handler polls with sleeps of 1, 2, 5, 10 ... ms; ``flock`` wakes the
        next writer the moment the lock is released. Two gunicorn workers inserting webhooks
        at once got ~40% more throughput this way (bench_webhook). PostgreSQL needs nothing.
        """
        if not self.is_sqlite or self._write_lock_path is None:
            yield
            return
        if self._write_lock_file is None:
            self._write_lock_file = open(self._write_lock_path, "a")  # noqa: SIM115 - kept for the process
        fcntl.flock(self._write_lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._write_lock_file, fcntl.LOCK_UN)

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - health reports any failure as "down"
            log.warning("database ping failed", exc_info=True)
            return False

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision, once, whatever the number of workers."""
        from alembic import command
        from alembic.config import Config

        cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
        cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
        with self._migration_lock() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

    @contextlib.contextmanager
    def _migration_lock(self):
        if self.is_sqlite:
            path = self.url.split("///", 1)[-1]
            lock_path = (path + ".migrate.lock") if path and path != ":memory:" else os.devnull
            with open(lock_path, "a") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                try:
                    with self.engine.begin() as connection:
                        yield connection
                finally:
                    fcntl.flock(lock_file, fcntl.LOCK_UN)
        else:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                connection.commit()  # the lock is session-level; Alembic opens its own transaction
                try:
                    yield connection
                    connection.commit()
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                    connection.commit()

    def dispose(self) -> None:
        self.engine.dispose()
