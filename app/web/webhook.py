"""Twilio webhooks: inbound WhatsApp messages and outbound status callbacks.

POST /webhook/whatsapp checks Twilio's signature, turns the form into our own inbound
message, INSERTs it (MessageSid is the idempotency key) and COMMITs, wakes the inbox, and
answers an empty TwiML ``<Response/>`` at once: the pipeline never runs in the request.

POST /webhook/whatsapp/status records what Twilio tells us of our outbound messages.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from urllib.parse import quote

from flask import Blueprint, Response, abort, current_app, request
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.db import utcnow
from app.logging import work_context
from app.models import FAILED_DELIVERY_STATUSES, RECEIVED, Message, User
from app.pipeline.send import send_text_fallback
from app.redaction import mask_phone

log = logging.getLogger(__name__)

bp = Blueprint("webhook", __name__)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
_SID = re.compile(r"^(SM|MM|SS)[0-9a-fA-F]{32}$")
_E164 = re.compile(r"^\+[1-9]\d{7,14}$")
# Provider fields worth keeping with the message (location, buttons, replies, ads).
_EXTRA_FIELDS = (
    "MessageType", "Latitude", "Longitude", "Address", "Label", "ButtonText", "ButtonPayload",
    "OriginalRepliedMessageSid", "Forwarded", "FrequentlyForwarded", "ReferralHeadline", "ReferralBody",
    "ReferralSourceUrl", "ReferralSourceType", "ReferralCtwaClid", "NumSegments",
)
# Delivery statuses in the order they happen; a late callback never moves a row backwards.
_STATUS_RANK = {"sending": 0, "accepted": 1, "scheduled": 1, "queued": 2, "sent": 3, "delivered": 4, "read": 5}


class BadWebhook(ValueError):
    """The form is not a usable Twilio inbound message; the text is the 400 reason."""


@dataclass
class Inbound:
    """Our own message object, made from Twilio's form (the provider's names stop here)."""

    sid: str
    phone: str  # E.164
    wa_id: str | None
    profile_name: str | None
    body: str
    kind: str
    media_url: str | None
    media_type: str | None
    num_media: int
    extra: dict = field(default_factory=dict)


def services():
    return current_app.extensions["endrigo"]


def parse_inbound(form) -> Inbound:
    sid = (form.get("MessageSid") or form.get("SmsMessageSid") or "").strip()
    if not sid:
        raise BadWebhook("MessageSid is missing")
    if not _SID.match(sid):
        raise BadWebhook("MessageSid is malformed")
    sender = (form.get("From") or "").strip()
    if not sender:
        raise BadWebhook("From is missing")
    phone = sender[len("whatsapp:"):] if sender.lower().startswith("whatsapp:") else sender
    if not _E164.match(phone):
        raise BadWebhook("From is not a WhatsApp number")
    try:
        num_media = max(0, int(form.get("NumMedia") or 0))
    except ValueError:
        raise BadWebhook("NumMedia is not a number") from None
    media_url = (form.get("MediaUrl0") or "").strip() or None
    media_type = (form.get("MediaContentType0") or "").strip().lower() or None
    extra = {name: form.get(name) for name in _EXTRA_FIELDS if form.get(name)}
    more_media = [form.get(f"MediaUrl{i}") for i in range(1, min(num_media, 10)) if form.get(f"MediaUrl{i}")]
    if more_media:
        extra["more_media"] = len(more_media)
    body = form.get("Body") or ""
    if not body and form.get("ButtonText"):
        body = form.get("ButtonText")
    return Inbound(
        sid=sid, phone=phone, wa_id=(form.get("WaId") or None), profile_name=(form.get("ProfileName") or None),
        body=body, kind=_kind(form, media_type if media_url else None), media_url=media_url,
        media_type=media_type, num_media=num_media, extra=extra,
    )


def _kind(form, media_type: str | None) -> str:
    message_type = (form.get("MessageType") or "").lower()
    if media_type:
        major = media_type.split("/", 1)[0]
        if major == "audio":
            return "audio"
        if major in ("image", "video"):
            return "sticker" if message_type == "sticker" else major
        return "document"
    if message_type in ("location", "contacts", "sticker", "image", "video", "document", "audio"):
        return message_type
    if form.get("Latitude") and form.get("Longitude"):
        return "location"
    return "text"


def public_request_url() -> str:
    """The URL Twilio called, as Twilio saw it: public origin + the raw path and query as sent."""
    base = services().settings.public_base_url or request.host_url.rstrip("/")
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if not raw:
        raw = quote(request.environ.get("SCRIPT_NAME", "") + request.path)
        if request.query_string:
            raw += "?" + request.query_string.decode("latin-1")
    if raw.startswith("http://") or raw.startswith("https://"):  # absolute-form request target
        raw = "/" + raw.split("/", 3)[-1]
    return base + raw


def verify_signature() -> None:
    svc = services()
    if not svc.settings.twilio_validate_signature:
        return
    signature = request.headers.get("X-Twilio-Signature")
    if not signature:
        abort(Response("missing X-Twilio-Signature", status=403, mimetype="text/plain"))
    url = public_request_url()
    if not svc.twilio.signature_is_valid(url, request.form, signature,
                                         request.headers.get("X-Twilio-Webhooks-Signature-Settings")):
        log.warning("rejected webhook with an invalid signature for %s", url.split("?", 1)[0])
        abort(Response("invalid X-Twilio-Signature", status=403, mimetype="text/plain"))
    svc.remember_base_url(url)


def twiml() -> Response:
    return Response(EMPTY_TWIML, status=200, mimetype="text/xml")


@bp.post("/webhook/whatsapp")
def inbound_message():
    verify_signature()
    try:
        inbound = parse_inbound(request.form)
    except BadWebhook as exc:
        return Response(str(exc), status=400, mimetype="text/plain")
    with work_context(inbound.sid):
        user_id, created = store_inbound(services().db, inbound, channel="whatsapp")
        if not created:
            log.info("duplicate MessageSid ignored")
            return twiml()
        log.info("inbound %s from %s stored", inbound.kind, mask_phone(inbound.phone))
        services().inbox.notify(user_id)
    return twiml()


def store_inbound(db, inbound: Inbound, channel: str) -> tuple[int, bool]:
    """Upsert the user and INSERT the message in one transaction; (user_id, created?)."""
    now = utcnow()
    insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    with db.session() as session:
        user_stmt = insert(User).values(
            phone=inbound.phone, channel=channel, wa_id=inbound.wa_id, profile_name=inbound.profile_name,
            first_seen_at=now, last_seen_at=now, message_count=0, reply_mode="auto",
        )
        user_stmt = user_stmt.on_conflict_do_update(
            index_elements=[User.phone],
            set_={"last_seen_at": now, "profile_name": user_stmt.excluded.profile_name,
                  "wa_id": user_stmt.excluded.wa_id},
        ).returning(User.id)
        user_id = session.execute(user_stmt).scalar_one()
        message_stmt = insert(Message).values(
            user_id=user_id, direction="in", channel=channel, kind=inbound.kind, provider_sid=inbound.sid,
            body=inbound.body, media_url=inbound.media_url, media_type=inbound.media_type,
            num_media=inbound.num_media, extra=inbound.extra or None, status=RECEIVED,
            created_at=now, updated_at=now,
        ).on_conflict_do_nothing(index_elements=[Message.provider_sid]).returning(Message.id)
        message_id = session.execute(message_stmt).scalar_one_or_none()
        if message_id is None:
            session.rollback()
            return user_id, False
        session.execute(update(User).where(User.id == user_id).values(message_count=User.message_count + 1))
    return user_id, True


@bp.post("/webhook/whatsapp/status")
def status_callback():
    verify_signature()
    sid = (request.form.get("MessageSid") or request.form.get("SmsSid") or "").strip()
    status = (request.form.get("MessageStatus") or request.form.get("SmsStatus") or "").strip().lower()
    if not sid or not status:
        return Response("MessageSid and MessageStatus are required", status=400, mimetype="text/plain")
    error_code = (request.form.get("ErrorCode") or "").strip() or None
    with work_context(sid):
        fallback_turn = record_delivery_status(services().db, sid, status, error_code,
                                               request.form.get("ErrorMessage"))
        if fallback_turn is not None:
            services().inbox.submit(send_text_fallback, services(), fallback_turn)
    return twiml()


def record_delivery_status(db, sid: str, status: str, error_code: str | None,
                           error_message: str | None) -> int | None:
    """Update the outbound row; return the turn id when its voice note failed and text must follow."""
    with db.session() as session:
        row = session.scalar(select(Message).where(Message.provider_sid == sid, Message.direction == "out"))
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
