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


# Bounds of what we store (the columns' sizes, and what Twilio itself sends at most):
# oversize values are truncated, never passed to the database to fail there.
MAX_PROFILE_NAME = 128
MAX_WA_ID = 32
MAX_MEDIA_TYPE = 128
MAX_MEDIA_URL = 2048
MAX_BODY = 4096  # WhatsApp bodies are at most 4,096 characters
MAX_EXTRA_VALUE = 1024
MAX_FIELD = 8192  # any other field we read
MAX_NUM_MEDIA = 10  # Twilio sends at most 10 media per message
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class BadWebhook(ValueError):
    """The form is not a usable Twilio inbound message; the text is the 400 reason."""


def clean(value, limit: int = MAX_FIELD) -> str:
    """A form value made safe to store: no NUL or other control characters (PostgreSQL refuses
    NUL in text), at most ``limit`` characters. Tabs and line breaks stay."""
    if not value:
        return ""
    text = str(value)
    if _CONTROL.search(text):
        text = _CONTROL.sub("", text)
    return text[:limit]


class CleanForm:
    """Read-only view of a webhook form whose values are all cleaned (first value of a repeated key)."""

    def __init__(self, form):
        self._form = form

    def get(self, name: str, limit: int = MAX_FIELD) -> str:
        return clean(self._form.get(name), limit)


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
    form = CleanForm(form)
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
    raw_num_media = form.get("NumMedia", 64).strip()
    if raw_num_media and not re.fullmatch(r"[0-9]{1,64}", raw_num_media):
        raise BadWebhook("NumMedia is not a number")
    num_media = min(int(raw_num_media or 0), MAX_NUM_MEDIA)  # 10**20 must not reach an INTEGER column
    media_url = form.get("MediaUrl0", MAX_MEDIA_URL).strip() or None
    # Lower-casing can lengthen a string ("İ" -> "i̇"): bound it after.
    media_type = form.get("MediaContentType0", MAX_MEDIA_TYPE).strip().lower()[:MAX_MEDIA_TYPE] or None
    extra = {name: form.get(name, MAX_EXTRA_VALUE) for name in _EXTRA_FIELDS if form.get(name, MAX_EXTRA_VALUE)}
    more_media = [i for i in range(1, num_media) if form.get(f"MediaUrl{i}", 1)]
    if more_media:
        extra["more_media"] = len(more_media)
    body = form.get("Body", MAX_BODY)
    if not body and form.get("ButtonText"):
        body = form.get("ButtonText", MAX_BODY)
    wa_id = form.get("WaId", MAX_WA_ID).strip()
    return Inbound(
        sid=sid, phone=phone, wa_id=wa_id or None, profile_name=form.get("ProfileName", MAX_PROFILE_NAME) or None,
        body=body, kind=_kind(form, media_type if media_url else None), media_url=media_url,
        media_type=media_type, num_media=num_media, extra=extra,
    )


def _kind(form, media_type: str | None) -> str:
    message_type = form.get("MessageType", 32).lower()
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
