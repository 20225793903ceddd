"""The operators' JSON API under /api/v1, for CRMs and scripts (described at /api/v1/openapi.json).

Authentication: ``Authorization: Bearer <token>`` (tokens from ``flask --app main operators
token NAME``, app/operators/tokens.py): 401 without a token, with a wrong or revoked one, or
when its operator is disabled; 403 for a role that may not (``GET /operators`` is for
admins). No CSRF: browsers never send these tokens by themselves (app/web/security.py
exempts the blueprint). Every answer is JSON; errors are ``{"error": code, "message":
Portuguese text}``.

Conversations are addressed by the user's E.164 number (``+5511999990001``; ``%2B`` for the
plus sign works too). Replies, handoffs and closes go through app/assistant/handoff.py,
like the dashboard's buttons, and are written to the audit trail with the token's operator.
"""
from __future__ import annotations

import logging

from flask import Blueprint, g, jsonify, request
from werkzeug.exceptions import HTTPException

from app.assistant import handoff
from app.operators import accounts, tokens
from app.services import current_services
from app.web import conversations
from app.web.api_spec import openapi_document

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api/v1")
PREFIX = "/api/"


def error(status: int, code: str, message: str):
    response = jsonify(error=code, message=message)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="endrigo"'
    return response


@bp.before_request
def _authenticate():
    if request.endpoint == "api.openapi":
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return error(401, "unauthorized", "Envie o cabeçalho Authorization: Bearer <token>.")
    operator = tokens.authenticate(current_services().db, token.strip())
    if operator is None:
        return error(401, "unauthorized", "Token inválido, revogado ou de um operador desativado.")
    g.api_operator = operator
    return None


@bp.after_request
def _no_store(response):
    response.headers["Cache-Control"] = "no-store"
    return response


def handle_http_error(exc: HTTPException):
    """JSON errors for everything under /api/ (also unmatched paths and methods)."""
    if not request.path.startswith(PREFIX):
        return exc
    messages = {404: "Recurso não encontrado.", 405: "Método não permitido aqui.",
                413: "Requisição grande demais.", 400: "Requisição inválida."}
    return error(exc.code or 500, (exc.name or "error").lower().replace(" ", "_"),
                 messages.get(exc.code, exc.description or "Erro."))


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    """Any error inside an API view: JSON, and the traceback to the log only."""
    if isinstance(exc, HTTPException):
        return handle_http_error(exc)
    log.exception("API error on %s %s", request.method, request.path)
    return error(500, "internal_error", "Erro interno. Tente de novo em instantes.")


def _user_or_error(phone: str):
    if not conversations.E164.match(phone or ""):
        return None, error(400, "invalid_phone", "Use o número no formato E.164, por exemplo +5511999990001.")
    with current_services().db.session() as session:
        user = conversations.user_by_phone(session, phone)
        user_id = user.id if user is not None else None
    if user_id is None:
        return None, error(404, "not_found", "Nenhuma conversa com esse número.")
    return user_id, None


def _json_object():
    data = request.get_json(silent=True)
    return data if isinstance(data, dict) else None


def _summary(user_id: int) -> dict:
    db = current_services().db
    items = conversations.inbox(db, g.api_operator.id, view="all", limit=conversations.INBOX_LIMIT,
                                full_phone=True)
    for item in items:
        if item["id"] == user_id:
            return _public(item)
    with db.session() as session:  # not among the newest: build it alone
        from app.models import User

        user = session.get(User, user_id)
        return {"id": user.id, "phone": user.phone, "name": user.display_name, "channel": user.channel,
                "last_activity_at": conversations.iso(user.last_seen_at), "last_message": None, "waiting": False,
                "handoff": None}


def _public(item: dict) -> dict:
    out = {key: item[key] for key in ("id", "phone", "name", "channel", "last_activity_at", "last_message",
                                      "handoff")}
    out["waiting"] = item["handoff"] is not None
    return out


# ---- routes ----------------------------------------------------------------------------------

@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document())


@bp.get("/conversations")
def list_conversations():
    waiting = request.args.get("waiting", "false").strip().lower()
    if waiting not in ("true", "false"):
        return error(400, "invalid_parameter", "O filtro waiting aceita true ou false.")
    view = "waiting" if waiting == "true" else "all"
    items = conversations.inbox(current_services().db, g.api_operator.id, view=view, full_phone=True)
    return jsonify(conversations=[_public(item) for item in items])


@bp.get("/conversations/<phone>")
def get_conversation(phone: str):
    user_id, problem = _user_or_error(phone)
    if problem:
        return problem
    return jsonify(conversation=_summary(user_id), messages=conversations.messages_of(current_services().db, user_id))


@bp.post("/conversations/<phone>/messages")
def post_message(phone: str):
    user_id, problem = _user_or_error(phone)
    if problem:
        return problem
    data = _json_object()
    body = data.get("body") if data is not None else None
    if not isinstance(body, str) or not body.strip():
        return error(400, "invalid_body", 'Envie JSON {"body": "texto da mensagem"}.')
    if len(body) > handoff.MAX_REPLY_CHARS:
        return error(400, "invalid_body", f"A mensagem passa de {handoff.MAX_REPLY_CHARS} caracteres.")
    try:
        result = handoff.operator_reply(current_services(), user_id, g.api_operator, text=body, source="api")
    except handoff.HandoffError as exc:
        return error(400, "invalid_request", str(exc))
    messages = [m for m in conversations.messages_of(current_services().db, user_id) if m["direction"] == "out"]
    sent = [m for m in messages if m.get("operator")][-20:]
    response = jsonify(turn_id=result.turn_id, delivered=result.delivered, error=result.error, messages=sent)
    response.status_code = 201
    return response


@bp.post("/conversations/<phone>/handoff")
def open_handoff(phone: str):
    user_id, problem = _user_or_error(phone)
    if problem:
        return problem
    data = _json_object() or {}
    reason = data.get("reason")
    if reason is not None and not isinstance(reason, str):
        return error(400, "invalid_body", "O campo reason deve ser texto.")
    info = handoff.open_handoff(current_services(), user_id, reason or "aberto pela API", source="api",
                                operator=g.api_operator)
    return jsonify(handoff_id=info.id, already_open=info.already_open, conversation=_summary(user_id))


@bp.post("/conversations/<phone>/handoff/close")
def close_handoff(phone: str):
    user_id, problem = _user_or_error(phone)
    if problem:
        return problem
    closed = handoff.close_handoff(current_services(), user_id, by=g.api_operator)
    return jsonify(closed=closed, conversation=_summary(user_id))


@bp.get("/operators")
def list_operators():
    if not g.api_operator.is_admin:
        return error(403, "forbidden", "Só administradores listam operadores.")
    rows = accounts.list_accounts(current_services().db)
    return jsonify(operators=[{"name": a.name, "role": a.role, "active": a.active,
                               "last_login_at": conversations.iso(a.last_login_at)} for a in rows])


def register_error_handlers(app) -> None:
    """Unmatched paths and methods under /api/ never reach the blueprint: answer them in JSON too."""
    for code in (404, 405, 413):
        app.register_error_handler(code, handle_http_error)
