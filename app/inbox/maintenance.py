"""Housekeeping: the recovery sweep (work left behind), operator retries, the hourly clean-up.

Recovery (at start and every RECOVERY interval) finds every user with ``received``
messages, turns whose processor died (expired lease), or retries that are due. The hourly
maintenance closes expired handoffs, deletes old voice files and simulator uploads,
prunes old login attempts, and with RETENTION_DAYS deletes the conversation content older
than that (app/inbox/privacy.py). Every sweep also ends handoffs whose first operator answer
is overdue and retries due team notifications (app/assistant/handoff.py ``sweep``).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from sqlalchemy import func, or_, select, update

from app.assistant import handoff
from app.db import utcnow
from app.models import (
    PROCESSING,
    RECEIVED,
    TURN_FAILED,
    TURN_PROCESSING,
    TURN_WAITING_RETRY,
    UNANSWERED,
    WAITING_HUMAN,
    Handoff,
    Message,
    Turn,
    User,
)
from app.operators import login_limits

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL_SECONDS = 3600.0


def users_with_work(db) -> list[int]:
    """Users with received messages, a stranded turn (lease free or expired) or a due retry."""
    now = utcnow()
    with db.session() as session:
        received = select(Message.user_id).where(Message.direction == "in", Message.status == RECEIVED)
        stranded = (
            select(Turn.user_id)
            .join(User, User.id == Turn.user_id)
            .where(
                Turn.status == TURN_PROCESSING,
                or_(User.lease_expires_at.is_(None), User.lease_expires_at < now),
            )
        )
        due = select(Turn.user_id).where(Turn.status == TURN_WAITING_RETRY, Turn.next_attempt_at <= now)
        return sorted(set(session.scalars(received.union(stranded, due))))


def has_ready_work(db, user_id: int) -> bool:
    now = utcnow()
    with db.session() as session:
        received = session.scalar(
            select(func.count()).select_from(Message).where(
                Message.user_id == user_id, Message.direction == "in", Message.status == RECEIVED
            )
        )
        waiting_due = session.scalar(
            select(func.count()).select_from(Turn).where(
                Turn.user_id == user_id,
                or_(Turn.status == TURN_PROCESSING,
                    (Turn.status == TURN_WAITING_RETRY) & (Turn.next_attempt_at <= now)),
            )
        )
        return bool(received or waiting_due)


def reopen_failed_turn(db, turn_id: int) -> int | None:
    """Operator's "retry": a failed turn becomes due now, with a fresh retry schedule; its user id."""
    with db.session() as session:
        turn = session.get(Turn, turn_id)
        if turn is None or turn.status != TURN_FAILED:
            return None
        turn.status, turn.next_attempt_at, turn.attempts = TURN_WAITING_RETRY, utcnow(), 0
        turn.holding_sent = True  # the user already heard from us; no second holding message
        session.execute(
            update(Message).where(Message.turn_id == turn_id, Message.direction == "in")
            .values(status=PROCESSING, error=None)
        )
        return turn.user_id


def pending_count(db) -> int:
    """Inbound messages not yet answered (received or in a turn being processed)."""
    with db.session() as session:
        return session.scalar(
            select(func.count()).select_from(Message).where(
                Message.direction == "in", Message.status.in_((RECEIVED, PROCESSING))
            )
        ) or 0


def handoff_sweep(services) -> None:
    """Overdue handoffs and due team notifications; a failure is logged, the sweep goes on."""
    try:
        handoff.sweep(services)
    except Exception:  # noqa: BLE001 - the next sweep tries again
        log.exception("handoff sweep failed")


def hourly(services) -> None:
    """Close expired handoffs, delete old voice files and simulator uploads, prune login attempts;
    apply RETENTION_DAYS."""
    settings = services.settings
    now = utcnow()
    with services.db.session() as session:
        expired = list(session.scalars(select(Handoff.user_id).where(Handoff.status == "open",
                                                                     Handoff.expires_at < now)))
        session.execute(
            update(Handoff).where(Handoff.status == "open", Handoff.expires_at < now)
            .values(status="closed", closed_at=now, closed_by="expired")
        )
        if expired:
            session.execute(
                update(Message).where(Message.user_id.in_(expired), Message.direction == "in",
                                      Message.status == WAITING_HUMAN).values(status=UNANSWERED)
            )
    login_limits.prune(services.db, now=now)
    retention = settings.media_retention_days
    removed = services.storage.cleanup(retention)
    uploads = Path(settings.instance_dir) / "uploads"
    cutoff = time.time() - retention * 86400
    for path in uploads.glob("*") if uploads.is_dir() else []:
        if path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.info("maintenance removed %d old media files", removed)
    if settings.retention_days is not None:
        from app.inbox.privacy import apply_retention

        apply_retention(services, settings.retention_days)
