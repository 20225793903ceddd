"""LGPD (Lei Geral de Proteção de Dados): a user's data exported, erased, or aged out (beside the
hourly sweep that applies RETENTION_DAYS, in the inbox layer: it reaches storage, the
simulator's uploads and the audit trail).

- ``export_user``: everything we hold about one user as JSON-ready data: profile, messages
  (with transcriptions), leads, handoffs, and the operator actions about them.
- ``erase_user``: deletes the user's messages, turns, media files (local or GCS, and
  simulator uploads), leads, handoffs and limit events; scrubs the details of operator
  actions about them; anonymises the user row (kept, so the audit trail and the counts stay
  consistent; it can receive nothing). The erase is recorded in the audit trail with counts
  only, no personal data.
- ``apply_retention``: RETENTION_DAYS: the hourly sweep deletes conversation content (messages
  and their media, finished turns) older than that many days.

Voice notes the user sent stay on Twilio's servers (we never copy them); see docs/PRIVACY.md
for how to delete them there. The CLI is in app/inbox/cli.py; the dashboard download in
app/web/dashboard/trust.py.
"""
from __future__ import annotations

import datetime as dt
import logging
import re

from sqlalchemy import delete, func, select, update

from app.channels.simulator.inbound import UPLOAD_SCHEME, SimulatorInputError, upload_path
from app.db import utcnow
from app.models import (
    PROCESSING,
    RECEIVED,
    TURN_PROCESSING,
    TURN_WAITING_RETRY,
    ConversationRead,
    Handoff,
    Lead,
    LimitEvent,
    Message,
    Notification,
    OperatorAction,
    Turn,
    User,
)
from app.operators import audit

log = logging.getLogger(__name__)

ERASED_PREFIX = "erased:"


class PrivacyError(ValueError):
    """The request cannot be carried out; the text says why."""


def normalise_phone(value: str) -> str:
    """``whatsapp:+55 (11) 98765-4321`` -> ``+5511987654321`` (how users are stored)."""
    raw = (value or "").strip()
    if raw.lower().startswith("whatsapp:"):
        raw = raw[len("whatsapp:"):]
    if raw.startswith("sim:"):
        return raw
    digits = re.sub(r"\D", "", raw)
    if not 8 <= len(digits) <= 15:
        raise PrivacyError(f"not a phone number: {value!r} (expected e.g. +5511987654321)")
    return "+" + digits


def find_user(db, phone: str) -> int | None:
    with db.session() as session:
        return session.scalar(select(User.id).where(User.phone == normalise_phone(phone)))


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


def export_user(db, user_id: int) -> dict:
    """Everything stored about ``user_id``, as plain JSON-ready data."""
    with db.session() as session:
        user = session.get(User, user_id)
        if user is None:
            raise PrivacyError("no such user")
        messages = session.scalars(select(Message).where(Message.user_id == user_id)
                                   .order_by(Message.created_at, Message.id)).all()
        leads = session.scalars(select(Lead).where(Lead.user_id == user_id).order_by(Lead.id)).all()
        handoffs = session.scalars(select(Handoff).where(Handoff.user_id == user_id).order_by(Handoff.id)).all()
        actions = session.scalars(select(OperatorAction).where(OperatorAction.user_id == user_id)
                                  .order_by(OperatorAction.id)).all()
        return {
            "exported_at": _iso(utcnow()),
            "profile": {
                "id": user.id, "phone": user.phone, "channel": user.channel, "whatsapp_id": user.wa_id,
                "profile_name": user.profile_name, "learned_name": user.learned_name,
                "reply_mode": user.reply_mode, "message_count": user.message_count,
                "first_seen_at": _iso(user.first_seen_at), "last_seen_at": _iso(user.last_seen_at),
                "opted_out_at": _iso(user.opted_out_at), "erasure_requested_at": _iso(user.erasure_requested_at),
            },
            "messages": [{
                "id": m.id, "direction": m.direction, "channel": m.channel, "kind": m.kind, "body": m.body,
                "transcription": m.transcription, "media_type": m.media_type, "has_media": bool(m.media_url),
                "audio_seconds": m.audio_seconds, "status": m.status, "created_at": _iso(m.created_at),
            } for m in messages],
            "leads": [{"id": lead.id, "name": lead.name, "interest": lead.interest, "email": lead.email,
                       "phone": lead.phone, "created_at": _iso(lead.created_at)} for lead in leads],
            "handoffs": [{"id": h.id, "reason": h.reason, "status": h.status, "opened_at": _iso(h.opened_at),
                          "closed_at": _iso(h.closed_at)} for h in handoffs],
            "operator_actions": [{"id": a.id, "operator": a.operator_name, "action": a.action, "detail": a.detail,
                                  "created_at": _iso(a.created_at)} for a in actions],
        }


def _delete_media(services, messages) -> int:
    """Delete the files behind the messages' media URLs: our voice replies (local or GCS)
    and simulator uploads. Returns how many files were removed."""
    removed = 0
    storage = services.storage
    for url in {m.media_url for m in messages if m.media_url}:
        if url.startswith(UPLOAD_SCHEME):
            try:
                path = upload_path(services.settings, url)
            except SimulatorInputError:
                continue
            if path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
            continue
        key = storage.key_for_url(url)
        if key is not None and storage.delete(key):
            removed += 1
    return removed


def erase_user(services, user_id: int, actor: str) -> dict:
    """Erase ``user_id``'s data (see the module docstring); returns the counts recorded."""
    db = services.db
    with db.session() as session:
        user = session.get(User, user_id)
        if user is None:
            raise PrivacyError("no such user")
        if user.phone.startswith(ERASED_PREFIX):
            raise PrivacyError("this user's data was already erased")
        messages = session.scalars(select(Message).where(Message.user_id == user_id)).all()
    # Files first: a failure here leaves the rows, so the erase can simply be run again.
    media = _delete_media(services, messages)
    now = utcnow()
    with db.session() as session:
        counts = {
            "messages": session.execute(delete(Message).where(Message.user_id == user_id)).rowcount,
            "turns": session.execute(delete(Turn).where(Turn.user_id == user_id)).rowcount,
            "leads": session.execute(delete(Lead).where(Lead.user_id == user_id)).rowcount,
            # Team notifications of the user's handoffs first (they point at the handoffs).
            "notifications": session.execute(delete(Notification).where(Notification.handoff_id.in_(
                select(Handoff.id).where(Handoff.user_id == user_id)))).rowcount,
            "handoffs": session.execute(delete(Handoff).where(Handoff.user_id == user_id)).rowcount,
            "conversation_reads": session.execute(
                delete(ConversationRead).where(ConversationRead.user_id == user_id)).rowcount,
            "limit_events": session.execute(delete(LimitEvent).where(LimitEvent.user_id == user_id)).rowcount,
            "media_files": media,
        }
        # The audit trail keeps who did what and when; what it said about the person goes.
        session.execute(update(OperatorAction).where(OperatorAction.user_id == user_id)
                        .values(detail={"erased": True}))
        session.execute(update(User).where(User.id == user_id).values(
            phone=f"{ERASED_PREFIX}{user_id}", wa_id=None, profile_name=None, learned_name=None,
            message_count=0, opted_out_at=now, erasure_requested_at=None, limits_lifted_at=None))
    audit.record(db, actor, "erase", user_id=user_id, detail=counts)
    log.info("user %s erased: %s", user_id, counts)
    return counts


def apply_retention(services, days: int, now: dt.datetime | None = None) -> dict:
    """Delete conversation content older than ``days`` (RETENTION_DAYS): messages no turn is
    still working on, their media, and finished turns left without messages."""
    db = services.db
    cutoff = (now or utcnow()) - dt.timedelta(days=days)
    active_turns = select(Turn.id).where(Turn.status.in_((TURN_PROCESSING, TURN_WAITING_RETRY)))
    old = select(Message).where(
        Message.created_at < cutoff, Message.status.notin_((RECEIVED, PROCESSING)),
        (Message.turn_id.is_(None)) | (Message.turn_id.notin_(active_turns)))
    with db.session() as session:
        messages = session.scalars(old.limit(5000)).all()
    if not messages:
        return {"messages": 0, "turns": 0, "media_files": 0}
    media = _delete_media(services, messages)
    ids = [m.id for m in messages]
    with db.session() as session:
        deleted = session.execute(delete(Message).where(Message.id.in_(ids))).rowcount
        still_used = select(Message.turn_id).where(Message.turn_id.is_not(None))
        turns = session.execute(delete(Turn).where(
            Turn.created_at < cutoff, Turn.status.notin_((TURN_PROCESSING, TURN_WAITING_RETRY)),
            Turn.id.notin_(still_used))).rowcount
    result = {"messages": deleted, "turns": turns, "media_files": media}
    log.info("retention (%d days) deleted %s", days, result)
    return result


def erasure_requests(db) -> list[User]:
    with db.session() as session:
        return list(session.scalars(select(User).where(User.erasure_requested_at.is_not(None))
                                    .order_by(User.erasure_requested_at)))


def opted_out_users(db, limit: int = 200) -> tuple[int, list[User]]:
    with db.session() as session:
        condition = User.opted_out_at.is_not(None) & ~User.phone.startswith(ERASED_PREFIX)
        total = session.scalar(select(func.count()).select_from(User).where(condition)) or 0
        rows = session.scalars(select(User).where(condition).order_by(User.opted_out_at.desc()).limit(limit)).all()
        return total, list(rows)
