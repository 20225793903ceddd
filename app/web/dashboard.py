"""The operators' dashboard: blueprint ``bp`` and everything every page relies on.

Pages (Portuguese, Bootstrap 5 dark, vendored assets under static/vendor, no CDN):
``/`` status (public), ``/login``, ``/stats`` (+ ``/stats.json``), ``/conversations``,
``/leads``, ``/handoffs``, ``/simulator``, and the JSON system endpoints. The views live in
dashboard_views.py, dashboard_simulator.py, dashboard_system.py and auth.py; this module
creates the blueprint, then imports them so they register on it.

Set up here, for the whole app (the blueprint's ``record_once`` hook runs once per app, so
app/__init__.py needs no change):

- deny by default: a ``before_request`` on the blueprint refuses every view not marked
  ``@public`` unless an operator is logged in (see app/web/auth.py);
- CSRF (flask_wtf) on every POST/PUT/PATCH/DELETE of every blueprint except those in
  ``TWILIO_ONLY_BLUEPRINTS`` (Twilio signs its webhooks instead and cannot send a token);
- the session cookie: HttpOnly, SameSite=Lax, Secure when PUBLIC_BASE_URL is https, 12 hours;
- security headers on every response but Twilio's (CSP without inline scripts or styles, no framing).
"""
from __future__ import annotations

import datetime as dt
import json
from functools import lru_cache
from pathlib import Path

from flask import Blueprint, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from markupsafe import Markup, escape

from app.localtime import to_local
from app.redaction import mask_phone
from app.services import current_services
from app.web import auth

bp = Blueprint("dashboard", __name__)

# Blueprints only Twilio calls (signature-checked), never a browser: no CSRF token (Twilio cannot
# send one) and no browser security headers (nobody renders these answers; it is the hot path).
TWILIO_ONLY_BLUEPRINTS = frozenset({"webhook"})
SESSION_LIFETIME = dt.timedelta(hours=12)
STATIC_ROOT = Path(__file__).resolve().parent.parent.parent / "static"

STATUS_LABELS = {
    "received": "recebida", "processing": "processando", "answered": "respondida", "failed": "falhou",
    "ignored": "ignorada", "sending": "enviando", "accepted": "aceita", "queued": "na fila",
    "sent": "enviada", "delivered": "entregue", "read": "lida", "undelivered": "não entregue",
    "waiting_retry": "aguardando nova tentativa", "scheduled": "agendada", "open": "aberto", "closed": "encerrado",
}
STAGE_LABELS = {
    "download": "download", "convert": "conversão", "transcribe": "transcrição", "retrieve": "busca",
    "answer": "resposta", "speak": "voz", "store": "armazenamento", "send": "envio", "end_to_end": "total",
}


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


@bp.record_once
def _setup(state) -> None:
    app = state.app
    settings = app.extensions["endrigo"].settings
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
    app.extensions["dashboard_login_limiter"] = auth.LoginRateLimiter()
    app.extensions["dashboard_csp"] = content_security_policy(settings)

    @app.before_request
    def _csrf_protect():
        if not app.config.get("WTF_CSRF_ENABLED", True) or request.endpoint is None:
            return None
        if request.blueprint in TWILIO_ONLY_BLUEPRINTS:
            return None
        csrf.protect()
        return None


@bp.after_app_request
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


@bp.app_errorhandler(CSRFError)
def _csrf_error(error):
    message = "Sessão expirada ou formulário inválido. Recarregue a página e tente de novo."
    if auth.wants_json():
        return jsonify(error="csrf", message=message, detail=error.description), 400
    return render_template("error.html", title="Formulário recusado", message=message), 400


@bp.before_request
def _require_login():
    view = current_app.view_functions.get(request.endpoint)
    if getattr(view, "dashboard_public", False):
        return None
    return auth.refusal()


@bp.after_request
def _no_store_for_private_pages(response):
    view = current_app.view_functions.get(request.endpoint)
    if not getattr(view, "dashboard_public", False):
        # Personal data: keep it out of shared caches and the back button of a shared computer.
        response.headers["Cache-Control"] = "no-store"
    return response


# ---- template helpers ------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _feather_icons() -> dict[str, str]:
    return json.loads((STATIC_ROOT / "vendor" / "feather-icons" / "icons.json").read_text())


@bp.app_template_global("icon")
def icon(name: str, css_class: str = "", size: int = 16) -> Markup:
    """A Feather icon as inline SVG (rendered on the server: no flash, no script needed)."""
    body = _feather_icons().get(name)
    if body is None:
        raise KeyError(f"unknown feather icon {name!r}")
    classes = escape(f"feather feather-{name} {css_class}".strip())
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{int(size)}" height="{int(size)}" viewBox="0 0 24 24" '
        f'fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" '
        f'class="{classes}" aria-hidden="true">{body}</svg>'
    )


@bp.app_context_processor
def _template_context() -> dict:
    services = current_services()
    return {
        "logged_in": auth.is_logged_in() if services.settings.dashboard_password else False,
        "password_configured": bool(services.settings.dashboard_password),
        "offline_mode": services.settings.offline,
        "status_labels": STATUS_LABELS,
        "stage_labels": STAGE_LABELS,
    }


@bp.app_template_filter("local_time")
def local_time(value: dt.datetime | str | None, fmt: str = "%d/%m/%Y %H:%M") -> str:
    """Naive-UTC datetime (or the ISO string provider_health gives) shown in Brazilian time."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.removesuffix("Z"))
        except ValueError:
            return value
    local = to_local(value)
    return local.strftime(fmt) if local else "—"


@bp.app_template_filter("iso_utc")
def iso_utc(value: dt.datetime | None) -> str:
    return value.isoformat(timespec="seconds") + "Z" if value else ""


@bp.app_template_filter("masked_phone")
def masked_phone(value: str | None) -> str:
    return mask_phone(value)


@bp.app_template_filter("ms")
def milliseconds(value) -> str:
    if value is None:
        return "—"
    value = float(value)
    return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms"


# The views register themselves on ``bp`` when imported (flaskr/microblog style).
from app.web import dashboard_simulator, dashboard_system, dashboard_views  # noqa: E402,F401

bp.add_url_rule("/login", "login", auth.public(auth.login), methods=["GET", "POST"])
bp.add_url_rule("/logout", "logout", auth.logout, methods=["POST"])
