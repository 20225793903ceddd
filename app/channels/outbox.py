"""The outbox: every reply part leaves through here, written down before it is sent.

Sending is idempotent per turn: each part has a fixed index, its row is written
(``sending``) before the provider call and updated with the provider's SID after it, and
a part already accepted by the provider is never sent again when a turn is retried.
Index ranges keep the kinds of part apart: the reply 0-99, the text fallback of a voice
reply 100-199, the holding message 1000, the apology 1001. A team turn (an operator's
reply, app/assistant/handoff.py) uses 0-49 for its text and 50 for its media.
"""
from __future__ import annotations

import logging

from sqlalchemy import select

from app.channels import channel_for
from app.channels.twilio.outbound import split_message
from app.clients.twilio_client import TwilioSendError
from app.models import ACCEPTED_STATUSES, SENDING, TURN_TEAM, Message, Turn, User
from app.turn import OutboundPart, PermanentTurnError, RetryableTurnError, UserSnapshot

log = logging.getLogger(__name__)

TEXT_FALLBACK_FIRST_INDEX = 100
HOLDING_INDEX = 1000
APOLOGY_INDEX = 1001


def text_parts(text: str, limit: int, first_index: int) -> list[OutboundPart]:
    return [OutboundPart(index=first_index + i, body=chunk) for i, chunk in enumerate(split_message(text, limit))]


def deliver(services, turn_id: int, user: UserSnapshot, parts: list[OutboundPart],
            spoken_text: str | None = None, operator_id: int | None = None) -> None:
    """Send ``parts`` in order, skipping any the provider already accepted for this turn.

    ``operator_id``: the operator who wrote these parts (team turns); None for the bot.
    """
    channel = channel_for(services, user)
    for part in parts:
        row_id = _claim_part(services, turn_id, user, part, channel.name, spoken_text, operator_id)
        if row_id is None:
            continue
        try:
            sent = channel.send_part(user, part, row_id)
        except TwilioSendError as exc:
            _finish_part(services, row_id, status="failed", error=exc.reason, error_code=exc.code)
            services.provider_health.error("twilio", exc.reason)
            if exc.retryable:
                raise RetryableTurnError(exc.reason, kind="send") from exc
            raise PermanentTurnError(exc.reason, kind="send") from exc
        services.provider_health.ok("twilio" if channel.name == "whatsapp" else "simulator")
        _finish_part(services, row_id, status=sent.status, sid=sent.sid)


def _claim_part(services, turn_id, user, part, channel_name, spoken_text, operator_id=None) -> int | None:
    """Write (or reuse) the part's row as ``sending``; None when it was already accepted."""
    with services.db.session() as session:
        row = session.scalar(
            select(Message).where(
                Message.turn_id == turn_id, Message.part_index == part.index, Message.direction == "out"
            )
        )
        if row is not None and (row.provider_sid or row.status in ACCEPTED_STATUSES or row.status == "delivered"):
            return None
        if row is None:
            row = Message(
                user_id=user.id, turn_id=turn_id, direction="out", channel=channel_name,
                kind=part.kind, part_index=part.index,
                body=part.body if part.kind == "text" else spoken_text,
                media_url=part.media_url, media_type=part.media_type, status=SENDING, operator_id=operator_id,
            )
            session.add(row)
        else:
            row.status, row.error, row.error_code = SENDING, None, None
        session.flush()
        return row.id


def _finish_part(services, row_id: int, *, status: str, sid: str | None = None,
                 error: str | None = None, error_code: str | None = None) -> None:
    with services.db.session() as session:
        row = session.get(Message, row_id)
        if row.status == SENDING or error is not None:
            row.status = status  # unless a status callback got here first with newer news
        if sid:
            row.provider_sid = sid
        row.error, row.error_code = error, error_code


def send_text_fallback(services, turn_id: int) -> None:
    """Twilio could not deliver a turn's voice note: send the same answer once as text."""
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
