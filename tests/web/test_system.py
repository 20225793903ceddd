"""/health (app/web/system.py): state without secrets, 503 when the database is down."""
from __future__ import annotations


def test_health_reports_state_without_secrets(make_app):
    app = make_app(start_workers=False, openai_api_key="sk-test-secret-value-123")
    response = app.test_client().get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok" and body["database"]["reachable"] is True
    assert body["inbox_depth"] == 0 and body["mode"] == "online"
    assert body["providers"]["twilio"] is True and body["providers"]["openai"] is True
    raw = response.data.decode()
    assert "sk-test-secret-value-123" not in raw and "test-auth-token" not in raw


def test_health_is_503_when_the_database_is_down(make_app):
    app = make_app(start_workers=False)
    services = app.extensions["endrigo"]
    services.db.ping = lambda: False
    assert app.test_client().get("/health").status_code == 503
