"""App-wide browser security, set up by the factory for every blueprint.

- CSRF (flask_wtf) on every POST/PUT/PATCH/DELETE of every blueprint except those in
  ``TWILIO_ONLY_BLUEPRINTS`` (Twilio signs its webhooks instead and cannot send a token) and
  ``BEARER_BLUEPRINTS`` (the API: a bearer token in a header, which no browser sends by itself);
- the session cookie: HttpOnly, SameSite=Lax, Secure when PUBLIC_BASE_URL is https, 12 hours;
- security headers on every response but Twilio's (CSP without inline scripts or styles, no framing).
"""
from __future__ import annotations

import datetime as dt

from flask import current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect

from app.web import auth

# Blueprints only Twilio calls (signature-checked), never a browser: no CSRF token (Twilio cannot
# send one) and no browser security headers (nobody renders these answers; it is the hot path).
TWILIO_ONLY_BLUEPRINTS = frozenset({"webhook"})
# Authenticated by Authorization: Bearer only (never by the session cookie): CSRF cannot apply.
BEARER_BLUEPRINTS = frozenset({"api"})
# Forms that carry a file meant for WhatsApp (checked before CSRF reads the body).
MEDIA_UPLOAD_ENDPOINTS = frozenset({"dashboard.reply"})
SESSION_LIFETIME = dt.timedelta(hours=12)


def content_security_policy(settings) -> str:
    # Audio plays from our own /media URLs or from GCS (https). Under the GCS emulator the
    # signed URLs point at a plain-http local host, which is allowed explicitly.
    media = ["'self'", "https:"]
    if settings.media_backend == "gcs" and settings.storage_emulator_host:
        host = settings.storage_emulator_host
        media.append(host if "://" in host else f"http://{host}")
    return "; ".join([
        "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
        "media-src " + " ".join(media), "connect-src 'self'", "object-src 'none'",
        "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'",
    ])


def init_security(app, settings) -> None:
    """Session cookie, CSRF and browser headers for the whole app (called once by the factory)."""
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=bool(settings.public_base_url and settings.public_base_url.startswith("https://")),
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        # The token lives as long as the session: a page left open for an hour still posts.
        WTF_CSRF_TIME_LIMIT=None,
        # We run the check ourselves (below) so that exemptions go by blueprint name.
        WTF_CSRF_CHECK_DEFAULT=False,
    )
    csrf = CSRFProtect(app)
    app.extensions["dashboard_csp"] = content_security_policy(settings)

    @app.before_request
    def _csrf_protect():
        if not app.config.get("WTF_CSRF_ENABLED", True) or request.endpoint is None:
            return None
        if request.blueprint in TWILIO_ONLY_BLUEPRINTS or request.blueprint in BEARER_BLUEPRINTS:
            return None
        if request.endpoint in MEDIA_UPLOAD_ENDPOINTS:
            # An operator's audio or file for WhatsApp: up to MAX_MEDIA_BYTES, not the form limit.
            request.max_content_length = settings.max_media_bytes + 64 * 1024
        csrf.protect()
        return None

    app.after_request(_security_headers)
    app.register_error_handler(CSRFError, _csrf_error)


def _security_headers(response):
    if request.blueprint in TWILIO_ONLY_BLUEPRINTS:
        return response
    headers = response.headers
    headers.setdefault("Content-Security-Policy", current_app.extensions.get("dashboard_csp", "default-src 'self'"))
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response


def _csrf_error(error):
    message = "Sessão expirada ou formulário inválido. Recarregue a página e tente de novo."
    if auth.wants_json():
        return jsonify(error="csrf", message=message, detail=error.description), 400
    return render_template("error.html", title="Formulário recusado", message=message), 400
