"""What the live inbox and the API read about conversations (shared by app/web/dashboard and app/web/api.py).

``inbox(db, operator, view=..., query=...)``: conversations waiting for a human first
(longest wait first), then the rest by last activity, each with the last message's
preview, an unread mark (an inbound message newer than this operator's last look,
``conversation_reads``) and the open handoff with how long the user has waited.
``messages_of(db, user_id)``: both sides of one conversation, oldest first, with status and
author (the bot, or the operator's name). ``mark_read`` records an operator's look.

Phone numbers: the dashboard gets them masked; the API (bearer tokens of operators, for
CRMs that address people by number) gets them in full (``full_phone=True``).
"""
from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from app.db import utcnow
from app.localtime import to_local
from app.models import WAITING_HUMAN, ConversationRead, Handoff, Message, Operator, User
from app.redaction import mask_phone, redact

VIEWS = ("all", "waiting", "mine")
PREVIEW_CHARS = 90
INBOX_LIMIT = 100
E164 = re.compile(r"^\+[1-9]\d{7,14}$")


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_condition(query: str):
    """Name (profile or learned) containing the words, or the number ending in the digits given (2+)."""
    conditions = []
    words = query.strip().lower()
    if words:
        pattern = f"%{_like_escape(words)}%"
        conditions += [func.lower(User.profile_name).like(pattern, escape="\\"),
                       func.lower(User.learned_name).like(pattern, escape="\\")]
    digits = re.sub(r"\D", "", query)
    if len(digits) >= 2:
        conditions.append(User.phone.like(f"%{digits}", escape="\\"))
    return or_(*conditions) if conditions else None


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


def _preview(message) -> str:
    if message is None:
        return ""
    text = (message.body or message.transcription or "").strip()
    if not text:
        text = {"audio": "🎤 áudio", "image": "🖼 imagem"}.get(message.kind, f"📎 {message.kind}")
    text = " ".join(text.split())
    if len(text) > PREVIEW_CHARS:
        text = text[:PREVIEW_CHARS - 1] + "…"
    return redact(text)


def inbox(db, operator_id: int | None, view: str = "all", query: str = "", limit: int = INBOX_LIMIT,
          full_phone: bool = False, now: dt.datetime | None = None) -> list[dict]:
    now = now or utcnow()
    view = view if view in VIEWS else "all"
    condition = search_condition(query) if query else None
    with db.session() as session:
        open_rows = session.scalars(select(Handoff).where(Handoff.is_open(now)).order_by(Handoff.id)).all()
        handoffs = {h.user_id: h for h in open_rows}
        if view == "mine":
            handoffs = {uid: h for uid, h in handoffs.items() if h.operator_id == operator_id}
        users_query = select(User)
        if condition is not None:
            users_query = users_query.where(condition)
        if view in ("waiting", "mine"):
            users = session.scalars(users_query.where(User.id.in_(list(handoffs) or [-1]))).all()
        else:
            waiting = session.scalars(users_query.where(User.id.in_(list(handoffs) or [-1]))).all()
            rest = session.scalars(users_query.order_by(User.last_seen_at.desc(), User.id.desc()).limit(limit)).all()
            seen = {u.id for u in waiting}
            users = list(waiting) + [u for u in rest if u.id not in seen]
        ids = [u.id for u in users]
        if not ids:
            return []
        last_ids = session.execute(
            select(func.max(Message.id)).where(Message.user_id.in_(ids)).group_by(Message.user_id)).scalars().all()
        last = {m.user_id: m for m in session.scalars(select(Message).where(Message.id.in_(last_ids)))}
        last_in = dict(session.execute(
            select(Message.user_id, func.max(Message.created_at))
            .where(Message.user_id.in_(ids), Message.direction == "in").group_by(Message.user_id)).all())
        first_waiting = dict(session.execute(
            select(Message.user_id, func.min(Message.created_at))
            .where(Message.user_id.in_(ids), Message.direction == "in", Message.status == WAITING_HUMAN)
            .group_by(Message.user_id)).all())
        reads = dict(session.execute(
            select(ConversationRead.user_id, ConversationRead.read_at)
            .where(ConversationRead.operator_id == (operator_id or -1), ConversationRead.user_id.in_(ids))).all())
        names = _operator_names(session, {h.operator_id for h in handoffs.values() if h.operator_id})
    out = []
    for user in users:
        handoff = handoffs.get(user.id)
        message = last.get(user.id)
        waiting_since = None
        if handoff is not None:
            waiting_since = handoff.opened_at if handoff.answered_at is None else first_waiting.get(user.id)
        newest_in = last_in.get(user.id)
        read_at = reads.get(user.id)
        out.append({
            "id": user.id,
            "name": user.display_name,
            "phone": user.phone if full_phone else mask_phone(user.phone),
            "channel": user.channel,
            "last_activity_at": iso(max(filter(None, (user.last_seen_at, message.created_at if message else None)))),
            "last_message": {"direction": message.direction, "preview": _preview(message),
                             "at": iso(message.created_at)} if message else None,
            "unread": bool(newest_in and (read_at is None or newest_in > read_at)),
            "handoff": {
                "id": handoff.id, "reason": redact(handoff.reason), "source": handoff.source,
                "opened_at": iso(handoff.opened_at), "answered": handoff.answered_at is not None,
                "operator": names.get(handoff.operator_id), "mine": handoff.operator_id == operator_id,
                "waiting_since": iso(waiting_since),
                "waiting_seconds": int((now - waiting_since).total_seconds()) if waiting_since else None,
            } if handoff else None,
        })

    def order(item):
        h = item["handoff"]
        if h is not None:
            # Waiting for a human first, the longest wait first; then open ones already answered.
            return (0, 0 if h["waiting_since"] else 1, h["waiting_since"] or "", "")
        return (1, 0, "", _desc(item["last_activity_at"] or ""))

    out.sort(key=order)
    return out[:limit]


def _desc(text: str) -> str:
    """A key that sorts ISO timestamps newest first inside an ascending sort."""
    return "".join(chr(0x10FFFF - ord(c)) for c in text)


def _operator_names(session, ids) -> dict[int, str]:
    ids = [i for i in ids if i]
    if not ids:
        return {}
    return dict(session.execute(select(Operator.id, Operator.name).where(Operator.id.in_(ids))).all())


def waiting_count(db, now: dt.datetime | None = None) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Handoff).where(Handoff.is_open(now or utcnow()))) or 0


def user_by_phone(session, phone: str) -> User | None:
    return session.scalar(select(User).where(User.phone == phone))


def messages_of(db, user_id: int, limit: int = 200) -> list[dict]:
    with db.session() as session:
        rows = list(reversed(session.scalars(
            select(Message).where(Message.user_id == user_id)
            .order_by(Message.created_at.desc(), Message.id.desc()).limit(limit)).all()))
        names = _operator_names(session, {m.operator_id for m in rows})
    return [{
        "id": m.id,
        "direction": m.direction,
        "kind": m.kind,
        "body": m.body,
        "transcription": m.transcription,
        "status": m.status,
        "author": ("user" if m.direction == "in" else
                   (f"operator:{names.get(m.operator_id, '?')}" if m.operator_id else "bot")),
        "operator": names.get(m.operator_id) if m.operator_id else None,
        "error_code": m.error_code,
        "created_at": iso(m.created_at),
    } for m in rows]


def fingerprint(db, user_id: int) -> str:
    """Changes whenever the transcript would: messages added or updated, handoffs opened or closed."""
    with db.session() as session:
        last_id, last_update = session.execute(
            select(func.max(Message.id), func.max(Message.updated_at)).where(Message.user_id == user_id)).one()
        handoff_id, handoff_closed = session.execute(
            select(func.max(Handoff.id), func.max(Handoff.closed_at)).where(Handoff.user_id == user_id)).one()
    return f"{last_id}|{iso(last_update)}|{handoff_id}|{iso(handoff_closed)}"


def mark_read(db, operator_id: int, user_id: int, now: dt.datetime | None = None) -> None:
    now = now or utcnow()
    try:
        with db.session() as session:
            row = session.get(ConversationRead, (operator_id, user_id))
            if row is None:
                session.add(ConversationRead(operator_id=operator_id, user_id=user_id, read_at=now))
            else:
                row.read_at = now
    except IntegrityError:
        pass  # the same operator's other tab inserted it at the same moment: read either way


def local_label(value: dt.datetime | None) -> str:
    local = to_local(value)
    return local.strftime("%d/%m %H:%M") if local else "—"


def waited_label(seconds: int | None) -> str:
    """'3 min', '2 h 05 min', '1 d 3 h' — how long a person has waited (Portuguese)."""
    if seconds is None:
        return ""
    minutes = max(0, seconds) // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"
