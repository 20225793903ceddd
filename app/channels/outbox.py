"""The outbox: every reply part leaves through here, written down before it is sent.

Sending is idempotent per turn: each part has a fixed index, its row is written
(``sending``) before the provider call and updated with the provider's SID after it, and
a part already accepted by the provider is never sent again when a turn is retried.
Index ranges keep the kinds of part apart: the reply 0-99, the text fallback of a voice
reply 100-199, the holding message 1000, the apology 1001, the trust notices 1002-1009
(opt-out and opt-in confirmations, limit notice, erasure answer: app/pipeline/gate.py),
and 3000+ the template re-send of a part WhatsApp failed outside the 24-hour window.

Right before each send the policy (app/channels/policy.py) decides: send, send as the
fallback template, or record the row as not sent / held with the reason.
"""
from __future__ import annotations

import logging

from sqlalchemy import select

from app.channels import channel_for
from app.channels.policy import check_before_send, outside_window, template_part
from app.channels.twilio.outbound import split_message
from app.channels.twilio.status import WINDOW_CLOSED_CODE
from app.clients.twilio_client import TwilioSendError
from app.models import ACCEPTED_STATUSES, HELD, SENDING, Message, Turn, User
from app.turn import OutboundPart, PermanentTurnError, RetryableTurnError, UserSnapshot

log = logging.getLogger(__name__)

TEXT_FALLBACK_FIRST_INDEX = 100
HOLDING_INDEX = 1000
APOLOGY_INDEX = 1001
TEMPLATE_RESEND_FIRST_INDEX = 3000
TWILIO_WINDOW_REASON = "Twilio refused it: outside WhatsApp's 24-hour window (63016)"


def text_parts(text: str, limit: int, first_index: int) -> list[OutboundPart]:
    return [OutboundPart(index=first_index + i, body=chunk) for i, chunk in enumerate(split_message(text, limit))]


def deliver(services, turn_id: int, user: UserSnapshot, parts: list[OutboundPart],
            spoken_text: str | None = None) -> None:
    """Send ``parts`` in order, skipping any the provider already accepted for this turn."""
    channel = channel_for(services, user)
    for part in parts:
        row_id = _claim_part(services, turn_id, user, part, channel.name, spoken_text)
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
                    verdict = outside_window(services, part, TWILIO_WINDOW_REASON)  # template, or hold
                    continue
                _finish_part(services, row_id, status="failed", error=exc.reason, error_code=exc.code)
                services.provider_health.error("twilio", exc.reason)
                if exc.retryable:
                    raise RetryableTurnError(exc.reason, kind="send") from exc
                raise PermanentTurnError(exc.reason, kind="send") from exc
        if sent is None:
            log.info("part %s of turn %s not sent: %s", part.index, turn_id, verdict.reason)
            _finish_part(services, row_id, status=verdict.status, error=verdict.reason)
            continue
        services.provider_health.ok("twilio" if channel.name == "whatsapp" else "simulator")
        _finish_part(services, row_id, status=sent.status, sid=sent.sid, kind=verdict.part.kind)


def _claim_part(services, turn_id, user, part, channel_name, spoken_text) -> int | None:
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
                body=part.body if part.kind in ("text", "template") else spoken_text,
                media_url=part.media_url, media_type=part.media_type, status=SENDING,
            )
            session.add(row)
        else:
            row.status, row.error, row.error_code = SENDING, None, None
        session.flush()
        return row.id


def _finish_part(services, row_id: int, *, status: str, sid: str | None = None,
                 error: str | None = None, error_code: str | None = None, kind: str | None = None) -> None:
    with services.db.session() as session:
        row = session.get(Message, row_id)
        if row.status == SENDING or error is not None:
            row.status = status  # unless a status callback got here first with newer news
        if sid:
            row.provider_sid = sid
        if kind == "template":
            row.kind = kind  # it went as the fallback template: operators see that
        row.error, row.error_code = error, error_code


def send_text_fallback(services, turn_id: int) -> None:
    """Twilio could not deliver a turn's voice note: send the same answer once as text."""
    with services.db.session() as session:
        turn = session.get(Turn, turn_id)
        user = session.get(User, turn.user_id)
        text = turn.reply_text
        snapshot = UserSnapshot.of(user)
    if not text:
        return
    limit = channel_for(services, snapshot).max_body_chars
    try:
        deliver(services, turn_id, snapshot, text_parts(text, limit, first_index=TEXT_FALLBACK_FIRST_INDEX))
    except (RetryableTurnError, PermanentTurnError) as exc:
        log.error("text fallback for turn %s failed: %s", turn_id, exc.reason)


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
        new_row = _claim_part(services, turn_id, snapshot, part, channel.name, None)
        if new_row is not None:
            _finish_part(services, new_row, status=HELD, error_code=WINDOW_CLOSED_CODE,
                         error=f"{TWILIO_WINDOW_REASON}; held: no TWILIO_FALLBACK_CONTENT_SID configured")
        return
    try:
        deliver(services, turn_id, snapshot, [template_part(part, content_sid, body)])
    except (RetryableTurnError, PermanentTurnError) as exc:
        log.error("template re-send for turn %s failed: %s", turn_id, exc.reason)
