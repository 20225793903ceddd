"""Twilio's delivery status callbacks: the outbound row's status only moves forward.

``record_delivery_status`` finds our outbound row by Twilio's SID, or - when the callback
beats us to recording that SID - by the row id our StatusCallback URL carries, and returns
the turn whose voice note failed, so that its answer can follow as text.
"""
from __future__ import annotations

import logging

from sqlalchemy import select

from app.models import FAILED_DELIVERY_STATUSES, Message

log = logging.getLogger(__name__)

# Delivery statuses in the order they happen; a late callback never moves a row backwards.
_STATUS_RANK = {"sending": 0, "accepted": 1, "scheduled": 1, "queued": 2, "sent": 3, "delivered": 4, "read": 5}


def record_delivery_status(db, sid: str, status: str, error_code: str | None,
                           error_message: str | None, row_id: int | None = None) -> int | None:
    """Update the outbound row; return the turn id when its voice note failed and text must follow.

    The row is found by Twilio's SID, or - when the callback beats us to recording that SID -
    by the row id our StatusCallback URL carries.
    """
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
        if row.status in FAILED_DELIVERY_STATUSES:
            return None  # terminal
        if status not in FAILED_DELIVERY_STATUSES and _STATUS_RANK.get(status, 0) < _STATUS_RANK.get(row.status, 0):
            return None  # a late "sent" after "delivered"
        row.status = status
        if error_code:
            row.error_code = error_code
            row.error = (error_message or f"Twilio error {error_code}")[:500]
        if status in FAILED_DELIVERY_STATUSES and row.kind == "audio" and row.turn_id is not None:
            log.warning("voice reply failed (%s); the answer follows as text", error_code)
            return row.turn_id
    return None
