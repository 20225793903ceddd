"""Intake: the durable, idempotent insert of inbound messages, group-committed per process.

``store_inbound`` upserts the user and inserts the message in one transaction; the
provider's MessageSid makes a repeated delivery a no-op. ``InboundWriter`` batches the
webhook's inserts through one writer thread per process (three statements per batch).
"""
from __future__ import annotations

import functools
import json
import queue
import re
import threading
from dataclasses import dataclass, field

from app.db import utcnow
from app.models import RECEIVED
from app.turn import Inbound

# The webhook's hot path: plain SQL, valid on SQLite (3.35+) and PostgreSQL alike, run on
# the pool's DBAPI connection, three statements per BATCH of messages whatever its size.
# Building statements through the ORM cost ~3x more per request, SQLAlchemy Core's execution
# layer doubled the database time, and one statement per row per message cost the
# PostgreSQL server as much CPU as the app itself (bench_webhook).
_UPSERT_USERS = (
    "INSERT INTO users (phone, channel, wa_id, profile_name, reply_mode, message_count, first_seen_at, last_seen_at)"
    " VALUES {rows}"
    " ON CONFLICT (phone) DO UPDATE SET last_seen_at = excluded.last_seen_at,"
    " profile_name = COALESCE(excluded.profile_name, users.profile_name),"
    " wa_id = COALESCE(excluded.wa_id, users.wa_id)"
    " RETURNING id, phone"
)
_USER_ROW = "(:phone{i}, :channel{i}, :wa_id{i}, :profile_name{i}, 'auto', 0, :now, :now)"
_INSERT_MESSAGES = (
    "INSERT INTO messages (user_id, direction, channel, kind, provider_sid, body, media_url, media_type,"
    " num_media, extra, status, created_at, updated_at)"
    " VALUES {rows}"
    " ON CONFLICT (provider_sid) DO NOTHING RETURNING provider_sid"
)
_MESSAGE_ROW = ("(:user_id{i}, 'in', :channel{i}, :kind{i}, :sid{i}, :body{i}, :media_url{i}, :media_type{i},"
                " :num_media{i}, :extra{i}, :status, :now, :now)")
_COUNT_MESSAGES = "UPDATE users SET message_count = message_count + CASE id {whens} END WHERE id IN ({ids})"


def _driver_style(dialect: str, sql: str) -> str:
    """sqlite3 takes :name parameters; psycopg2 wants %(name)s."""
    return sql if dialect == "sqlite" else re.sub(r"(?<!:):(\w+)", r"%(\1)s", sql)


@functools.lru_cache(maxsize=256)
def _upsert_users_sql(dialect: str, rows: int) -> str:
    return _driver_style(dialect, _UPSERT_USERS.format(rows=", ".join(_USER_ROW.format(i=i) for i in range(rows))))


@functools.lru_cache(maxsize=256)
def _insert_messages_sql(dialect: str, rows: int) -> str:
    return _driver_style(dialect, _INSERT_MESSAGES.format(
        rows=", ".join(_MESSAGE_ROW.format(i=i) for i in range(rows))))


@functools.lru_cache(maxsize=256)
def _count_messages_sql(dialect: str, users: int) -> str:
    return _driver_style(dialect, _COUNT_MESSAGES.format(
        whens=" ".join(f"WHEN :uid{i} THEN :n{i}" for i in range(users)),
        ids=", ".join(f":uid{i}" for i in range(users))))


def _timestamp(now, dialect: str):
    # SQLAlchemy stores SQLite DateTime as this text; the ORM must read back what we write.
    return now.strftime("%Y-%m-%d %H:%M:%S.%f") if dialect == "sqlite" else now


def store_inbound(db, inbound: Inbound, channel: str) -> tuple[int, bool]:
    """Upsert the user and INSERT the message in one transaction; (user_id, created?).

    A MessageSid seen before inserts nothing and returns created=False (Twilio retries).
    """
    return _store_batch(db, [(inbound, channel)])[0]


def _store_batch(db, items: list[tuple[Inbound, str]]) -> list[tuple[int, bool]]:
    """Store several inbound messages in ONE transaction (one commit: one fsync, one lock)."""
    dialect = db.engine.dialect.name
    now = _timestamp(utcnow(), dialect)
    # One row per phone (PostgreSQL refuses to upsert a row twice in one statement); the
    # latest non-empty profile name and WhatsApp id of the batch win.
    users: dict[str, dict] = {}
    for inbound, channel in items:
        row = users.setdefault(inbound.phone, {"phone": inbound.phone, "channel": channel,
                                               "wa_id": None, "profile_name": None})
        row["wa_id"] = inbound.wa_id or row["wa_id"]
        row["profile_name"] = inbound.profile_name or row["profile_name"]
    user_params: dict = {"now": now}
    for i, row in enumerate(users.values()):
        user_params.update({f"{key}{i}": value for key, value in row.items()})
    connection = db.engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(_upsert_users_sql(dialect, len(users)), user_params)
        user_ids = {phone: user_id for user_id, phone in cursor.fetchall()}
        message_params: dict = {"now": now, "status": RECEIVED}
        for i, (inbound, channel) in enumerate(items):
            message_params.update({
                f"user_id{i}": user_ids[inbound.phone], f"channel{i}": channel, f"kind{i}": inbound.kind,
                f"sid{i}": inbound.sid, f"body{i}": inbound.body, f"media_url{i}": inbound.media_url,
                f"media_type{i}": inbound.media_type, f"num_media{i}": inbound.num_media,
                f"extra{i}": json.dumps(inbound.extra) if inbound.extra else None,
            })
        cursor.execute(_insert_messages_sql(dialect, len(items)), message_params)
        inserted = {row[0] for row in cursor.fetchall()}
        results: list[tuple[int, bool]] = []
        per_user: dict[int, int] = {}
        for inbound, _channel in items:
            created = inbound.sid in inserted
            inserted.discard(inbound.sid)  # a repeat inside the batch is a duplicate too
            user_id = user_ids[inbound.phone]
            if created:
                per_user[user_id] = per_user.get(user_id, 0) + 1
            results.append((user_id, created))
        if per_user:
            count_params = {}
            for i, (user_id, n) in enumerate(per_user.items()):
                count_params.update({f"uid{i}": user_id, f"n{i}": n})
            cursor.execute(_count_messages_sql(dialect, len(per_user)), count_params)
        connection.commit()
        cursor.close()
    except BaseException:
        connection.rollback()
        raise
    finally:
        connection.close()  # back to the pool
    return results


@dataclass
class _Pending:
    inbound: Inbound
    channel: str
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple[int, bool] | None = None
    error: BaseException | None = None


class InboundWriter:
    """Group commit for the webhook: one writer thread per process stores whatever requests
    have queued up in one transaction, then wakes each request once its row is committed.

    Under load this turns N commits (N fsyncs on PostgreSQL, N rounds of SQLite's file lock
    between worker processes) into one, which is what lets ingestion keep up; when idle a
    batch is a single message and the cost is one thread hand-off. A request still answers
    Twilio only after its own row is durable.
    """

    MAX_BATCH = 64
    WAIT_SECONDS = 10.0

    def __init__(self, db):
        self.db = db
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def store(self, inbound: Inbound, channel: str) -> tuple[int, bool]:
        self._ensure_thread()
        pending = _Pending(inbound, channel)
        self._queue.put(pending)
        if not pending.done.wait(self.WAIT_SECONDS):
            raise TimeoutError("the inbound writer did not commit in time")
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _ensure_thread(self) -> None:
        # Started on first use, so that each gunicorn worker (forked after import) has its own.
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="inbound-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._write(batch)

    def _write(self, batch: list[_Pending]) -> None:
        try:
            with self.db.write_lock():
                results = _store_batch(self.db, [(p.inbound, p.channel) for p in batch])
        except Exception:  # noqa: BLE001 - one bad row must not fail its neighbours: retry one by one
            for pending in batch:
                try:
                    pending.result = store_inbound(self.db, pending.inbound, pending.channel)
                except Exception as exc:  # noqa: BLE001 - handed to the waiting request
                    pending.error = exc
                pending.done.set()
            return
        for pending, result in zip(batch, results):
            pending.result = result
            pending.done.set()
