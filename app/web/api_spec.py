"""The OpenAPI 3 description of /api/v1 (served at /api/v1/openapi.json).

Kept true by tests/test_api.py, which fuzzes every operation from this document with
schemathesis and checks status codes, content types and response bodies against it.
Change a route in app/web/api.py and this document together.
"""
from __future__ import annotations

from functools import lru_cache

PHONE_PATTERN = r"^\+[1-9]\d{7,14}$"


def _nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    text = {400: "Invalid request (the message says why)", 401: "No token, or a wrong or revoked one",
            403: "The token's role may not do this", 404: "No conversation with that number"}
    return {str(code): _json(_ref("Error"), text[code]) for code in codes}


PHONE = {"name": "phone", "in": "path", "required": True, "description": "The user's number in E.164.",
         "schema": {"type": "string", "pattern": PHONE_PATTERN}, "example": "+5511999990001"}

SCHEMAS = {
    "Error": {"type": "object", "required": ["error", "message"], "properties": {
        "error": {"type": "string"}, "message": {"type": "string"}}},
    "LastMessage": {"type": "object", "required": ["direction", "preview", "at"], "properties": {
        "direction": {"type": "string", "enum": ["in", "out"]}, "preview": {"type": "string"},
        "at": _nullable({"type": "string"})}},
    "Handoff": {"type": "object", "required": ["id", "reason", "opened_at", "answered", "waiting_since",
                                               "waiting_seconds"], "properties": {
        "id": {"type": "integer"}, "reason": {"type": "string"}, "source": _nullable({"type": "string"}),
        "opened_at": _nullable({"type": "string"}), "answered": {"type": "boolean"},
        "operator": _nullable({"type": "string"}), "mine": {"type": "boolean"},
        "waiting_since": _nullable({"type": "string"}), "waiting_seconds": _nullable({"type": "integer"})}},
    "Conversation": {"type": "object", "required": ["id", "phone", "channel", "waiting", "handoff"], "properties": {
        "id": {"type": "integer"}, "phone": {"type": "string"}, "name": _nullable({"type": "string"}),
        "channel": {"type": "string"}, "last_activity_at": _nullable({"type": "string"}),
        "last_message": _nullable({"allOf": [_ref("LastMessage")]}),
        "waiting": {"type": "boolean", "description": "A handoff is open: the bot is silent, a person answers."},
        "handoff": _nullable({"allOf": [_ref("Handoff")]})}},
    "Message": {"type": "object", "required": ["id", "direction", "kind", "status", "author"], "properties": {
        "id": {"type": "integer"}, "direction": {"type": "string", "enum": ["in", "out"]},
        "kind": {"type": "string"}, "body": _nullable({"type": "string"}),
        "transcription": _nullable({"type": "string"}),
        "status": {"type": "string", "description": "received, processing, answered, waiting_human, unanswered, "
                                                    "failed; outbound: sending, queued, sent, delivered, read, "
                                                    "failed, undelivered"},
        "author": {"type": "string", "description": "user, bot, or operator:<name>"},
        "operator": _nullable({"type": "string"}), "error_code": _nullable({"type": "string"}),
        "created_at": _nullable({"type": "string"})}},
}


@lru_cache(maxsize=1)
def openapi_document() -> dict:
    conversation_result = {"type": "object", "required": ["conversation"], "properties": {
        "conversation": _ref("Conversation")}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Endrigo Digital — API de atendimento", "version": "1.0.0",
                 "description": "Conversations, human takeover and replies, for CRMs and scripts. "
                                "Authorization: Bearer <token> (flask --app main operators token NAME)."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearerAuth": []}],
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
        },
        "paths": {
            "/conversations": {"get": {
                "operationId": "listConversations",
                "summary": "Conversations: waiting for a person first, then by last activity",
                "parameters": [{"name": "waiting", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["true", "false"]},
                                "description": "true: only conversations waiting for a person"}],
                "responses": {"200": _json({"type": "object", "required": ["conversations"], "properties": {
                    "conversations": {"type": "array", "items": _ref("Conversation")}}}, "The conversations"),
                    **_errors(400, 401)},
            }},
            "/conversations/{phone}": {"get": {
                "operationId": "getConversation",
                "summary": "One conversation with its messages, both sides, with status and author",
                "parameters": [PHONE],
                "responses": {"200": _json({"type": "object", "required": ["conversation", "messages"],
                                            "properties": {"conversation": _ref("Conversation"),
                                                           "messages": {"type": "array", "items": _ref("Message")}}},
                                           "The conversation"), **_errors(400, 401, 404)},
            }},
            "/conversations/{phone}/messages": {"post": {
                "operationId": "sendMessage",
                "summary": "Send a message as the token's operator (takes the conversation over)",
                "parameters": [PHONE],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["body"], "additionalProperties": False,
                    "properties": {"body": {"type": "string", "minLength": 1, "maxLength": 4096}}}}}},
                "responses": {"201": _json({"type": "object", "required": ["turn_id", "delivered", "messages"],
                                            "properties": {"turn_id": {"type": "integer"},
                                                           "delivered": {"type": "boolean"},
                                                           "error": _nullable({"type": "string"}),
                                                           "messages": {"type": "array", "items": _ref("Message")}}},
                                           "Stored and handed to WhatsApp (delivered=false: refused; see error)"),
                              **_errors(400, 401, 404)},
            }},
            "/conversations/{phone}/handoff": {"post": {
                "operationId": "openHandoff",
                "summary": "Take the conversation over: the bot goes silent (idempotent)",
                "parameters": [PHONE],
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"reason": {"type": "string", "maxLength": 500}}}}}},
                "responses": {"200": _json({**conversation_result, "required": ["handoff_id", "already_open",
                                                                               "conversation"],
                                            "properties": {**conversation_result["properties"],
                                                           "handoff_id": {"type": "integer"},
                                                           "already_open": {"type": "boolean"}}}, "The open handoff"),
                              **_errors(400, 401, 404)},
            }},
            "/conversations/{phone}/handoff/close": {"post": {
                "operationId": "closeHandoff",
                "summary": "Close the handoff: the bot answers again",
                "parameters": [PHONE],
                "responses": {"200": _json({**conversation_result, "required": ["closed", "conversation"],
                                            "properties": {**conversation_result["properties"],
                                                           "closed": {"type": "boolean",
                                                                      "description": "false: none was open"}}},
                                           "Closed (or none was open)"), **_errors(400, 401, 404)},
            }},
            "/operators": {"get": {
                "operationId": "listOperators",
                "summary": "Operators (admins only)",
                "responses": {"200": _json({"type": "object", "required": ["operators"], "properties": {
                    "operators": {"type": "array", "items": {"type": "object", "required": ["name", "role", "active"],
                                                             "properties": {
                                                                 "name": {"type": "string"},
                                                                 "role": {"type": "string", "enum": ["admin", "agent"]},
                                                                 "active": {"type": "boolean"},
                                                                 "last_login_at": _nullable({"type": "string"})}}}}},
                    "The operators"), **_errors(401, 403)},
            }},
        },
    }
