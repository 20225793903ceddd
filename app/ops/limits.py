"""Per-user limits and the global daily budget of model calls, counted in the database.

Everything is counted in shared tables, so the limits hold across threads, gunicorn
workers and instances:

- messages per minute and per day (USER_MESSAGES_PER_MINUTE, USER_MESSAGES_PER_DAY): a
  user's inbound rows in the window of the message being judged, up to and including it;
- seconds of voice notes per day (USER_AUDIO_SECONDS_PER_DAY): ``messages.audio_seconds``
  of the user's earlier notes that day (known once converted; a note that starts under the
  limit is heard in full);
- model calls per day for the whole app (AI_CALLS_PER_DAY): ``usage_counters`` row
  ("ai_calls", day), incremented by one upsert per call (``count_ai_call``).

Windows are fixed: the UTC minute, and the São Paulo calendar day (what "today" means to
users and operators). A message is judged by the time it arrived, so a retry hours later
decides the same. ``limit_events`` holds one row per user, limit and window: its insertion
is the "one polite notice per window"; the dashboard lists them. An operator lifting a
user's limits (``lift``) makes only later messages count and closes the open events.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.db import utcnow
from app.localtime import local_midnight_utc, to_local
from app.models import LimitEvent, Message, UsageCounter, User

AI_CALLS = "ai_calls"
MINUTE, DAY, AUDIO, AI_BUDGET = "messages_per_minute", "messages_per_day", "audio_seconds_per_day", "ai_calls_per_day"
LIMIT_NAMES = (MINUTE, DAY, AUDIO, AI_BUDGET)


@dataclass(frozen=True)
class Hit:
    """A message over a limit: which limit, in which window, and why (for operators)."""

    limit: str
    window: str
    reason: str


def _insert(db):
    return sqlite_insert if db.is_sqlite else pg_insert


def day_window(moment: dt.datetime) -> tuple[str, dt.datetime, dt.datetime]:
    """(key, start, end) in naive UTC of the São Paulo day containing ``moment``."""
    day = to_local(moment).date()
    return day.isoformat(), local_midnight_utc(day), local_midnight_utc(day + dt.timedelta(days=1))


def minute_window(moment: dt.datetime) -> tuple[str, dt.datetime, dt.datetime]:
    start = moment.replace(second=0, microsecond=0)
    return start.strftime("%Y-%m-%dT%H:%MZ"), start, start + dt.timedelta(minutes=1)


# ---- the model budget ------------------------------------------------------------------------

def count_ai_call(db, now: dt.datetime | None = None) -> None:
    """One model call made now: +1 on today's counter, atomically (one upsert)."""
    key = day_window(now or utcnow())[0]
    statement = _insert(db)(UsageCounter).values(name=AI_CALLS, window=key, count=1)
    statement = statement.on_conflict_do_update(index_elements=["name", "window"],
                                                set_={"count": UsageCounter.count + 1})
    with db.session() as session:
        session.execute(statement)


def ai_calls_today(db, now: dt.datetime | None = None) -> int:
    key = day_window(now or utcnow())[0]
    with db.session() as session:
        return session.scalar(select(UsageCounter.count).where(
            UsageCounter.name == AI_CALLS, UsageCounter.window == key)) or 0


# ---- per-user limits -------------------------------------------------------------------------

def judge(db, settings, user_id: int, message_ids: list[int]) -> dict[int, Hit]:
    """The messages of ``message_ids`` that are over a limit, with the limit each one hit."""
    hits: dict[int, Hit] = {}
    if not message_ids:
        return hits
    budget = settings.ai_calls_per_day
    with db.session() as session:
        lifted_at = session.scalar(select(User.limits_lifted_at).where(User.id == user_id))
        rows = session.execute(select(Message.id, Message.kind, Message.created_at)
                               .where(Message.id.in_(message_ids))).all()
        budget_used = ai_calls_today(db) if budget is not None else 0
        for message_id, kind, created_at in rows:
            if budget is not None and budget_used >= budget:
                key = day_window(created_at)[0]
                hits[message_id] = Hit(AI_BUDGET, key, f"daily model budget used up ({budget_used}/{budget} calls)")
                continue
            hit = (_over_count(session, user_id, message_id, created_at, lifted_at, MINUTE,
                               settings.user_messages_per_minute)
                   or _over_count(session, user_id, message_id, created_at, lifted_at, DAY,
                                  settings.user_messages_per_day))
            if hit is None and kind == "audio":
                hit = _over_audio(session, user_id, message_id, created_at, lifted_at,
                                  settings.user_audio_seconds_per_day)
            if hit is not None:
                hits[message_id] = hit
    return hits


def _earlier_or_same(user_id: int, message_id: int, created_at: dt.datetime, start: dt.datetime,
                     lifted_at: dt.datetime | None):
    conditions = [
        Message.user_id == user_id, Message.direction == "in", Message.created_at >= start,
        or_(Message.created_at < created_at, and_(Message.created_at == created_at, Message.id <= message_id)),
    ]
    if lifted_at is not None:
        conditions.append(Message.created_at >= lifted_at)
    return and_(*conditions)


def _over_count(session, user_id, message_id, created_at, lifted_at, limit_name, limit) -> Hit | None:
    key, start, _end = (minute_window if limit_name == MINUTE else day_window)(created_at)
    count = session.scalar(select(func.count()).select_from(Message).where(
        _earlier_or_same(user_id, message_id, created_at, start, lifted_at)))
    if count > limit:
        unit = "minute" if limit_name == MINUTE else "day"
        return Hit(limit_name, key, f"over {limit} messages per {unit} ({count} in this {unit})")
    return None


def _over_audio(session, user_id, message_id, created_at, lifted_at, limit) -> Hit | None:
    key, start, _end = day_window(created_at)
    used = session.scalar(select(func.coalesce(func.sum(Message.audio_seconds), 0.0)).where(
        _earlier_or_same(user_id, message_id, created_at, start, lifted_at), Message.id != message_id))
    if used >= limit:
        return Hit(AUDIO, key, f"over {limit} seconds of voice notes per day ({used:.0f} s today)")
    return None


def first_in_window(db, user_id: int, hit: Hit) -> bool:
    """Record that ``user_id`` hit ``hit.limit`` in its window; True only the first time
    (then, and only then, the user gets the polite notice)."""
    statement = _insert(db)(LimitEvent).values(user_id=user_id, limit_name=hit.limit, window_key=hit.window,
                                               created_at=utcnow())
    statement = statement.on_conflict_do_nothing(index_elements=["user_id", "limit_name", "window_key"])
    with db.session() as session:
        return bool(session.execute(statement).rowcount)


def lift(db, user_id: int, operator_name: str) -> bool:
    """An operator lifts the user's limits now: only later messages count; False if no such user."""
    now = utcnow()
    with db.session() as session:
        user = session.get(User, user_id)
        if user is None:
            return False
        user.limits_lifted_at = now
        # The open events are closed, and renamed so that a new hit in the same window gets
        # its notice again (the unique key is per window).
        stamp = now.strftime("%H%M%S%f")
        session.execute(update(LimitEvent).where(LimitEvent.user_id == user_id, LimitEvent.lifted_at.is_(None))
                        .values(lifted_at=now, lifted_by=operator_name[:64],
                                window_key=LimitEvent.window_key + f"~lifted{stamp}"))
    return True


def overview(db, settings, now: dt.datetime | None = None) -> dict:
    """For the dashboard: today's model budget and who hit which limit today."""
    now = now or utcnow()
    _key, start, _end = day_window(now)
    with db.session() as session:
        events = session.execute(
            select(LimitEvent, User).join(User, User.id == LimitEvent.user_id)
            .where(LimitEvent.created_at >= start).order_by(LimitEvent.created_at.desc()).limit(200)
        ).all()
        limited_today = session.scalar(select(func.count()).select_from(Message).where(
            Message.direction == "in", Message.status == "limited", Message.created_at >= start)) or 0
    return {
        "ai_calls_today": ai_calls_today(db, now),
        "ai_calls_per_day": settings.ai_calls_per_day,
        "limited_messages_today": limited_today,
        "events": [{"event": event, "user": user} for event, user in events],
    }
