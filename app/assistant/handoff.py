"""Human takeover: the one place a handoff opens, gets a human answer, and closes.

``open_handoff(services, user_id, reason, source=..., operator=None)`` is the single entry
point, whoever asks: the model's ``request_human_handoff`` tool (source ``model``), the
offline assistant through the same tool (``offline``), an operator's "assumir conversa"
(``operator``) or the API (``api``). It is idempotent: with a handoff already open it
returns that one (an operator taking over an open handoff becomes its owner). A new
handoff gets its answer deadline (HANDOFF_TIMEOUT_HOURS after the team's next opening,
BUSINESS_HOURS) and its team notifications (app/assistant/team_notify.py) written in the
same transaction, so a crash cannot lose them; they are sent in the background and never
delay the user's turn.

While a handoff is open the inbox keeps the bot silent and marks the user's messages
``waiting_human`` (app/inbox/turns.py). ``operator_reply`` sends an operator's text
and/or media through the same outbox as the bot (``deliver``: rows per part, split,
status callbacks, exactly once), as a *team turn* (``Turn.status == "team"``) whose rows
carry the operator as author; replying to a conversation without an open handoff takes it
over first, so the bot never talks over a person. ``close_handoff`` gives the bot its
voice back; the model's history then holds the team's words (app/assistant/prompt.py).
``sweep`` (the inbox's recovery loop) closes handoffs whose first answer is overdue,
telling the user honestly, and retries due notifications.

Every operator action (take over, reply, close, retry) is written to the audit trail.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from sqlalchemy import select, update

from app.assistant import team_notify
from app.business_hours import describe_moment
from app.channels import channel_for
from app.channels.outbox import deliver, text_parts
from app.channels.policy import reply_refusal
from app.db import utcnow
from app.localtime import to_local
from app.models import ANSWERED, TURN_TEAM, UNANSWERED, WAITING_HUMAN, Handoff, Message, Turn, User
from app.operators import audit
from app.operators.accounts import Account
from app.turn import OutboundPart, PermanentTurnError, RetryableTurnError, UserSnapshot

log = logging.getLogger(__name__)

SOURCES = ("model", "offline", "operator", "api")
MEDIA_PART_INDEX = 50
MAX_REPLY_CHARS = 4096

# What the user hears when nobody from the team answered in time.
TIMEOUT_NOTICE = (
    "Desculpe a demora: ninguém da equipe conseguiu responder a tempo. Eu, o assistente automático, "
    "volto a te atender por aqui; se ainda quiser falar com uma pessoa, é só pedir de novo que eu aviso a equipe."
)
TIMEOUT_NOTICE_INDEX = 0


class HandoffError(ValueError):
    """An operator request about a handoff that cannot be carried out; the message is Portuguese."""


@dataclasses.dataclass(frozen=True)
class HandoffInfo:
    id: int
    user_id: int
    already_open: bool
    opened_at: dt.datetime
    answer_due_at: dt.datetime | None
    expires_at: dt.datetime | None
    operator_id: int | None
    user_message: str  # what to tell the user, honestly, about what happens next


@dataclasses.dataclass(frozen=True)
class ReplyResult:
    turn_id: int
    delivered: bool
    error: str | None = None


def _actor(operator: Account | str | None, source: str) -> Account | str:
    return operator if operator is not None else source


def what_happens_next(settings, answer_due_at: dt.datetime | None, now: dt.datetime) -> str:
    """The honest sentence about when a person answers, given BUSINESS_HOURS (Portuguese)."""
    hours = settings.hours
    schedule = hours.describe()
    if hours.is_open(now):
        text = ("Já avisei a nossa equipe: uma pessoa vai continuar a conversa por aqui, neste mesmo número. "
                f"Nosso horário de atendimento é {schedule}.")
    else:
        opening = hours.next_opening(now)
        text = (f"Já avisei a nossa equipe. Agora estamos fora do horário de atendimento ({schedule}), "
                f"então uma pessoa responde a partir de {describe_moment(opening, now)}, aqui mesmo.")
    if answer_due_at is not None:
        text += (" Enquanto isso eu fico em silêncio; se ninguém responder até "
                 f"{describe_moment(answer_due_at, now)}, eu volto a te atender.")
    return text


def answer_deadline(settings, now: dt.datetime) -> dt.datetime:
    """HANDOFF_TIMEOUT_HOURS after the team's next opening (naive UTC)."""
    opening = settings.hours.next_opening(now).astimezone(dt.timezone.utc).replace(tzinfo=None)
    return opening + dt.timedelta(hours=settings.handoff_timeout_hours)


def open_handoff(services, user_id: int, reason: str, *, source: str, operator: Account | None = None,
                 now: dt.datetime | None = None) -> HandoffInfo:
    """Open a handoff for ``user_id`` (or return the open one); notify the team once, in the background."""
    if source not in SOURCES:
        raise ValueError(f"unknown handoff source {source!r}")
    now = now or utcnow()
    settings = services.settings
    reason = " ".join((reason or "").split())[:500] or "atendimento humano"
    created_notifications: list[int] = []
    with services.db.session() as session:
        # The user's row is the lock (PostgreSQL): the model and an operator opening at the same
        # moment make one handoff. SQLite serialises writers anyway.
        if session.scalar(select(User.id).where(User.id == user_id).with_for_update()) is None:
            raise HandoffError("Contato não encontrado.")
        handoff = session.scalar(
            select(Handoff).where(Handoff.user_id == user_id, Handoff.is_open(now))
            .order_by(Handoff.id.desc()).limit(1)
        )
        already_open = handoff is not None
        if handoff is None:
            due = answer_deadline(settings, now)
            expires = max(now + dt.timedelta(hours=settings.handoff_expiry_hours), due)
            handoff = Handoff(user_id=user_id, reason=reason, status="open", opened_at=now, expires_at=expires,
                              source=source, answer_due_at=due, operator_id=operator.id if operator else None)
            session.add(handoff)
            session.flush()
            created_notifications = team_notify.create_for(session, services, handoff, now=now)
        elif operator is not None and handoff.operator_id is None:
            handoff.operator_id = operator.id
        info = HandoffInfo(id=handoff.id, user_id=user_id, already_open=already_open, opened_at=handoff.opened_at,
                           answer_due_at=handoff.answer_due_at if handoff.answered_at is None else None,
                           expires_at=handoff.expires_at, operator_id=handoff.operator_id,
                           user_message=what_happens_next(
                               settings, handoff.answer_due_at if handoff.answered_at is None else None, now))
    if operator is not None:
        audit.record(services.db, operator, audit.TAKE_OVER, user_id=user_id,
                     detail={"handoff_id": info.id, "source": source, "already_open": already_open})
    if created_notifications:
        log.info("handoff %s opened (%s); notifying the team", info.id, source)
        _in_background(services, team_notify.send_due, services, created_notifications)
    return info


def _in_background(services, fn, *args) -> None:
    """Off the user's turn (the inbox's executor); the rows are durable, so a refusal here only
    means the recovery sweep sends them instead."""
    inbox = getattr(services, "inbox", None)
    try:
        if inbox is not None:
            inbox.submit(fn, *args)
        else:
            fn(*args)
    except RuntimeError:  # the executor is shutting down
        log.info("notifications left to the recovery sweep (executor stopped)")


def open_handoff_of(session, user_id: int, now: dt.datetime | None = None) -> Handoff | None:
    return session.scalar(
        select(Handoff).where(Handoff.user_id == user_id, Handoff.is_open(now or utcnow()))
        .order_by(Handoff.id.desc()).limit(1)
    )


def close_handoff(services, user_id: int, *, by: Account | str, now: dt.datetime | None = None,
                  handoff_id: int | None = None) -> bool:
    """Close the user's open handoff (or ``handoff_id``); True when this call closed it.

    ``by``: the operator, or ``timeout`` / ``expired`` from the sweep. One UPDATE guarded by
    the status, so two operators clicking at once close it once.
    """
    now = now or utcnow()
    closed_by = by.name if isinstance(by, Account) else str(by)
    with services.db.session() as session:
        condition = (Handoff.id == handoff_id) if handoff_id is not None else (
            (Handoff.user_id == user_id) & Handoff.is_open(now))
        ids = list(session.scalars(select(Handoff.id).where(condition, Handoff.status == "open")))
        if handoff_id is not None:
            row = session.get(Handoff, handoff_id)
            user_id = row.user_id if row is not None else user_id
        closed = 0
        for one in ids:
            closed += session.execute(
                update(Handoff).where(Handoff.id == one, Handoff.status == "open")
                .values(status="closed", closed_at=now, closed_by=closed_by[:64])
            ).rowcount
        if closed:
            session.execute(
                update(Message).where(Message.user_id == user_id, Message.direction == "in",
                                      Message.status == WAITING_HUMAN).values(status=UNANSWERED)
            )
    if closed and isinstance(by, Account):
        audit.record(services.db, by, audit.CLOSE, user_id=user_id, detail={"handoff_ids": ids})
    return bool(closed)


# ---- the team's messages ---------------------------------------------------------------------

def _team_turn(session, user_id: int, text: str | None, kind: str, now: dt.datetime) -> int:
    turn = Turn(user_id=user_id, status=TURN_TEAM, attempts=1, reply_text=text, reply_kind=kind,
                created_at=now, finished_at=now)
    session.add(turn)
    session.flush()
    return turn.id


def _parts_of(services, user: UserSnapshot, text: str | None, media: dict | None) -> list[OutboundPart]:
    parts: list[OutboundPart] = []
    if text:
        limit = channel_for(services, user).max_body_chars
        parts = text_parts(text, limit, first_index=0)[:MEDIA_PART_INDEX]
    if media:
        parts.append(OutboundPart(index=MEDIA_PART_INDEX, media_url=media["url"], media_type=media["type"],
                                  kind=media["kind"]))
    return parts


def operator_reply(services, user_id: int, operator: Account, *, text: str | None = None,
                   media: dict | None = None, source: str = "operator") -> ReplyResult:
    """Send an operator's message to the user through the outbox; the conversation is taken over first.

    ``media``: ``{"url", "type", "kind"}`` of a file already in services.storage (Twilio fetches it).
    """
    text = (text or "").strip() or None
    if text is None and media is None:
        raise HandoffError("Escreva uma mensagem ou anexe um arquivo.")
    if text and len(text) > MAX_REPLY_CHARS:
        raise HandoffError(f"A mensagem passa de {MAX_REPLY_CHARS} caracteres.")
    now = utcnow()
    with services.db.session() as session:
        user = session.get(User, user_id)
        if user is None:
            raise HandoffError("Contato não encontrado.")
        snapshot = UserSnapshot.of(user)
        has_open = open_handoff_of(session, user_id, now) is not None
    refusal = reply_refusal(services, user_id)  # opted out, or the 24-hour window closed with no template
    if refusal:
        raise HandoffError(refusal)
    if not has_open:
        open_handoff(services, user_id, "conversa assumida por um operador", source=source, operator=operator,
                     now=now)
    with services.db.session() as session:
        handoff = open_handoff_of(session, user_id, now)
        if handoff is not None:
            handoff.answered_at = handoff.answered_at or now
            handoff.operator_id = handoff.operator_id or operator.id
            # The conversation is alive: the silence lasts HANDOFF_EXPIRY_HOURS from the last answer.
            handoff.expires_at = max(handoff.expires_at or now,
                                     now + dt.timedelta(hours=services.settings.handoff_expiry_hours))
        turn_id = _team_turn(session, user_id, text, media["kind"] if media else "text", now)
        session.execute(
            update(Message).where(Message.user_id == user_id, Message.direction == "in",
                                  Message.status == WAITING_HUMAN).values(status=ANSWERED)
        )
        if media:
            session.get(Turn, turn_id).timings = {"media": media}
    audit.record(services.db, operator, audit.REPLY, user_id=user_id,
                 detail={"turn_id": turn_id, "chars": len(text or ""), "media": media["kind"] if media else None,
                         "source": source})
    return _deliver_team_turn(services, turn_id, snapshot, text, media, operator.id)


def _deliver_team_turn(services, turn_id: int, user: UserSnapshot, text: str | None, media: dict | None,
                       operator_id: int | None) -> ReplyResult:
    try:
        deliver(services, turn_id, user, _parts_of(services, user, text, media), operator_id=operator_id)
    except (RetryableTurnError, PermanentTurnError) as exc:
        log.warning("team message of turn %s not delivered: %s", turn_id, exc.reason)
        return ReplyResult(turn_id=turn_id, delivered=False, error=exc.reason)
    return ReplyResult(turn_id=turn_id, delivered=True)


def retry_team_turn(services, turn_id: int, operator: Account) -> ReplyResult:
    """Send again the parts of a team turn the provider did not accept (accepted parts are skipped)."""
    with services.db.session() as session:
        turn = session.get(Turn, turn_id)
        if turn is None or turn.status != TURN_TEAM:
            raise HandoffError("Mensagem da equipe não encontrada.")
        user = UserSnapshot.of(session.get(User, turn.user_id))
        text, media = turn.reply_text, (turn.timings or {}).get("media")
        author = session.scalar(select(Message.operator_id).where(Message.turn_id == turn_id,
                                                                  Message.operator_id.is_not(None)).limit(1))
    audit.record(services.db, operator, audit.RETRY, user_id=user.id, detail={"turn_id": turn_id})
    return _deliver_team_turn(services, turn_id, user, text, media, author or operator.id)


# ---- the sweep ---------------------------------------------------------------------------------

def sweep(services, now: dt.datetime | None = None) -> dict:
    """Overdue handoffs end honestly; due notifications are retried. Cheap when there is nothing to do."""
    now = now or utcnow()
    with services.db.session() as session:
        overdue = session.execute(
            select(Handoff.id, Handoff.user_id).where(
                Handoff.status == "open", Handoff.answered_at.is_(None), Handoff.answer_due_at.is_not(None),
                Handoff.answer_due_at <= now)
        ).all()
    timed_out = 0
    for handoff_id, user_id in overdue:
        if not close_handoff(services, user_id, by="timeout", handoff_id=handoff_id, now=now):
            continue  # an operator closed or answered it meanwhile
        timed_out += 1
        log.info("handoff %s timed out without an operator answer; the bot resumes", handoff_id)
        with services.db.session() as session:
            user = UserSnapshot.of(session.get(User, user_id))
            turn_id = _team_turn(session, user_id, TIMEOUT_NOTICE, "text", now)
        _deliver_team_turn(services, turn_id, user, TIMEOUT_NOTICE, None, None)
    sent = team_notify.send_due(services, None, now=now)
    return {"timed_out": timed_out, "notifications": sent}


def waiting_since(handoff: Handoff, first_waiting: dt.datetime | None) -> dt.datetime:
    """Since when the user waits for a human: their first unanswered message, else the opening."""
    return first_waiting or handoff.opened_at


def local_iso(value: dt.datetime | None) -> str | None:
    return to_local(value).isoformat(timespec="seconds") if value else None
