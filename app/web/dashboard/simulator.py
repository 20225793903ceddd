"""The chat simulator page: an operator talks to the bot through the real pipeline.

Each operator has ONE simulator contact (phone ``sim:<key>``, channel ``simulator``), keyed
by the logged-in operator's name (``session["operator_name"]``; the shared-password login
has no name and uses ``SHARED_LOGIN_OPERATOR``), so the conversation is still there after
logging out and in again, from any browser. "Nova conversa" archives that contact (its phone
gets a suffix; it stays on the conversations page with its history, open handoffs and all)
and the next message starts a fresh contact under the operator's key. Messages go in through
``simulate_message`` -- the same table, inbox and pipeline as WhatsApp -- and replies are
the outbound rows the simulator channel records, which static/js/simulator.js polls from
``/simulator/messages.json``. With no API keys at all the offline responder answers, so a
newcomer can try the bot at once.
"""
from __future__ import annotations

import hashlib
import secrets

from flask import flash, jsonify, redirect, render_template, request, session, url_for
from sqlalchemy import select

from app.channels.simulator.inbound import SimulatorInputError, simulated_inbound, simulator_phone
from app.inbox.intake import store_inbound
from app.models import PROCESSING, RECEIVED, Message, User
from app.services import current_services
from app.web.auth import json_endpoint
from app.web.dashboard.blueprint import bp
from app.web.dashboard.formatting import whatsapp_html
from app.web.dashboard.views import playable_audio_url

POLL_LIMIT = 100
# Who is logged in when the dashboard's shared password was used (no operator account).
SHARED_LOGIN_OPERATOR = "admin"


def operator_name() -> str:
    return session.get("operator_name") or SHARED_LOGIN_OPERATOR


def operator_key(name: str) -> str:
    """The operator's stable simulator key: 16 hex characters (what simulator_phone keeps)."""
    return hashlib.sha256(f"simulator:{name}".encode("utf-8")).hexdigest()[:16]


def _session_key() -> str:
    return operator_key(operator_name())


def _wants_json() -> bool:
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"


@bp.get("/simulator")
def simulator():
    key = _session_key()
    return render_template("simulator.html", phone=simulator_phone(key), operator=operator_name(),
                           max_mb=current_services().settings.max_media_bytes // (1024 * 1024))


@bp.post("/simulator/messages")
@json_endpoint
def simulator_send():
    svc = current_services()
    audio_file = request.files.get("audio")
    audio = audio_file.read() if audio_file and audio_file.filename else None
    try:
        inbound = simulated_inbound(svc.settings, _session_key(), text=request.form.get("text"), audio=audio,
                                    profile_name=f"Simulador ({operator_name()})")
    except SimulatorInputError as exc:
        if _wants_json():
            return jsonify(ok=False, error=str(exc)), 400
        flash(str(exc), "danger")
        return redirect(url_for("dashboard.simulator"))
    # Stored exactly like a WhatsApp message: same table, same inbox, same pipeline.
    user_id, _ = store_inbound(svc.db, inbound, channel="simulator")
    svc.inbox.notify(user_id)
    if _wants_json():
        return jsonify(ok=True, user_id=user_id), 202
    return redirect(url_for("dashboard.simulator"))


def _message_json(message: Message) -> dict:
    return {
        "id": message.id,
        "direction": message.direction,
        "kind": message.kind,
        "body": message.body,
        # Escaped first, then WhatsApp's markers as tags (formatting.py): the page may insert it as HTML.
        "body_html": str(whatsapp_html(message.body)),
        "transcription": message.transcription,
        "audio_url": playable_audio_url(message),
        "status": message.status,
        "error": message.error if message.direction == "out" else None,
        "created_at": message.created_at.isoformat(timespec="seconds") + "Z",
    }


@bp.get("/simulator/messages.json")
@json_endpoint
def simulator_messages():
    """The conversation's latest messages (or those after ``?after=<id>``), oldest first.

    The page re-reads the latest messages on every poll rather than only new ones, because
    rows change after they appear: an inbound voice note gets its transcription and status
    while the pipeline runs.
    """
    after = request.args.get("after", type=int)
    key = _session_key()
    empty = jsonify(messages=[], waiting=False)
    with current_services().db.session() as session_:
        user_id = session_.scalar(select(User.id).where(User.phone == simulator_phone(key)))
        if user_id is None:
            return empty
        query = select(Message).where(Message.user_id == user_id)
        if after is not None:
            rows = session_.scalars(query.where(Message.id > after).order_by(Message.id).limit(POLL_LIMIT)).all()
        else:
            rows = list(reversed(session_.scalars(query.order_by(Message.id.desc()).limit(POLL_LIMIT)).all()))
        waiting = session_.scalar(
            select(Message.id).where(Message.user_id == user_id, Message.direction == "in",
                                     Message.status.in_((RECEIVED, PROCESSING))).limit(1)
        ) is not None
        messages = [_message_json(m) for m in rows]
    return jsonify(messages=messages, waiting=waiting)


@bp.post("/simulator/reset")
def simulator_reset():
    """Archive the operator's simulator contact: the next message starts a new one."""
    phone = simulator_phone(_session_key())
    with current_services().db.session() as session_:
        user = session_.scalar(select(User).where(User.phone == phone))
        if user is not None:
            user.phone = f"{phone}~{secrets.token_hex(4)}"  # fits users.phone (32 chars)
    if _wants_json():
        return jsonify(ok=True)
    flash("Nova conversa iniciada.", "info")
    return redirect(url_for("dashboard.simulator"))
