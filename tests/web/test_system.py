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


def test_health_and_the_status_page_agree_on_what_is_configured(make_app):
    """One answer (Settings.providers_configured) for /health, the status cards and the gateways."""
    app = make_app(start_workers=False, openai_api_key=None, elevenlabs_api_key="xi-key")
    services = app.extensions["endrigo"]
    client = app.test_client()
    providers = client.get("/health").get_json()["providers"]
    assert providers == {"twilio": True, "openai": False, "elevenlabs": True, "storage": "local"}
    with app.test_request_context("/"):
        from app.web.dashboard.system import components

        cards = {c["key"]: c["configured"] for c in components()}
    assert {key: cards[key] for key in ("twilio", "openai", "elevenlabs")} == services.settings.providers_configured()
    assert (services.twilio.available, services.openai.available, services.tts.available) == (True, False, True)
