"""Telling the team a person is waiting: durable ``notifications`` rows, sent and retried.

``create_for`` writes one row per target when a handoff opens, in the handoff's own
transaction: ``webhook`` (HANDOFF_NOTIFY_WEBHOOK_URL, Slack-compatible ``{"text": ...}``)
and one per number in HANDOFF_NOTIFY_WHATSAPP (through Twilio). ``send_due`` sends the
given rows, or every due one; the inbox's recovery sweep calls it, so a failure is retried
with backoff (RETRY_SCHEDULE) and, after the last try, stays ``failed`` — the dashboard
shows it and an operator can retry it (``retry``).

The text carries the user's masked phone, the reason, the last message (redacted: phone
numbers in it are masked too) and a link to the conversation (PUBLIC_BASE_URL + the
transcript path). It never carries a full phone number of the user.

A team member whose 24-hour WhatsApp window is closed cannot get free-form text (Twilio
error 63016): the HANDOFF_NOTIFY_CONTENT_SID template goes instead, with the variables
1 = masked phone, 2 = reason, 3 = link.

Two processes may pick the same due row at once; a row is claimed by one UPDATE that
moves ``next_attempt_at`` forward (a lease), so only the claimer sends it.
"""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import or_, select, update

from app.clients import webhook_client
from app.clients.errors import GatewayError
from app.db import utcnow
from app.models import Message, Notification, User
from app.redaction import mask_phone, redact

log = logging.getLogger(__name__)

RETRY_SCHEDULE = (30.0, 120.0, 600.0, 3600.0, 3 * 3600.0)
CLAIM_SECONDS = 60.0
LAST_MESSAGE_CHARS = 300
WINDOW_CLOSED = "63016"
PENDING, SENT, FAILED = "pending", "sent", "failed"


def conversation_link(services, user_id: int) -> str | None:
    base = services.public_base_url()
    return f"{base}/conversations/{user_id}" if base else None


def _last_message(session, user_id: int) -> str | None:
    row = session.execute(
        select(Message.body, Message.transcription, Message.kind)
        .where(Message.user_id == user_id, Message.direction == "in")
        .order_by(Message.created_at.desc(), Message.id.desc()).limit(1)
    ).first()
    if row is None:
        return None
    text = (row.transcription or row.body or "").strip() or f"({row.kind})"
    text = " ".join(text.split())
    return redact(text[:LAST_MESSAGE_CHARS] + ("…" if len(text) > LAST_MESSAGE_CHARS else ""))


def compose(services, session, handoff) -> tuple[str, dict]:
    """The notification text and the template variables, with no full phone number."""
    user = session.get(User, handoff.user_id)
    who = mask_phone(user.phone)
    name = user.display_name
    link = conversation_link(services, user.id)
    reason = redact(handoff.reason)
    lines = [
        "Atendimento humano pedido no WhatsApp da Endrigo Digital",
        f"Contato: {name + ' · ' if name else ''}{who}",
        f"Motivo: {reason}",
    ]
    last = _last_message(session, user.id)
    if last:
        lines.append(f"Última mensagem: “{last}”")
    if link:
        lines.append(f"Abrir a conversa: {link}")
    variables = {"1": who, "2": reason[:200], "3": link or "-"}
    return "\n".join(lines), variables


def create_for(session, services, handoff, now: dt.datetime | None = None) -> list[int]:
    """Rows for every configured target; their ids (empty when nothing is configured)."""
    settings = services.settings
    targets = []
    if settings.handoff_notify_webhook_url:
        targets.append(("webhook", "webhook"))
    targets += [("whatsapp", number) for number in settings.handoff_notify_whatsapp]
    if not targets:
        return []
    text, _ = compose(services, session, handoff)
    rows = [Notification(handoff_id=handoff.id, channel=channel, target=target, text=text, status=PENDING,
                         attempts=0, next_attempt_at=now or utcnow(), created_at=now or utcnow())
            for channel, target in targets]
    session.add_all(rows)
    session.flush()
    return [row.id for row in rows]


def _claim(services, ids: list[int] | None, now: dt.datetime) -> list[int]:
    """Take due rows (or the given ones) for this process by moving their next attempt forward."""
    lease_until = now + dt.timedelta(seconds=CLAIM_SECONDS)
    with services.db.session() as session:
        query = select(Notification.id).where(Notification.status == PENDING,
                                              or_(Notification.next_attempt_at.is_(None),
                                                  Notification.next_attempt_at <= now))
        if ids is not None:
            query = query.where(Notification.id.in_(ids))
        candidates = list(session.scalars(query.order_by(Notification.id).limit(50)))
        claimed = []
        for row_id in candidates:
            taken = session.execute(
                update(Notification).where(Notification.id == row_id, Notification.status == PENDING,
                                           or_(Notification.next_attempt_at.is_(None),
                                               Notification.next_attempt_at <= now))
                .values(next_attempt_at=lease_until)
            ).rowcount
            if taken:
                claimed.append(row_id)
    return claimed


def send_due(services, ids: list[int] | None = None, now: dt.datetime | None = None) -> int:
    """Send the given (or all due) notifications; returns how many went out. Never raises."""
    now = now or utcnow()
    sent = 0
    try:
        claimed = _claim(services, ids, now)
    except Exception:  # noqa: BLE001 - the sweep tries again; nothing is lost
        log.exception("could not claim notifications")
        return 0
    for row_id in claimed:
        try:
            sent += _send_one(services, row_id)
        except Exception:  # noqa: BLE001 - one broken row must not stop the others
            log.exception("notification %s failed unexpectedly", row_id)
            _record_failure(services, row_id, "internal error", retryable=True)
    return sent


def _send_one(services, row_id: int) -> int:
    settings = services.settings
    with services.db.session() as session:
        row = session.get(Notification, row_id)
        channel, target, text = row.channel, row.target, row.text
        handoff = row.handoff_id
    try:
        if channel == "webhook":
            if not settings.handoff_notify_webhook_url:
                raise GatewayError("unconfigured", "HANDOFF_NOTIFY_WEBHOOK_URL is no longer set", retryable=False)
            webhook_client.post_text(settings.handoff_notify_webhook_url, text)
            sid = None
        else:
            sid = _send_whatsapp(services, handoff, target, text)
    except GatewayError as exc:
        _record_failure(services, row_id, exc.reason, retryable=exc.retryable)
        return 0
    with services.db.session() as session:
        row = session.get(Notification, row_id)
        row.status, row.sent_at, row.provider_sid, row.last_error = SENT, utcnow(), sid, None
        row.attempts += 1
    return 1


def _send_whatsapp(services, handoff_id: int, to: str, text: str) -> str:
    from app.clients.twilio_client import TwilioSendError

    try:
        return services.twilio.send(to, body=text).sid
    except TwilioSendError as exc:
        content_sid = services.settings.handoff_notify_content_sid
        if exc.code != WINDOW_CLOSED:
            raise
        if not content_sid:
            raise TwilioSendError("refused", exc.reason + " (set HANDOFF_NOTIFY_CONTENT_SID to reach team members "
                                  "outside the 24-hour window)", retryable=False, code=exc.code) from exc
    from app.models import Handoff

    with services.db.session() as session:
        _, variables = compose(services, session, session.get(Handoff, handoff_id))
    return services.twilio.send(to, content_sid=content_sid, content_variables=variables).sid


def _record_failure(services, row_id: int, reason: str, *, retryable: bool) -> None:
    with services.db.session() as session:
        row = session.get(Notification, row_id)
        row.attempts += 1
        row.last_error = redact(reason)[:500]
        if retryable and row.attempts <= len(RETRY_SCHEDULE):
            row.next_attempt_at = utcnow() + dt.timedelta(seconds=RETRY_SCHEDULE[row.attempts - 1])
        else:
            row.status, row.next_attempt_at = FAILED, None
        attempts, status = row.attempts, row.status
    log.warning("team notification %s (%s) attempt %d failed: %s", row_id, status, attempts, redact(reason))


def retry(services, notification_id: int) -> bool:
    """An operator's retry: a failed (or waiting) notification becomes due now. False when already sent."""
    with services.db.session() as session:
        changed = session.execute(
            update(Notification).where(Notification.id == notification_id, Notification.status != SENT)
            .values(status=PENDING, next_attempt_at=utcnow())
        ).rowcount
    if changed:
        send_due(services, [notification_id])
    return bool(changed)


def for_handoffs(session, handoff_ids: list[int]) -> dict[int, list[Notification]]:
    out: dict[int, list[Notification]] = {}
    if not handoff_ids:
        return out
    for row in session.scalars(select(Notification).where(Notification.handoff_id.in_(handoff_ids))
                               .order_by(Notification.id)):
        out.setdefault(row.handoff_id, []).append(row)
    return out
