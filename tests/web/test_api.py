"""/api/v1: bearer tokens (missing, wrong, revoked, disabled operator), roles, the conversation
endpoints through the real outbox and the Twilio emulator, and a schemathesis fuzz of every
operation from /api/v1/openapi.json (no 5xx; statuses, content types and bodies as documented).
"""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from app.db import utcnow
from app.models import Handoff, Message, OperatorAction, User
from app.operators import accounts, tokens

ANA = "+5511999990001"


@pytest.fixture
def app(make_app):
    app = make_app(start_workers=False, business_hours="always")
    with app.extensions["endrigo"].db.session() as s:
        s.add(User(phone=ANA, profile_name="Ana", last_seen_at=utcnow()))
    return app


def _db(app):
    return app.extensions["endrigo"].db


@pytest.fixture
def agent_token(app) -> str:
    accounts.create(_db(app), "maria", "agent", "senha-da-maria-123")
    return tokens.issue(_db(app), "maria").token


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_requests_without_a_live_token_get_401_json(app, agent_token):
    client = app.test_client()
    issued = tokens.issue(_db(app), "maria")
    tokens.revoke(_db(app), issued.id)
    for headers in ({}, {"Authorization": "Basic bWFyaWE6eA=="}, auth("edt_" + "x" * 43), auth("nonsense"),
                    auth(issued.token)):
        response = client.get("/api/v1/conversations", headers=headers)
        assert response.status_code == 401, headers
        assert response.get_json()["error"] == "unauthorized" and response.get_json()["message"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/api/v1/conversations", headers=auth(agent_token)).status_code == 200
    accounts.disable(_db(app), "maria")  # disabling revokes the operator's tokens
    assert client.get("/api/v1/conversations", headers=auth(agent_token)).status_code == 401


def test_roles_agents_may_not_list_operators(app, agent_token):
    client = app.test_client()
    refused = client.get("/api/v1/operators", headers=auth(agent_token))
    assert refused.status_code == 403 and refused.get_json()["error"] == "forbidden"
    accounts.create(_db(app), "chefe", "admin", "senha-do-chefe-123")
    admin = tokens.issue(_db(app), "chefe").token
    listed = client.get("/api/v1/operators", headers=auth(admin)).get_json()["operators"]
    assert {(o["name"], o["role"]) for o in listed} == {("maria", "agent"), ("chefe", "admin")}
    assert "password_hash" not in str(listed)


def test_conversations_reply_handoff_and_close(app, agent_token, twilio_fake):
    client = app.test_client()
    h = auth(agent_token)
    listed = client.get("/api/v1/conversations", headers=h).get_json()["conversations"]
    assert [c["phone"] for c in listed] == [ANA] and listed[0]["waiting"] is False
    assert client.get("/api/v1/conversations?waiting=true", headers=h).get_json() == {"conversations": []}
    assert client.get("/api/v1/conversations?waiting=maybe", headers=h).status_code == 400

    opened = client.post(f"/api/v1/conversations/{ANA}/handoff", json={"reason": "CRM: cliente VIP"}, headers=h)
    assert opened.status_code == 200 and opened.get_json()["already_open"] is False
    again = client.post(f"/api/v1/conversations/%2B5511999990001/handoff", headers=h)  # noqa: F541 - %2B is the +
    assert again.get_json()["already_open"] is True and again.get_json()["handoff_id"] == opened.get_json()["handoff_id"]
    waiting = client.get("/api/v1/conversations?waiting=true", headers=h).get_json()["conversations"]
    assert [c["phone"] for c in waiting] == [ANA] and waiting[0]["handoff"]["reason"] == "CRM: cliente VIP"

    sent = client.post(f"/api/v1/conversations/{ANA}/messages", json={"body": "Olá Ana, aqui é a Maria."}, headers=h)
    assert sent.status_code == 201 and sent.get_json()["delivered"] is True
    assert twilio_fake.send_counts(to="whatsapp:" + ANA, body="Olá Ana, aqui é a Maria.") == 1
    detail = client.get(f"/api/v1/conversations/{ANA}", headers=h).get_json()
    out = [m for m in detail["messages"] if m["direction"] == "out"]
    assert out[-1]["author"] == "operator:maria" and out[-1]["status"] == "queued"
    assert out[-1]["body"] == "Olá Ana, aqui é a Maria."

    closed = client.post(f"/api/v1/conversations/{ANA}/handoff/close", headers=h)
    assert closed.status_code == 200 and closed.get_json()["closed"] is True
    assert client.post(f"/api/v1/conversations/{ANA}/handoff/close", headers=h).get_json()["closed"] is False
    with _db(app).session() as s:
        assert s.scalar(select(Handoff.status)) == "closed"
        actions = [a.action for a in s.scalars(select(OperatorAction).where(OperatorAction.operator_name == "maria"))]
    assert actions.count("take_over") == 2 and "reply" in actions and "close" in actions


@pytest.mark.parametrize("path,body,status,code", [
    ("/api/v1/conversations/5511999990001", {"body": "x"}, 400, "invalid_phone"),
    ("/api/v1/conversations/+5511000000000", {"body": "x"}, 404, "not_found"),
    (f"/api/v1/conversations/{ANA}", {"body": "   "}, 400, "invalid_body"),
    (f"/api/v1/conversations/{ANA}", {"text": "x"}, 400, "invalid_body"),
    (f"/api/v1/conversations/{ANA}", ["x"], 400, "invalid_body"),
])
def test_bad_messages_get_clear_json_errors_and_nothing_is_sent(app, agent_token, twilio_fake, path, body, status,
                                                                 code):
    response = app.test_client().post(path + "/messages", json=body, headers=auth(agent_token))
    assert response.status_code == status and response.get_json()["error"] == code
    assert twilio_fake.sent == []
    with _db(app).session() as s:
        assert s.scalar(select(Message.id).where(Message.direction == "out")) is None


def test_no_csrf_needed_and_unknown_paths_are_json(app, agent_token):
    client = app.test_client()
    assert client.post(f"/api/v1/conversations/{ANA}/handoff", headers=auth(agent_token)).status_code == 200
    missing = client.get("/api/v1/nothing-here", headers=auth(agent_token))
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    wrong_method = client.delete("/api/v1/conversations", headers=auth(agent_token))
    assert wrong_method.status_code == 405 and wrong_method.is_json
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.") and "/conversations/{phone}/handoff/close" in spec["paths"]


# ---- the OpenAPI description, kept true by fuzzing -------------------------------------------

def test_the_api_matches_its_openapi_description(app, agent_token, twilio_fake):
    """Every operation fuzzed from the served document (~30 cases each): no 5xx, and every status,
    content type and body as documented. Driven by Hypothesis directly (schemathesis' pytest
    plugin does not load under pytest 9), one operation after the other."""
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 6
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def fuzz(case):
            case.call_and_validate(headers=auth(agent_token), checks=checks)

        fuzz()
