"""Twilio webhooks: inbound WhatsApp messages and outbound status callbacks.

POST /webhook/whatsapp checks Twilio's signature, turns the form into our own inbound
message, INSERTs it (MessageSid is the idempotency key) and COMMITs, wakes the inbox, and
answers an empty TwiML ``<Response/>`` at once: the pipeline never runs in the request.

POST /webhook/whatsapp/status records what Twilio tells us of our outbound messages.
"""
from __future__ import annotations

import logging
from urllib.parse import quote

from flask import Blueprint, Response, abort, request
from sqlalchemy import select

from app.clients.twilio_client import SIGNATURE_SETTINGS_HEADER
from app.inbound import BadWebhook, parse_inbound
from app.logging import work_context
from app.models import FAILED_DELIVERY_STATUSES, Message
from app.pipeline.send import send_text_fallback
from app.redaction import mask_phone
from app.services import current_services

log = logging.getLogger(__name__)

bp = Blueprint("webhook", __name__)


EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
# Delivery statuses in the order they happen; a late callback never moves a row backwards.
_STATUS_RANK = {"sending": 0, "accepted": 1, "scheduled": 1, "queued": 2, "sent": 3, "delivered": 4, "read": 5}


def public_request_url() -> str:
    """The URL Twilio called, as Twilio saw it: public origin + the raw path and query as sent."""
    base = current_services().settings.public_base_url or request.host_url.rstrip("/")
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if not raw:
        raw = quote(request.environ.get("SCRIPT_NAME", "") + request.path)
        if request.query_string:
            raw += "?" + request.query_string.decode("latin-1")
    if raw.startswith("http://") or raw.startswith("https://"):  # absolute-form request target
        raw = "/" + raw.split("/", 3)[-1]
    return base + raw


def verify_signature() -> None:
    svc = current_services()
    if not svc.settings.twilio_validate_signature:
        return
    signature = request.headers.get("X-Twilio-Signature")
    if not signature:
        abort(Response("missing X-Twilio-Signature", status=403, mimetype="text/plain"))
    url = public_request_url()
    if not svc.twilio.signature_is_valid(url, request.form, signature,
                                         request.headers.get(SIGNATURE_SETTINGS_HEADER)):
        log.warning("rejected webhook with an invalid signature for %s", url.split("?", 1)[0])
        abort(Response("invalid X-Twilio-Signature", status=403, mimetype="text/plain"))
    svc.remember_base_url(url)


def twiml() -> Response:
    return Response(EMPTY_TWIML, status=200, mimetype="text/xml")


@bp.post("/webhook/whatsapp")
def inbound_message():
    verify_signature()
    try:
        # A plain dict: MultiDict.get builds an exception object for every absent field.
        inbound = parse_inbound(request.form.to_dict())
    except BadWebhook as exc:
        return Response(str(exc), status=400, mimetype="text/plain")
    with work_context(inbound.sid):
        user_id, created = current_services().inbound_writer.store(inbound, channel="whatsapp")
        if not created:
            log.info("duplicate MessageSid ignored")
            return twiml()
        log.info("inbound %s from %s stored", inbound.kind, mask_phone(inbound.phone))
        current_services().inbox.notify(user_id)
    return twiml()


@bp.post("/webhook/whatsapp/status")
def status_callback():
    verify_signature()
    sid = (request.form.get("MessageSid") or request.form.get("SmsSid") or "").strip()
    status = (request.form.get("MessageStatus") or request.form.get("SmsStatus") or "").strip().lower()
    if not sid or not status:
        return Response("MessageSid and MessageStatus are required", status=400, mimetype="text/plain")
    error_code = (request.form.get("ErrorCode") or "").strip() or None
    with work_context(sid):
        fallback_turn = record_delivery_status(current_services().db, sid, status, error_code,
                                               request.form.get("ErrorMessage"), _row_id(request.args.get("row")))
        if fallback_turn is not None:
            current_services().inbox.submit(send_text_fallback, current_services(), fallback_turn)
    return twiml()


def _row_id(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


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
