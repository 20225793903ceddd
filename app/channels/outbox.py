"""The outbox: every reply part leaves through here, written down before it is sent, sent once.

A part Twilio accepted is never sent again, whatever fails afterwards:

1. ``decide`` stores the turn's answer and ALL its parts (body, media) as ``pending`` rows,
   in one transaction, before the first send. A recovered turn sends exactly these rows,
   never a regenerated answer; newer messages of the user make the next turn.
2. ``send_part`` marks a row ``sending`` (committed) and then calls the channel. The SID
   is recorded right after the call; a failure to record it is retried on its own (the
   message is not sent again for it).
3. A row left ``sending`` without a SID has an unknown outcome (the process died between
   Twilio's 201 and our write, or the answer never came back). Before sending it again,
   ``reconcile`` asks Twilio's Messages list (To, From, DateSent, matching the body or the
   media) whether the message exists; only when it does not is the part sent.

Index ranges keep the kinds of part apart: the reply 0-99, the text fallback of a voice
reply 100-199, the holding message 1000, the apology 1001, the trust notices 1002-1009
(opt-out and opt-in confirmations, limit notices, erasure answer: app/pipeline/gate.py),
and 3000+ the template re-send of a part WhatsApp failed outside the 24-hour window.
``deliver`` sends ad-hoc parts (holding, apology, fallbacks) with the same guarantees. A team
turn (an operator's reply, app/assistant/handoff.py) uses 0-49 for its text and 50 for its media.

Right before each send the policy (app/channels/policy.py) decides: send, send as the
fallback template, or record the row as not sent / held with the reason.
"""
from __future__ import annotations

import datetime as dt
import logging
import time

from sqlalchemy import select

from app.channels import channel_for
from app.channels.policy import check_before_send, outside_window, template_part
from app.channels.twilio.outbound import split_message
from app.channels.twilio.status import WINDOW_CLOSED_CODE
from app.clients.twilio_client import TwilioSendError
from app.db import utcnow
from app.models import (
    CANCELED_BY_US,
    HELD,
    PENDING,
    RECEIVED,
    REFUSED,
    SENDING,
    STATUS_CHARS,
    TERMINAL_STATUSES,
    TURN_TEAM,
    Message,
    Turn,
    User,
    status_rank,
)
from app.turn import OutboundPart, PermanentTurnError, RetryableTurnError, TurnSuperseded, UserSnapshot

log = logging.getLogger(__name__)

REPLY_LAST_INDEX = 99
TEXT_FALLBACK_FIRST_INDEX = 100
HOLDING_INDEX = 1000
APOLOGY_INDEX = 1001
TEMPLATE_RESEND_FIRST_INDEX = 3000
TWILIO_WINDOW_REASON = "Twilio refused it: outside WhatsApp's 24-hour window (63016)"
# Twilio's clock and ours may differ: search its list from a little before the send began.
RECONCILE_MARGIN = dt.timedelta(seconds=120)
# Recording a SID is retried this many times (seconds between tries) before giving up to reconciliation.
RECORD_RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0)


class VoiceRefused(Exception):
    """Twilio refused a voice note at send time: the caller sends the answer as text instead."""


def text_parts(text: str, limit: int, first_index: int) -> list[OutboundPart]:
    return [OutboundPart(index=first_index + i, body=chunk) for i, chunk in enumerate(split_message(text, limit))]


# ---- deciding ---------------------------------------------------------------------------------

def decide(services, turn_id: int, user: UserSnapshot, parts: list[OutboundPart], *, reply_text: str | None,
           reply_kind: str, spoken_text: str | None = None, refuse_if_newer: bool = False) -> bool:
    """Store the answer and its parts before any send; False when the turn was decided already.

    One transaction: either the turn is decided with every part, or not at all. With
    ``refuse_if_newer``, a message of the user still waiting to be taken into a turn makes the
    answer stale: ``TurnSuperseded`` is raised and nothing is stored (zero-wait coalescing).
    """
    channel = channel_for(services, user)
    now = utcnow()
    with services.db.session() as session:
        turn = session.get(Turn, turn_id)
        if turn.decided_at is not None:
            return False
        if refuse_if_newer and session.scalar(select(Message.id).where(
                Message.user_id == user.id, Message.direction == "in", Message.status == RECEIVED).limit(1)):
            raise TurnSuperseded("a newer message arrived before the answer was decided")
        turn.decided_at = now
        turn.reply_text, turn.reply_kind = reply_text, reply_kind
        known = set(session.scalars(select(Message.part_index).where(
            Message.turn_id == turn_id, Message.direction == "out")))
        for part in parts:
            if part.index not in known:
                session.add(_row(user, turn_id, part, channel.name, spoken_text, PENDING))
    return True


def _row(user: UserSnapshot, turn_id: int, part: OutboundPart, channel_name: str, spoken_text: str | None,
         status: str, operator_id: int | None = None) -> Message:
    return Message(operator_id=operator_id,
        user_id=user.id, turn_id=turn_id, direction="out", channel=channel_name, kind=part.kind,
        part_index=part.index, body=part.body if part.kind in ("text", "template") else spoken_text,
        media_url=part.media_url, media_type=part.media_type, status=status,
        num_media=1 if part.media_url else 0,
    )


def decided_parts(services, turn_id: int, first: int = 0, last: int = REPLY_LAST_INDEX) -> list[OutboundPart]:
    """The stored parts of a decided turn in ``[first, last]``, in order (what a recovered turn sends)."""
    with services.db.session() as session:
        rows = session.execute(
            select(Message.part_index, Message.kind, Message.body, Message.media_url, Message.media_type)
            .where(Message.turn_id == turn_id, Message.direction == "out",
                   Message.part_index >= first, Message.part_index <= last)
            .order_by(Message.part_index)
        ).all()
    return [OutboundPart(index=r.part_index, kind=r.kind, body=r.body if r.kind in ("text", "template") else None,
                         media_url=r.media_url, media_type=r.media_type) for r in rows]


# ---- sending ----------------------------------------------------------------------------------

def send_decided(services, turn_id: int, user: UserSnapshot) -> None:
    """Send the turn's stored reply parts in order; a refused voice note is followed by the text, once."""
    parts = decided_parts(services, turn_id)
    for position, part in enumerate(parts):
        try:
            deliver(services, turn_id, user, [part])
        except VoiceRefused as exc:
            log.warning("voice reply refused at send time (%s); the answer follows as text", exc)
            _skip(services, turn_id, [p.index for p in parts[position + 1:]],
                  "voice note refused: the answer went as text")
            send_text_fallback(services, turn_id)
            return


def deliver(services, turn_id: int, user: UserSnapshot, parts: list[OutboundPart],
            spoken_text: str | None = None, operator_id: int | None = None) -> None:
    """Send ``parts`` in order, each exactly once: skip the accepted, reconcile the unknown.

    ``operator_id``: the operator who wrote these parts (team turns); None for the bot.
    """
    channel = channel_for(services, user)
    for part in parts:
        try:
            row_id = _claim(services, channel, turn_id, user, part, spoken_text, operator_id)
        except TwilioSendError as exc:  # Twilio's list could not be read: never guess, try later
            services.provider_health.error("twilio", exc.reason)
            raise RetryableTurnError(f"cannot reconcile an unknown send outcome: {exc.reason}", kind="send") from exc
        if row_id is None:
            continue
        verdict = check_before_send(services, user, part)
        sent = None
        while not verdict.refused:
            try:
                sent = channel.send_part(user, verdict.part, row_id)
                break
            except TwilioSendError as exc:
                if exc.code == WINDOW_CLOSED_CODE and not verdict.part.content_sid:
                    verdict = outside_window(services, part, TWILIO_WINDOW_REASON)  # the template, or hold
                    continue
                _send_failed(services, row_id, part, exc)  # raises what the turn acts on
        if sent is None:
            log.info("part %s of turn %s not sent: %s", part.index, turn_id, verdict.reason)
            _record(services, row_id, status=verdict.status, error=verdict.reason)
            continue
        services.provider_health.ok("twilio" if channel.name == "whatsapp" else "simulator")
        _record_sent(services, row_id, sent.sid, sent.status)
        if verdict.part.content_sid:
            _record_kind(services, row_id, "template")


def _send_failed(services, row_id: int, part: OutboundPart, exc: TwilioSendError):
    """Record a failed send and raise what the turn acts on (see ``deliver``)."""
    services.provider_health.error("twilio", exc.reason)
    definite = exc.kind in ("refused", "unconfigured")
    # A refusal is definite; a 5xx or a lost connection may hide an accepted message,
    # so the row stays "sending" and the next attempt reconciles before sending.
    _record(services, row_id, status=REFUSED if definite else SENDING, error=exc.reason, error_code=exc.code)
    if definite and part.kind == "audio":
        raise VoiceRefused(exc.reason) from exc
    if exc.retryable:
        raise RetryableTurnError(exc.reason, kind="send") from exc
    raise PermanentTurnError(exc.reason, kind="send") from exc


def _record_kind(services, row_id: int, kind: str) -> None:
    """The part went as the fallback template: operators see that on the row."""
    with services.db.session() as session:
        session.get(Message, row_id).kind = kind


def _claim(services, channel, turn_id: int, user: UserSnapshot, part: OutboundPart,
           spoken_text: str | None, operator_id: int | None = None) -> int | None:
    """The part's row, marked ``sending``; None when Twilio already has it (or it is done with)."""
    with services.db.session() as session:
        row = session.scalar(select(Message).where(
            Message.turn_id == turn_id, Message.part_index == part.index, Message.direction == "out"))
        if row is None:
            row = _row(user, turn_id, part, channel.name, spoken_text, PENDING, operator_id)
            session.add(row)
            session.flush()
        if row.provider_sid or row.status in (REFUSED, CANCELED_BY_US) or (
                row.status not in (PENDING, SENDING) and row.status not in TERMINAL_STATUSES):
            return None
        unknown_since = row.send_started_at if row.status == SENDING else None
        row_id = row.id
    if unknown_since is not None and _reconciled(services, channel, user, part, row_id, unknown_since):
        return None
    with services.db.session() as session:
        row = session.get(Message, row_id)
        row.status, row.error, row.error_code = SENDING, None, None
        row.send_started_at = utcnow()
    return row_id


def _reconciled(services, channel, user: UserSnapshot, part: OutboundPart, row_id: int,
                since: dt.datetime) -> bool:
    """Whether Twilio already has the message of a row whose send outcome is unknown (then it is recorded)."""
    candidates = channel.find_sent(user, part, since - RECONCILE_MARGIN)
    if not candidates:
        log.info("unknown send outcome: Twilio has no such message, sending the part")
        return False
    with services.db.session() as session:
        known = set(session.scalars(select(Message.provider_sid).where(
            Message.provider_sid.in_([c.sid for c in candidates]))))
    for candidate in candidates:
        if candidate.sid not in known:
            log.warning("unknown send outcome: Twilio already has the part (%s); not sending it again",
                        candidate.sid[:6] + "…")
            _record_sent(services, row_id, candidate.sid, candidate.status)
            return True
    return False


def _record_sent(services, row_id: int, sid: str, status: str) -> None:
    """Record the SID of an accepted part; a failing write is retried here, never by resending.

    If every try fails the row stays ``sending`` without a SID, and the next attempt
    reconciles it with Twilio's list instead of sending it again.
    """
    for attempt, delay in enumerate((0.0, *RECORD_RETRY_DELAYS)):
        if delay:
            time.sleep(delay)
        try:
            _record(services, row_id, status=status, sid=sid)
            return
        except Exception:  # noqa: BLE001 - the message is out; only our bookkeeping failed
            log.exception("recording the SID of an accepted part failed (try %d)", attempt + 1)
    log.error("the SID of an accepted part is not recorded; the next attempt reconciles with Twilio")


def _record(services, row_id: int, *, status: str, sid: str | None = None,
            error: str | None = None, error_code: str | None = None) -> None:
    with services.db.session() as session:
        row = session.get(Message, row_id)
        status = (status or "queued")[:STATUS_CHARS]
        # A status callback may have got here first with newer news: never move backwards.
        if error is not None or row.status in (PENDING, SENDING) or status_rank(status) > status_rank(row.status):
            row.status = status
        if sid:
            row.provider_sid = sid
        row.error, row.error_code = error, (error_code or None) and error_code[:32]


def _skip(services, turn_id: int, indexes: list[int], reason: str) -> None:
    if not indexes:
        return
    with services.db.session() as session:
        for row in session.scalars(select(Message).where(
                Message.turn_id == turn_id, Message.direction == "out", Message.part_index.in_(indexes),
                Message.provider_sid.is_(None), Message.status == PENDING)):
            row.status, row.error = CANCELED_BY_US, reason


def send_text_fallback(services, turn_id: int) -> None:
    """The turn's voice note was refused or not delivered: send the same answer once as text."""
    with services.db.session() as session:
        turn = session.get(Turn, turn_id)
        user = session.get(User, turn.user_id)
        # A team turn's text went out as its own parts already; only the bot's voice has a text twin.
        text = turn.reply_text if turn.status != TURN_TEAM else None
        snapshot = UserSnapshot.of(user)
    if not text:
        return
    limit = channel_for(services, snapshot).max_body_chars
    try:
        deliver(services, turn_id, snapshot, text_parts(text, limit, first_index=TEXT_FALLBACK_FIRST_INDEX))
    except (RetryableTurnError, PermanentTurnError) as exc:
        log.error("text fallback for turn %s failed: %s", turn_id, exc.reason)
        if isinstance(exc, RetryableTurnError):
            raise


def handle_window_failure(services, row_id: int) -> None:
    """WhatsApp failed a sent part with 63016 (outside the 24-hour window; Twilio accepted it
    first). The failed row stays as Twilio reported it; a new part (index 3000 + its index)
    sends it once more as the fallback template, or is recorded as held for operators."""
    with services.db.session() as session:
        row = session.get(Message, row_id)
        if (row is None or row.turn_id is None or row.direction != "out" or not row.body
                or (row.part_index or 0) >= TEMPLATE_RESEND_FIRST_INDEX):
            return
        turn_id, index, body = row.turn_id, row.part_index or 0, row.body
        snapshot = UserSnapshot.of(session.get(User, row.user_id))
    part = OutboundPart(index=TEMPLATE_RESEND_FIRST_INDEX + index, body=body)
    content_sid = services.settings.twilio_fallback_content_sid
    if not content_sid:
        channel = channel_for(services, snapshot)
        with services.db.session() as session:
            exists = session.scalar(select(Message.id).where(
                Message.turn_id == turn_id, Message.direction == "out", Message.part_index == part.index))
            if exists is None:
                held = _row(snapshot, turn_id, part, channel.name, None, HELD)
                held.error_code = WINDOW_CLOSED_CODE
                held.error = f"{TWILIO_WINDOW_REASON}; held: no TWILIO_FALLBACK_CONTENT_SID configured"
                session.add(held)
        return
    try:
        deliver(services, turn_id, snapshot, [template_part(part, content_sid, body)])
    except (RetryableTurnError, PermanentTurnError) as exc:
        log.error("template re-send for turn %s failed: %s", turn_id, exc.reason)
