"""Twilio's delivery status callbacks: the outbound row's status only moves forward.

``record_delivery_status`` finds our outbound row by Twilio's SID, or - when the callback
beats us to recording that SID - by the row id our StatusCallback URL carries, and returns
the turn whose voice note failed, so that its answer can follow as text, or the row WhatsApp
failed outside the 24-hour window (63016), so that it goes as the template or is held.
``parse_status_callback`` cleans and bounds the form first (a 400 for an unusable one).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from sqlalchemy import select

from app.channels.twilio.inbound import BadWebhook, clean
from app.models import FAILED_DELIVERY_STATUSES, STATUS_CHARS, TERMINAL_STATUSES, Message, status_rank

log = logging.getLogger(__name__)

# Longest SID Twilio issues is 34 characters; anything longer cannot be ours.
MAX_SID_CHARS = 64
# WhatsApp error 63016: a free-form message outside the 24-hour customer-service window.
WINDOW_CLOSED_CODE = "63016"
_ROW_ID = re.compile(r"[0-9]{1,10}")
# Any status shape Twilio may add (stored bounded to the column); controls, spaces and such are not.
_STATUS = re.compile(r"[a-z_]{1,64}")
MAX_ROW_ID = 2**31 - 1  # an INTEGER column on PostgreSQL


@dataclass
class StatusUpdate:
    sid: str
    status: str
    error_code: str | None
    error_message: str | None
    row_id: int | None


@dataclass
class DeliveryOutcome:
    """What the callback asks of us next: the text of a failed voice note, or a window failure."""

    text_fallback_turn: int | None = None
    window_closed_row: int | None = None


def parse_status_callback(form, row_arg: str | None) -> StatusUpdate:
    """Twilio's status callback form, cleaned and bounded; BadWebhook (400) when unusable."""
    sid = (clean(form.get("MessageSid"), MAX_SID_CHARS) or clean(form.get("SmsSid"), MAX_SID_CHARS)).strip()
    status = (clean(form.get("MessageStatus"), 64) or clean(form.get("SmsStatus"), 64)).strip().lower()
    if not sid or not status:
        raise BadWebhook("MessageSid and MessageStatus are required")
    if not _STATUS.fullmatch(status):
        raise BadWebhook("MessageStatus is not a status")
    error_code = clean(form.get("ErrorCode"), 32).strip() or None
    error_message = clean(form.get("ErrorMessage"), 500).strip() or None
    # ASCII digits only: "²".isdigit() is true and int("²") raises.
    row_id = int(row_arg) if row_arg and _ROW_ID.fullmatch(row_arg) else None
    if row_id is not None and row_id > MAX_ROW_ID:
        row_id = None
    return StatusUpdate(sid, status, error_code, error_message, row_id)


def record_delivery_status(db, sid: str, status: str, error_code: str | None,
                           error_message: str | None, row_id: int | None = None) -> DeliveryOutcome:
    """Update the outbound row; say whether a failed voice note needs its text, or whether a
    message failed because WhatsApp's 24-hour window was closed (63016).

    The row is found by Twilio's SID, or - when the callback beats us to recording that SID -
    by the row id our StatusCallback URL carries. Any status string is stored as it came
    (bounded to the column); one we do not know never moves a row backwards (models.status_rank).
    """
    status = status[:STATUS_CHARS]
    error_code = error_code[:32] if error_code else None
    if len(sid) > MAX_SID_CHARS:
        return DeliveryOutcome()
    with db.session() as session:
        row = session.scalar(select(Message).where(Message.provider_sid == sid, Message.direction == "out"))
        if row is None and row_id is not None:
            row = session.scalar(select(Message).where(
                Message.id == row_id, Message.direction == "out", Message.provider_sid.is_(None)))
            if row is not None:
                row.provider_sid = sid
        if row is None:
            log.info("status %s for an unknown MessageSid", status)
            return DeliveryOutcome()
        if row.status in TERMINAL_STATUSES and row.status != "refused":
            return DeliveryOutcome()  # terminal
        if status not in FAILED_DELIVERY_STATUSES and status_rank(status) < status_rank(row.status):
            return DeliveryOutcome()  # a late "sent" after "delivered"
        row.status = status
        if error_code:
            row.error_code = error_code
            row.error = (error_message or f"Twilio error {error_code}")[:500]
        if status in FAILED_DELIVERY_STATUSES and error_code == WINDOW_CLOSED_CODE:
            log.warning("reply failed outside the 24-hour window; it goes through the template or is held")
            return DeliveryOutcome(window_closed_row=row.id)
        if status in FAILED_DELIVERY_STATUSES and row.kind == "audio" and row.turn_id is not None:
            log.warning("voice reply failed (%s); the answer follows as text", error_code)
            return DeliveryOutcome(text_fallback_turn=row.turn_id)
    return DeliveryOutcome()
