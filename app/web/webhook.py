"""Twilio's webhooks: inbound WhatsApp messages and outbound status callbacks (routes only).

POST /webhook/whatsapp checks Twilio's signature, turns the form into our own inbound
message, INSERTs it (MessageSid is the idempotency key) and COMMITs, wakes the inbox, and
answers an empty TwiML ``<Response/>`` at once: the pipeline never runs in the request.

POST /webhook/whatsapp/realtime is the same ingest (signature, durable idempotent insert, order)
for a number whose voice notes should be answered on the realtime voice path: the message is
stored with ``extra["path"] = "realtime"`` and the pipeline (app/pipeline/__init__.py) sends a
turn made only of such voice notes to app/pipeline/realtime.py; anything else goes through the
main stages. POST /webhook/whatsapp/v2 is a deprecated alias of /webhook/whatsapp, kept so a
number still pointed at it keeps working: same handling, a ``Deprecation`` header (RFC 9745)
with a ``Link`` to the successor, and one warning in the log per process start.

POST /webhook/whatsapp/status records what Twilio tells us of our outbound messages.
The Twilio specifics live in app/channels/twilio/ (inbound, signature, status).
"""
from __future__ import annotations

import calendar
import datetime as dt
import logging
import threading

from flask import Blueprint, Response, abort, current_app, request

from app.channels.outbox import handle_window_failure, send_text_fallback
from app.channels.twilio.inbound import BadWebhook, parse_inbound, webhook_fields
from app.channels.twilio.signature import signature_failure
from app.channels.twilio.status import parse_status_callback, record_delivery_status
from app.logging import work_context
from app.ops import metrics
from app.redaction import mask_phone
from app.services import current_services
from app.turn import REALTIME_PATH

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


V2_PATH = "/webhook/whatsapp/v2"
# When /webhook/whatsapp/v2 was deprecated (RFC 9745: "@" and a Unix time).
V2_DEPRECATED_ON = dt.date(2026, 12, 1)
_V2_LOGGED = "endrigo.v2_deprecation_logged"
_v2_lock = threading.Lock()


@bp.post("/webhook/whatsapp")
def inbound_message():
    return ingest()


@bp.post("/webhook/whatsapp/realtime")
def inbound_realtime_message():
    return ingest(path=REALTIME_PATH)


@bp.post(V2_PATH)
def inbound_message_v2():
    response = ingest()  # a bad signature ends here (403), before the warning
    _log_v2_once()
    response.headers["Deprecation"] = f"@{calendar.timegm(V2_DEPRECATED_ON.timetuple())}"
    response.headers["Link"] = '</webhook/whatsapp>; rel="successor-version"'
    return response


def ingest(path: str | None = None) -> Response:
    """Check, parse, store durably (MessageSid: idempotent), wake the inbox, answer ``<Response/>``."""
    verify_signature(inbound=True)
    try:
        inbound = parse_inbound(webhook_fields(request))
    except BadWebhook as exc:
        metrics.webhook("bad_request")
        return Response(str(exc), status=400, mimetype="text/plain")
    if path is not None:
        inbound.extra["path"] = path
    with work_context(inbound.sid):
        try:
            user_id, created = current_services().inbound_writer.store(inbound, channel="whatsapp")
        except Exception as exc:  # noqa: BLE001 - the database (driver errors, timeouts) or a bug
            # Not stored: say so with a 503, so that Twilio delivers the message again.
            log.error("inbound message not stored (%s); Twilio will retry", type(exc).__name__)
            return Response("temporarily unavailable", status=503, mimetype="text/plain",
                            headers={"Retry-After": "5"})
        if not created:
            metrics.webhook("duplicate")
            log.info("duplicate MessageSid ignored")
            return twiml()
        metrics.webhook("stored")
        log.info("inbound %s from %s stored%s", inbound.kind, mask_phone(inbound.phone),
                 f" ({path} path)" if path else "")
        current_services().inbox.notify(user_id)
    return twiml()


def _log_v2_once() -> None:
    """One warning per process start (per app) that Twilio still calls the deprecated URL."""
    extensions = current_app.extensions
    with _v2_lock:
        if extensions.get(_V2_LOGGED):
            return
        extensions[_V2_LOGGED] = True
    log.warning("Twilio is calling the deprecated webhook %s; point the number at /webhook/whatsapp "
                "(see /upgrade-webhook). Messages are still handled.", V2_PATH)


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
