"""Twilio's inbound webhook form becomes our own ``Inbound`` message (the provider's names stop here).

As in Rasa's channels, a channel's input and output live together: this module reads the
form, ``outbound`` sends replies, ``signature`` checks the webhooks, ``status`` follows
delivery callbacks, ``media`` downloads the media Twilio hosts.
"""
from __future__ import annotations

import json
import re

from app.turn import Inbound

_SID = re.compile(r"^(SM|MM|SS)[0-9a-fA-F]{32}$")
_E164 = re.compile(r"^\+[1-9]\d{7,14}$")
# Provider fields worth keeping with the message (location, buttons, replies, ads).
_EXTRA_FIELDS = (
    "MessageType", "Latitude", "Longitude", "Address", "Label", "ButtonText", "ButtonPayload",
    "OriginalRepliedMessageSid", "Forwarded", "FrequentlyForwarded", "ReferralHeadline", "ReferralBody",
    "ReferralSourceUrl", "ReferralSourceType", "ReferralCtwaClid", "NumSegments",
)


class BadWebhook(ValueError):
    """The form is not a usable Twilio inbound message; the text is the 400 reason."""


def webhook_fields(request) -> dict[str, str]:
    """A webhook's fields: the form, or the object of a JSON body (Twilio signs JSON bodies
    through ``bodySHA256``, see app.channels.twilio.signature), values as strings."""
    if request.mimetype != "application/json":
        # A plain dict: MultiDict.get builds an exception object for every absent field.
        return request.form.to_dict()
    try:
        body = json.loads(request.get_data(cache=True))
    except ValueError as exc:  # also bytes that are not UTF-8
        raise BadWebhook("the JSON body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise BadWebhook("the JSON body is not an object")
    fields: dict[str, str] = {}
    for name, value in body.items():
        if value is None:
            continue
        if isinstance(value, (dict, list)):
            raise BadWebhook(f"the JSON field {name[:40]} is not a plain value")
        fields[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return fields


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
