"""Twilio's webhooks: inbound WhatsApp messages and outbound status callbacks (routes only).

POST /webhook/whatsapp checks Twilio's signature, turns the form into our own inbound
message, INSERTs it (MessageSid is the idempotency key) and COMMITs, wakes the inbox, and
answers an empty TwiML ``<Response/>`` at once: the pipeline never runs in the request.

POST /webhook/whatsapp/status records what Twilio tells us of our outbound messages.
The Twilio specifics live in app/channels/twilio/ (inbound, signature, status).
"""
from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, request

from app.channels.outbox import send_text_fallback
from app.channels.twilio.inbound import BadWebhook, parse_inbound, webhook_fields
from app.channels.twilio.signature import signature_failure
from app.channels.twilio.status import record_delivery_status
from app.logging import work_context
from app.ops import metrics
from app.redaction import mask_phone
from app.services import current_services

log = logging.getLogger(__name__)

bp = Blueprint("webhook", __name__)


EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def verify_signature(inbound: bool = False) -> None:
    svc = current_services()
    reason, url, app_url = signature_failure(request, svc.settings, svc.twilio)
    if reason is not None:
        if inbound:
            metrics.webhook("bad_signature")
        log.warning("rejected webhook (%s) for %s", reason, url.split("?", 1)[0])
        abort(Response(reason, status=403, mimetype="text/plain"))
    if svc.settings.twilio_validate_signature:
        svc.remember_base_url(app_url)  # only a URL Twilio signed tells us our public address


def twiml() -> Response:
    return Response(EMPTY_TWIML, status=200, mimetype="text/xml")


@bp.post("/webhook/whatsapp")
def inbound_message():
    verify_signature(inbound=True)
    try:
        inbound = parse_inbound(webhook_fields(request))
    except BadWebhook as exc:
        metrics.webhook("bad_request")
        return Response(str(exc), status=400, mimetype="text/plain")
    with work_context(inbound.sid):
        user_id, created = current_services().inbound_writer.store(inbound, channel="whatsapp")
        if not created:
            metrics.webhook("duplicate")
            log.info("duplicate MessageSid ignored")
            return twiml()
        metrics.webhook("stored")
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
