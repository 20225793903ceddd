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

from app.channels.outbox import handle_window_failure, send_text_fallback
from app.channels.twilio.inbound import BadWebhook, parse_inbound, webhook_fields
from app.channels.twilio.signature import signature_failure
from app.channels.twilio.status import parse_status_callback, record_delivery_status
from app.logging import work_context
from app.redaction import mask_phone
from app.services import current_services

log = logging.getLogger(__name__)

bp = Blueprint("webhook", __name__)


EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def verify_signature() -> None:
    svc = current_services()
    reason, url, app_url = signature_failure(request, svc.settings, svc.twilio)
    if reason is not None:
        log.warning("rejected webhook (%s) for %s", reason, url.split("?", 1)[0])
        abort(Response(reason, status=403, mimetype="text/plain"))
    if svc.settings.twilio_validate_signature:
        svc.remember_base_url(app_url)  # only a URL Twilio signed tells us our public address


def twiml() -> Response:
    return Response(EMPTY_TWIML, status=200, mimetype="text/xml")


@bp.post("/webhook/whatsapp")
def inbound_message():
    verify_signature()
    try:
        inbound = parse_inbound(webhook_fields(request))
    except BadWebhook as exc:
        return Response(str(exc), status=400, mimetype="text/plain")
    with work_context(inbound.sid):
        try:
            user_id, created = current_services().inbound_writer.store(inbound, channel="whatsapp")
        except Exception as exc:  # noqa: BLE001 - the database (driver errors, timeouts) or a bug
            # Not stored: say so with a 503, so that Twilio delivers the message again.
            log.error("inbound message not stored (%s); Twilio will retry", type(exc).__name__)
            return Response("temporarily unavailable", status=503, mimetype="text/plain",
                            headers={"Retry-After": "5"})
        if not created:
            log.info("duplicate MessageSid ignored")
            return twiml()
        log.info("inbound %s from %s stored", inbound.kind, mask_phone(inbound.phone))
        current_services().inbox.notify(user_id)
    return twiml()


@bp.post("/webhook/whatsapp/status")
def status_callback():
    verify_signature()
    try:
        update = parse_status_callback(webhook_fields(request), request.args.get("row"))
    except BadWebhook as exc:
        return Response(str(exc), status=400, mimetype="text/plain")
    services = current_services()
    with work_context(update.sid):
        outcome = record_delivery_status(services.db, update.sid, update.status, update.error_code,
                                         update.error_message, update.row_id)
        if outcome.text_fallback_turn is not None:
            services.inbox.submit(send_text_fallback, services, outcome.text_fallback_turn)
        if outcome.window_closed_row is not None:
            services.inbox.submit(handle_window_failure, services, outcome.window_closed_row)
    return twiml()
