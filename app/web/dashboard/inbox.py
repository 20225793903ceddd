"""The live inbox and the human takeover buttons of the dashboard (any logged-in operator).

- ``/conversations``: waiting for a person first (with the wait), then by last activity,
  last message preview, unread mark; filters ``waiting`` / ``mine`` / ``all`` and search
  by name or last digits; cards, so it works at phone width. static/js/inbox.js re-reads
  ``/conversations.json`` every few seconds and redraws the list without a reload.
- POST ``/conversations/<id>/takeover`` (assumir), ``/reply`` (text and/or a file: audio
  goes as a voice message, PDF/JPEG/PNG as media; stored through services.storage so Twilio
  can fetch it), ``/close``; ``/team-turns/<id>/resend`` and ``/notifications/<id>/retry``.

All of them go through app/assistant/handoff.py, which records the operator in the audit trail.
"""
from __future__ import annotations

import re
from pathlib import Path

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select

from app.assistant import handoff, team_notify
from app.clients.storage import CONTENT_TYPES_BY_SUFFIX, StorageError
from app.db import utcnow
from app.models import Handoff, Notification, Turn, User
from app.operators import audit
from app.services import current_services
from app.web import conversations
from app.web.auth import current_operator, json_endpoint
from app.web.dashboard.blueprint import bp

POLL_SECONDS = 4
SUFFIX_ALIASES = {".jpeg": ".jpg", ".opus": ".ogg", ".oga": ".ogg"}
KIND_BY_TYPE = {"audio": "audio", "image": "image", "application": "document"}


def _filters() -> tuple[str, str]:
    view = request.args.get("view", "all")
    view = view if view in conversations.VIEWS else "all"
    # NUL is refused by PostgreSQL in any string: drop it (and other controls) from the search.
    return view, re.sub(r"[\x00-\x1f\x7f]", "", request.args.get("q") or "").strip()[:64]


def _decorate(items: list[dict]) -> list[dict]:
    for item in items:
        h = item["handoff"]
        item["waited"] = conversations.waited_label(h["waiting_seconds"]) if h else ""
        item["url"] = url_for("dashboard.transcript", user_id=item["id"])
    return items


@bp.get("/conversations", endpoint="conversations")
def conversations_page():
    view, query = _filters()
    operator = current_operator()
    items = _decorate(conversations.inbox(current_services().db, operator.id, view=view, query=query))
    return render_template("conversations.html", items=items, view=view, query=query, poll_seconds=POLL_SECONDS,
                           waiting=sum(1 for i in items if i["handoff"]))


@bp.get("/conversations.json")
@json_endpoint
def conversations_json():
    view, query = _filters()
    operator = current_operator()
    items = _decorate(conversations.inbox(current_services().db, operator.id, view=view, query=query))
    return jsonify(conversations=items, waiting=conversations.waiting_count(current_services().db),
                   now=conversations.iso(utcnow()))


@bp.get("/conversations/<int:user_id>/state.json")
@json_endpoint
def conversation_state(user_id: int):
    """A fingerprint of the conversation; the transcript page (static/js/transcript.js) refreshes
    itself when it changes: a new message, a delivery status, the handoff opened or closed."""
    return jsonify(state=conversations.fingerprint(current_services().db, user_id))


def _back(user_id: int):
    return redirect(url_for("dashboard.transcript", user_id=user_id) + "#reply")


def _user_or_404(user_id: int) -> None:
    with current_services().db.session() as session:
        if session.get(User, user_id) is None:
            abort(404)


@bp.post("/conversations/<int:user_id>/takeover")
def take_over(user_id: int):
    _user_or_404(user_id)
    info = handoff.open_handoff(current_services(), user_id, "conversa assumida por um operador",
                                source="operator", operator=current_operator())
    flash("Você assumiu a conversa: o robô fica em silêncio até você encerrar." if not info.already_open
          else "A conversa já estava com a equipe; agora ela aparece em “minhas”.", "success")
    return _back(user_id)


def _stored_upload(file) -> dict | None:
    """The uploaded file in services.storage, as the media of an outbound part; None when none was sent."""
    if file is None or not file.filename:
        return None
    suffix = Path(file.filename).suffix.lower()
    suffix = SUFFIX_ALIASES.get(suffix, suffix)
    content_type = CONTENT_TYPES_BY_SUFFIX.get(suffix)
    if content_type is None:
        raise handoff.HandoffError("Tipo de arquivo não aceito: envie áudio (ogg, mp3, m4a, aac, amr), "
                                   "PDF, JPEG ou PNG.")
    data = file.read()
    services = current_services()
    if not data:
        raise handoff.HandoffError("O arquivo está vazio.")
    if len(data) > services.settings.max_media_bytes:
        raise handoff.HandoffError("Arquivo grande demais para o WhatsApp.")
    try:
        stored = services.storage.save(data, content_type, suffix, base_url=services.public_base_url())
    except StorageError as exc:
        raise handoff.HandoffError(f"Não consegui guardar o arquivo ({exc}).") from exc
    return {"url": stored.url, "type": content_type, "kind": KIND_BY_TYPE.get(content_type.split("/")[0], "document")}


@bp.post("/conversations/<int:user_id>/reply")
def reply(user_id: int):
    _user_or_404(user_id)
    try:
        media = _stored_upload(request.files.get("file"))
        result = handoff.operator_reply(current_services(), user_id, current_operator(),
                                        text=request.form.get("text"), media=media)
    except handoff.HandoffError as exc:
        flash(str(exc), "danger")
        return _back(user_id)
    if result.delivered:
        flash("Mensagem enviada.", "success")
    else:
        flash(f"A mensagem foi guardada, mas o WhatsApp recusou o envio: {result.error}. "
              "Use “Reenviar” quando o problema passar.", "warning")
    return _back(user_id)


@bp.post("/conversations/<int:user_id>/close")
def close(user_id: int):
    _user_or_404(user_id)
    if handoff.close_handoff(current_services(), user_id, by=current_operator()):
        flash("Atendimento humano encerrado: o robô volta a responder esse contato.", "success")
    else:
        flash("Esse atendimento humano já estava encerrado.", "info")
    return _back(user_id)


@bp.post("/team-turns/<int:turn_id>/resend")
def resend_team_turn(turn_id: int):
    try:
        result = handoff.retry_team_turn(current_services(), turn_id, current_operator())
    except handoff.HandoffError:
        abort(404)
    with current_services().db.session() as session:
        user_id = session.get(Turn, turn_id).user_id
    flash("Mensagem reenviada." if result.delivered else f"Ainda não foi: {result.error}",
          "success" if result.delivered else "warning")
    return _back(user_id)


@bp.post("/notifications/<int:notification_id>/retry")
def retry_notification(notification_id: int):
    services = current_services()
    with services.db.session() as session:
        row = session.get(Notification, notification_id)
        if row is None:
            abort(404)
        user_id = session.get(Handoff, row.handoff_id).user_id
    audit.record(services.db, current_operator(), audit.RETRY, user_id=user_id,
                 detail={"notification_id": notification_id})
    if team_notify.retry(services, notification_id):
        with services.db.session() as session:
            status = session.scalar(select(Notification.status).where(Notification.id == notification_id))
        flash("Aviso à equipe enviado." if status == team_notify.SENT else "Nova tentativa falhou; veja o erro.",
              "success" if status == team_notify.SENT else "warning")
    else:
        flash("Esse aviso já tinha sido enviado.", "info")
    return _back(user_id)
