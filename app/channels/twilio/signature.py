"""Twilio's webhook signature: the URL Twilio called, rebuilt as Twilio saw it, and the check.

Twilio signs the full public URL it called (with its query string as sent) plus the form.
Behind a proxy the app sees another URL, so it is rebuilt from PUBLIC_BASE_URL, or the
proxy's ``X-Forwarded-*`` headers (applied by ProxyFix in the factory), and the raw path and
query of the request.
"""
from __future__ import annotations

from urllib.parse import quote

from app.clients.twilio_client import SIGNATURE_SETTINGS_HEADER


def public_request_url(request, public_base_url: str | None) -> str:
    """The URL Twilio called, as Twilio saw it: public origin + the raw path and query as sent."""
    base = public_base_url or request.host_url.rstrip("/")
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if not raw:
        raw = quote(request.environ.get("SCRIPT_NAME", "") + request.path)
        if request.query_string:
            raw += "?" + request.query_string.decode("latin-1")
    if raw.startswith("http://") or raw.startswith("https://"):  # absolute-form request target
        raw = "/" + raw.split("/", 3)[-1]
    # A proxy that strips a path prefix announces it (X-Forwarded-Prefix -> SCRIPT_NAME via
    # ProxyFix); Twilio signed the URL with the prefix.
    prefix = request.environ.get("SCRIPT_NAME", "").rstrip("/")
    if prefix and not public_base_url and not raw.startswith(prefix + "/"):
        raw = prefix + raw
    return base + raw


def signature_failure(request, settings, twilio) -> tuple[str | None, str]:
    """``(reason, url)``: reason is None when the request is Twilio's (or checking is off)."""
    url = public_request_url(request, settings.public_base_url)
    if not settings.twilio_validate_signature:
        return None, url
    signature = request.headers.get("X-Twilio-Signature")
    if not signature:
        return "missing X-Twilio-Signature", url
    if not twilio.signature_is_valid(url, request.form, signature, request.headers.get(SIGNATURE_SETTINGS_HEADER)):
        return "invalid X-Twilio-Signature", url
    return None, url
