"""SQLAlchemy 2.x models: users, messages, turns, leads, handoffs, provider status, realtime sessions, operators.

The schema is created and changed only by Alembic migrations (migrations/versions/);
keep a migration in step with every change here. All timestamps are naive UTC.

Life of an inbound message (``Message.status``):
``received`` (stored by the webhook) -> ``processing`` (taken into a turn) ->
``answered`` | ``failed`` (reason in ``error``) | ``waiting_human`` (a human handoff is open; it
becomes ``answered`` when an operator replies, ``unanswered`` when the handoff ends without one)
| ``ignored`` (the user opted out; also rows written before human takeover existed) | ``limited``
(over a per-user limit or the daily model budget; stored, not answered).
Outbound rows: ``pending`` (decided with the turn's answer) -> ``sending`` (the send began) ->
any status Twilio reports, stored as it came (``queued``/``sent`` ... ``delivered``/``read``, or
``failed``/``undelivered`` with ``error_code``); ``refused`` when Twilio refused it at send time;
or, refused by the send policy (app/channels/policy.py) with the reason in ``error``:
``not_sent`` (the user opted out) or ``held`` (outside WhatsApp's 24-hour window, no template).
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    or_,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from app.db import utcnow


class Base(DeclarativeBase):
    pass


# Inbound statuses
RECEIVED, PROCESSING, ANSWERED, FAILED, IGNORED = "received", "processing", "answered", "failed", "ignored"
WAITING_HUMAN, UNANSWERED = "waiting_human", "unanswered"
# Outbound statuses of our own, before Twilio has the part:
PENDING = "pending"  # decided and stored with the turn's answer, not sent yet
SENDING = "sending"  # the send began; without a SID its outcome is unknown until reconciled
REFUSED = "refused"  # Twilio refused it at send time (4xx): a retry of the turn does not resend it
CANCELED_BY_US = "skipped"  # not sent on purpose (e.g. the rest of a refused voice reply went as text)
# Twilio's message statuses (message_enum_status in the 2010 API spec) in the order they happen.
# A status never moves a row backwards; one we do not know ranks just above "sending", so it
# replaces only our own in-flight marks, and it is stored as it came.
STATUS_RANK = {"pending": -1, "sending": 0, "accepted": 1, "scheduled": 1, "queued": 2, "sent": 4,
               "partially_delivered": 5, "delivered": 6, "read": 7}
UNKNOWN_STATUS_RANK = 1
LIMITED = "limited"  # inbound: over a per-user limit or the daily model budget (app/ops/limits.py)
# Outbound rows the send policy refused (never sent; the reason is in ``error``).
NOT_SENT, HELD = "not_sent", "held"
FAILED_DELIVERY_STATUSES = {"failed", "undelivered"}
TERMINAL_STATUSES = FAILED_DELIVERY_STATUSES | {"canceled", REFUSED, CANCELED_BY_US}
STATUS_CHARS = 32


def status_rank(status: str) -> int:
    return STATUS_RANK.get(status, UNKNOWN_STATUS_RANK)


# Turn statuses
TURN_PROCESSING, TURN_WAITING_RETRY, TURN_ANSWERED, TURN_FAILED = "processing", "waiting_retry", "answered", "failed"
# A message from the team (an operator's reply, a handoff notice): a turn only so that its parts
# go through the outbox like the bot's (rows per part, exactly once); the inbox never runs it.
TURN_TEAM = "team"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # E.164 for WhatsApp users ("+5511999990001"); "sim:<n>" for simulator users.
    phone: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    channel: Mapped[str] = mapped_column(String(16), default="whatsapp", nullable=False)
    wa_id: Mapped[str | None] = mapped_column(String(32))
    profile_name: Mapped[str | None] = mapped_column(String(128))
    learned_name: Mapped[str | None] = mapped_column(String(128))
    # auto: voice reply to a voice note, text otherwise; text / audio: always that.
    reply_mode: Mapped[str] = mapped_column(String(8), default="auto", nullable=False)
    message_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    first_seen_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    last_seen_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    opted_out_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # An operator lifted the user's limits at this time: only messages after it count.
    limits_lifted_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # The user asked for their data to be erased ("APAGAR MEUS DADOS"); cleared by the erase.
    erasure_requested_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # The per-user lease: only the holder processes this user's messages (across processes).
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    messages: Mapped[list["Message"]] = relationship(back_populates="user", lazy="raise_on_sql")

    @property
    def display_name(self) -> str | None:
        return self.learned_name or self.profile_name


class Turn(Base):
    """One answer to one or more coalesced inbound messages."""

    __tablename__ = "turns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)
    status: Mapped[str] = mapped_column(String(16), default=TURN_PROCESSING, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # The final answer, kept so that a retry after a crash sends the same words.
    reply_text: Mapped[str | None] = mapped_column(Text)
    reply_kind: Mapped[str | None] = mapped_column(String(8))  # text | audio
    holding_sent: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # When the answer and all its parts were stored, before the first send: the turn is frozen.
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # Model calls and tokens: {"model_calls", "input_tokens", "cached_tokens", "output_tokens"}.
    usage: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    error_kind: Mapped[str | None] = mapped_column(String(32))
    timings: Mapped[dict | None] = mapped_column(JSON)
    # The function tools the model called in this turn: name, arguments, ok/error, ms.
    tool_calls: Mapped[list | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    __table_args__ = (Index("ix_turns_status_next", "status", "next_attempt_at"),)


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    turn_id: Mapped[int | None] = mapped_column(ForeignKey("turns.id"), index=True)
    direction: Mapped[str] = mapped_column(String(3), nullable=False)  # in | out
    channel: Mapped[str] = mapped_column(String(16), default="whatsapp", nullable=False)
    kind: Mapped[str] = mapped_column(String(16), default="text", nullable=False)  # text | audio | image | ...
    # Inbound: Twilio's MessageSid, the idempotency key. Outbound: the SID Twilio gave our message.
    provider_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    body: Mapped[str | None] = mapped_column(Text)
    transcription: Mapped[str | None] = mapped_column(Text)
    media_url: Mapped[str | None] = mapped_column(Text)
    media_type: Mapped[str | None] = mapped_column(String(128))
    num_media: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    # Provider fields we keep for the turn (location, button payload, reply-to ...); no secrets.
    extra: Mapped[dict | None] = mapped_column(JSON)
    # Any status Twilio sends fits (its enum includes partially_delivered; new values may come).
    status: Mapped[str] = mapped_column(String(STATUS_CHARS), nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(32))
    # Outbound only: position of this part in the turn's reply, for idempotent re-sends.
    part_index: Mapped[int | None] = mapped_column(Integer)
    # Inbound voice notes: their length, counted against USER_AUDIO_SECONDS_PER_DAY.
    audio_seconds: Mapped[float | None] = mapped_column(Float)
    timings: Mapped[dict | None] = mapped_column(JSON)
    # Outbound only: when its send began (bounds the search of Twilio's list after a crash).
    send_started_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # Outbound only: the operator who wrote this message (None: the bot).
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow, nullable=False)

    user: Mapped[User] = relationship(back_populates="messages", lazy="raise_on_sql")

    __table_args__ = (
        Index("ix_messages_user_created", "user_id", "created_at"),
        Index("ix_messages_status_direction", "status", "direction"),
        Index("ix_messages_created", "created_at"),
        UniqueConstraint("turn_id", "part_index", "direction", name="uq_messages_turn_part"),
    )


class Lead(Base):
    __tablename__ = "leads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    interest: Mapped[str] = mapped_column(Text, nullable=False)
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)


class Handoff(Base):
    """A request for a human; while open, the bot stays silent for that user."""

    __tablename__ = "handoffs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(8), default="open", nullable=False)  # open | closed
    opened_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    closed_by: Mapped[str | None] = mapped_column(String(64))
    # Who opened it: model | offline | operator | api; and the operator who took it over or
    # answered first ("mine" in the inbox).
    source: Mapped[str | None] = mapped_column(String(16))
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    # The first operator answer, and the deadline for it (HANDOFF_TIMEOUT_HOURS after the
    # team's next opening); past it with no answer, the user is told and the bot resumes.
    answered_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    answer_due_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    @classmethod
    def is_open(cls, now: dt.datetime):
        """The one definition of an open handoff, as a SQL condition: open and not expired at ``now``."""
        return and_(cls.status == "open", or_(cls.expires_at.is_(None), cls.expires_at > now))


class ProviderStatus(Base):
    """Last success / last error per provider, shared by every worker process, for the dashboard."""

    __tablename__ = "provider_status"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_ok_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    last_error_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class RealtimeSession(Base):
    """One try of the realtime voice path (app/pipeline/realtime.py) for a turn, for operators.

    ``outcome``: ``answered`` (the session's answer is decided in the outbox), ``abandoned``
    (the attempt ended before the decision), or ``fallback`` (the turn went through the main
    pipeline; ``reason`` is the kind: connect, auth, error_event, timeout, closed, empty_audio,
    empty_answer, conversion, storage, internal). A turn with a fallback never tries the
    realtime path again.
    """

    __tablename__ = "realtime_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id"), nullable=False, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)  # operator-safe (redacted) detail of a fallback
    model: Mapped[str] = mapped_column(String(64), nullable=False)
    voice: Mapped[str] = mapped_column(String(16), nullable=False)  # openai | elevenlabs
    input_seconds: Mapped[float | None] = mapped_column(Float)  # committed audio, after the silence trim
    output_seconds: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)  # the session: connect to the last answer event
    first_audio_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)

    __table_args__ = (Index("ix_realtime_sessions_created", "created_at"),)


# ---- operators (the dashboard's people; logic in app/operators/) ---------------------------

ROLE_ADMIN, ROLE_AGENT = "admin", "agent"
OPERATOR_ROLES = (ROLE_ADMIN, ROLE_AGENT)


class Operator(Base):
    """A person who logs in to the dashboard or calls its API with a token."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Normalised (lower case) login name; see app/operators/accounts.py.
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    role: Mapped[str] = mapped_column(String(8), nullable=False)  # admin | agent
    # argon2id (argon2-cffi's encoded form). Never shown, logged or sent anywhere.
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    # True while the password is DASHBOARD_PASSWORD's (the bootstrap admin): start-up keeps it
    # in step with the variable; setting a password of its own clears the flag.
    password_from_env: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # Stored in the session at login; bumping it (logout everywhere, password change,
    # disable) makes every existing session of this operator invalid.
    session_version: Mapped[int] = mapped_column(Integer, default=1, nullable=False)


class ApiToken(Base):
    """A bearer token for the API; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id"), nullable=False, index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    # The token's first characters, to tell tokens apart in lists; far too few to use it.
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class OperatorAction(Base):
    """The audit trail: who did what to which user, and when."""

    __tablename__ = "operator_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"), index=True)
    # Kept as text so the record stays readable whatever happens to the operator row.
    operator_name: Mapped[str] = mapped_column(String(64), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    detail: Mapped[dict | list | str | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)

    __table_args__ = (Index("ix_operator_actions_created", "created_at"),)


class LoginAttempt(Base):
    """One password check, counted by app/operators/login_limits.py (shared by every process)."""

    __tablename__ = "login_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # "ip:<address>" or "name:<operator>|ip:<address>"
    key: Mapped[str] = mapped_column(String(160), nullable=False)
    succeeded: Mapped[bool] = mapped_column(Boolean, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)

    __table_args__ = (
        Index("ix_login_attempts_key_created", "key", "created_at"),
        Index("ix_login_attempts_created", "created_at"),
    )


class Notification(Base):
    """One team notification of a handoff (webhook or one WhatsApp number), retried until sent.

    ``text`` never holds a full phone number; ``target`` is ``webhook`` or the team member's
    ``whatsapp:+E164`` (the team's own number, not the user's).
    """

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    handoff_id: Mapped[int] = mapped_column(ForeignKey("handoffs.id"), nullable=False, index=True)
    channel: Mapped[str] = mapped_column(String(16), nullable=False)  # webhook | whatsapp
    target: Mapped[str] = mapped_column(String(64), nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(16), default="pending", nullable=False)  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    provider_sid: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    __table_args__ = (Index("ix_notifications_status_next", "status", "next_attempt_at"),)


class ConversationRead(Base):
    """When an operator last opened a conversation: newer inbound messages are "unread" for them."""

    __tablename__ = "conversation_reads"

    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    read_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)


# ---- trust: usage counted in the database (app/ops/limits.py) ------------------------------

class UsageCounter(Base):
    """A counter per name and window, e.g. ("ai_calls", "2026-12-01"): shared by every process."""

    __tablename__ = "usage_counters"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    window: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)


class LimitEvent(Base):
    """A user went over a limit in a window; the row's insertion is the "one notice per window"."""

    __tablename__ = "limit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)
    limit_name: Mapped[str] = mapped_column(String(32), nullable=False)
    window_key: Mapped[str] = mapped_column(String(96), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    lifted_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    lifted_by: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("user_id", "limit_name", "window_key", name="uq_limit_events_window"),
        Index("ix_limit_events_created", "created_at"),
    )
