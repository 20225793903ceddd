"""Twilio's delivery status callbacks: the outbound row's status only moves forward.

``record_delivery_status`` finds our outbound row by Twilio's SID, or - when the callback
beats us to recording that SID - by the row id our StatusCallback URL carries, and returns
the turn whose voice note failed, so that its answer can follow as text.
"""
from __future__ import annotations

import logging

from sqlalchemy import select

from app.models import FAILED_DELIVERY_STATUSES, STATUS_CHARS, TERMINAL_STATUSES, Message, status_rank

log = logging.getLogger(__name__)

# Longest SID Twilio issues is 34 characters; anything longer cannot be ours.
MAX_SID_CHARS = 64


def record_delivery_status(db, sid: str, status: str, error_code: str | None,
                           error_message: str | None, row_id: int | None = None) -> int | None:
    """Update the outbound row; return the turn id when its voice note failed and text must follow.

    The row is found by Twilio's SID, or - when the callback beats us to recording that SID -
    by the row id our StatusCallback URL carries. Any status string is stored as it came
    (bounded to the column); one we do not know never moves a row backwards (models.status_rank).
    """
    status = status[:STATUS_CHARS]
    error_code = error_code[:32] if error_code else None
    if len(sid) > MAX_SID_CHARS:
        return None
    with db.session() as session:
        row = session.scalar(select(Message).where(Message.provider_sid == sid, Message.direction == "out"))
        if row is None and row_id is not None:
            row = session.scalar(select(Message).where(
                Message.id == row_id, Message.direction == "out", Message.provider_sid.is_(None)))
            if row is not None:
                row.provider_sid = sid
        if row is None:
            log.info("status %s for an unknown MessageSid", status)
            return None
        if row.status in TERMINAL_STATUSES and row.status != "refused":
            return None  # terminal
        if status not in FAILED_DELIVERY_STATUSES and status_rank(status) < status_rank(row.status):
            return None  # a late "sent" after "delivered"
        row.status = status
        if error_code:
            row.error_code = error_code
            row.error = (error_message or f"Twilio error {error_code}")[:500]
        if status in FAILED_DELIVERY_STATUSES and row.kind == "audio" and row.turn_id is not None:
            log.warning("voice reply failed (%s); the answer follows as text", error_code)
            return row.turn_id
    return None
