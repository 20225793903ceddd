"""The dashboard's blueprint ``bp``: deny-by-default login guard, no-store for private pages,
template filters and globals every page relies on.

Pages (Portuguese, Bootstrap 5 dark, vendored assets under static/vendor, no CDN):
``/`` status (public), ``/login``, ``/stats`` (+ ``/stats.json``), ``/conversations``,
``/leads``, ``/handoffs``, ``/simulator``, ``/operators`` (admins), and the JSON system endpoints.
A ``before_request`` refuses every view not marked ``@public`` unless an operator is logged in,
and views marked ``@admin_only`` to agents (app/web/auth.py).
CSRF, the session cookie and the browser security headers are app-wide: app/web/security.py.
"""
from __future__ import annotations

import datetime as dt
import json
from functools import lru_cache
from pathlib import Path

from flask import Blueprint, current_app, request
from markupsafe import Markup, escape

from app.localtime import to_local
from app.redaction import mask_phone
from app.services import current_services
from app.web import auth

bp = Blueprint("dashboard", __name__)

STATIC_ROOT = Path(__file__).resolve().parents[3] / "static"

STATUS_LABELS = {
    "received": "recebida", "processing": "processando", "answered": "respondida", "failed": "falhou",
    "ignored": "ignorada", "sending": "enviando", "accepted": "aceita", "queued": "na fila",
    "sent": "enviada", "delivered": "entregue", "read": "lida", "undelivered": "não entregue",
    "waiting_retry": "aguardando nova tentativa", "scheduled": "agendada", "open": "aberto", "closed": "encerrado",
    "waiting_human": "aguardando a equipe", "unanswered": "sem resposta da equipe", "team": "equipe",
    "pending": "pendente", "refused": "recusada pelo Twilio", "skipped": "não enviada (substituída)",
    "partially_delivered": "entregue em parte", "canceled": "cancelada", "limited": "acima do limite",
    "not_sent": "não enviada", "held": "retida",
}
LIMIT_LABELS = {
    "messages_per_minute": "mensagens por minuto", "messages_per_day": "mensagens por dia",
    "audio_seconds_per_day": "segundos de áudio por dia", "ai_calls_per_day": "orçamento diário de IA",
}
# One label per pipeline stage (app.pipeline.STAGE_NAMES) and the whole turn; a test keeps them in step.
STAGE_LABELS = {
    "download": "download", "convert": "conversão", "transcribe": "transcrição", "retrieve": "busca",
    "gate": "triagem", "answer": "resposta", "speak": "voz", "store": "armazenamento", "send": "envio",
    "realtime": "sessão em tempo real", "end_to_end": "total",
}


@bp.before_request
def _require_login():
    view = current_app.view_functions.get(request.endpoint)
    if getattr(view, "dashboard_public", False):
        return None
    return auth.refusal(view)


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
    operator = auth.current_operator()
    return {
        "logged_in": operator is not None,
        "operator": operator,
        "is_admin": bool(operator and operator.is_admin),
        "password_configured": auth.accounts_configured(),
        "offline_mode": services.settings.offline,
        "status_labels": STATUS_LABELS,
        "limit_labels": LIMIT_LABELS,
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


bp.add_url_rule("/login", "login", auth.public(auth.login), methods=["GET", "POST"])
bp.add_url_rule("/logout", "logout", auth.logout, methods=["POST"])
