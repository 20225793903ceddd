"""The dashboard through Flask's test client: access rules, CSRF, headers, pages and JSON.

The access test walks ``app.url_map``: a route added later by anyone is refused without
login unless it is added to PUBLIC_ROUTES here, on purpose.
"""
from __future__ import annotations

import datetime as dt
import io
import re
import time

import pytest
from sqlalchemy import select

from app.channels.simulator.inbound import uploads_dir
from app.db import utcnow
from app.models import Handoff, Lead, Message, Turn, User
from tests.conftest import post_signed, wait_for
from tests.fakes.audio_samples import speech_like_ogg

PASSWORD = "correct horse battery staple"
# Routes anyone may reach: no personal data behind them (the Twilio webhooks check signatures).
PUBLIC_ROUTES = {
    "/", "/health", "/login", "/static/<path:filename>", "/webhook/whatsapp", "/webhook/whatsapp/status",
    "/webhook/whatsapp/realtime", "/webhook/whatsapp/v2", "/media/<token>", "/upgrade-webhook", "/api/v1/openapi.json",
    "/metrics",  # its own bearer token (METRICS_TOKEN), not the operators' login: tests/ops/test_metrics.py
}
SAMPLE_VALUES = {"int": "1", "string": "x", "path": "x", "default": "x"}


def csrf_token(client, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page) or re.search(
        r'<meta name="csrf-token" content="([^"]+)"', page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def login(client, password: str = PASSWORD):
    token = csrf_token(client)
    response = client.post("/login", data={"password": password, "csrf_token": token, "next": "/conversations"})
    assert response.status_code == 302, response.get_data(as_text=True)
    return response


def logged_in_token(client) -> str:
    return csrf_token(client, "/simulator")


def concrete_path(rule) -> str:
    path = rule.rule
    for converter in re.findall(r"<([^>]+)>", path):
        kind = converter.split(":", 1)[0] if ":" in converter else "default"
        path = path.replace(f"<{converter}>", SAMPLE_VALUES.get(kind, "1"))
    return path


def all_routes(app):
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


@pytest.fixture
def app(make_app):
    return make_app(start_workers=False, dashboard_password=PASSWORD)


@pytest.fixture
def client(app):
    client = app.test_client()
    login(client)
    return client


def services(app):
    return app.extensions["endrigo"]


# ---- access ---------------------------------------------------------------------------------

def test_every_route_needs_login_except_the_public_allow_list(app):
    client = app.test_client()
    token = csrf_token(client)  # a valid token, so that it is the login check that refuses
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert PUBLIC_ROUTES - rules <= {"/upgrade-webhook"}, "the allow-list names routes that no longer exist"
    checked = 0
    for rule, method in all_routes(app):
        if rule.rule in PUBLIC_ROUTES:
            continue
        response = client.open(concrete_path(rule), method=method, headers={"X-CSRFToken": token})
        refused = response.status_code in (401, 403) or (
            response.status_code == 302 and response.headers["Location"].startswith("/login"))
        assert refused, f"{method} {rule.rule} answered {response.status_code} without login"
        checked += 1
    assert checked >= 15


def test_agents_are_refused_admin_routes_and_admins_are_not(app):
    """Every view marked @admin_only (found by walking the URL map) answers 403 to an agent."""
    from app.operators import accounts

    accounts.create(services(app).db, "agente", "agent", "senha-do-agente-1")
    agent = app.test_client()
    token = csrf_token(agent)
    assert agent.post("/login", data={"name": "agente", "password": "senha-do-agente-1",
                                      "csrf_token": token}).status_code == 302
    admin = app.test_client()
    login(admin)
    admin_only = [(rule, method) for rule, method in all_routes(app)
                  if getattr(app.view_functions[rule.endpoint], "dashboard_admin", False)]
    assert {"/system/advanced-status", "/system/realtime-status"} <= {rule.rule for rule, _ in admin_only}
    csrf = csrf_token(agent, "/conversations")
    for rule, method in admin_only:
        response = agent.open(concrete_path(rule), method=method, headers={"X-CSRFToken": csrf})
        assert response.status_code == 403, f"{method} {rule.rule} answered {response.status_code} to an agent"
        if method == "GET":
            assert admin.get(concrete_path(rule)).status_code == 200, rule.rule
    # Agents do use the conversations, the replies and the handoffs.
    assert agent.get("/conversations").status_code == 200 and agent.get("/handoffs").status_code == 200


def test_with_no_password_configured_private_routes_refuse_and_explain(make_app):
    app = make_app(start_workers=False)  # no DASHBOARD_PASSWORD
    client = app.test_client()
    for rule, method in all_routes(app):
        if rule.rule in PUBLIC_ROUTES or method != "GET" or rule.rule.startswith("/api/"):
            continue  # the API authenticates bearer tokens (401 without one): tests/test_api.py
        response = client.get(concrete_path(rule))
        assert response.status_code == 503, f"GET {rule.rule} answered {response.status_code}"
    page = client.get("/conversations")
    assert "DASHBOARD_PASSWORD" in page.get_data(as_text=True) and "text/html" in page.content_type
    assert client.get("/login").status_code == 503
    as_json = client.get("/stats.json")
    assert as_json.status_code == 503 and as_json.get_json()["error"] == "dashboard_password_unset"
    status_page = client.get("/")
    assert status_page.status_code == 200 and "DASHBOARD_PASSWORD" in status_page.get_data(as_text=True)


@pytest.mark.parametrize("path,headers", [
    ("/stats.json", {}), ("/stats", {"Accept": "application/json"}), ("/system/advanced-status", {}),
    ("/system/realtime-status", {}), ("/simulator/messages.json", {}),
])
def test_json_endpoints_answer_401_json_not_a_redirect(app, path, headers):
    response = app.test_client().get(path, headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {"error": "login_required", "message": "Faça login no painel."}


def test_html_pages_redirect_to_login_and_come_back(app):
    client = app.test_client()
    response = client.get("/conversations?q=ana")
    assert response.status_code == 302 and response.headers["Location"] == "/login?next=/conversations?q%3Dana"
    token = csrf_token(client)
    response = client.post("/login", data={"password": PASSWORD, "csrf_token": token, "next": "/conversations?q=ana"})
    assert response.headers["Location"] == "/conversations?q=ana"
    # An open redirect through ?next= is refused.
    client2 = app.test_client()
    token = csrf_token(client2)
    response = client2.post("/login", data={"password": PASSWORD, "csrf_token": token, "next": "//evil.example"})
    assert response.headers["Location"] == "/"


def test_login_sets_a_hardened_cookie_and_logout_ends_the_session(app):
    client = app.test_client()
    # Served over plain http while PUBLIC_BASE_URL is https: the page says where to log in.
    assert "https://bot.example.com/login" in client.get("/login").get_data(as_text=True)
    token = csrf_token(client)
    wrong = client.post("/login", data={"password": "nope", "csrf_token": token})
    assert wrong.status_code == 401 and "Nome ou senha incorretos" in wrong.get_data(as_text=True)
    response = client.post("/login", data={"password": PASSWORD, "csrf_token": token})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie  # PUBLIC_BASE_URL is https
    assert client.get("/stats.json").status_code == 200
    logout = client.post("/logout", data={"csrf_token": logged_in_token(client)})
    assert logout.status_code == 302
    assert client.get("/stats.json").status_code == 401


def test_cookie_is_not_secure_on_a_plain_http_base_url(make_app):
    app = make_app(start_workers=False, dashboard_password=PASSWORD, public_base_url="http://127.0.0.1:5000")
    cookie = login(app.test_client()).headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "Secure" not in cookie


def test_login_attempts_are_rate_limited_per_client_ip(app):
    client = app.test_client()
    token = csrf_token(client)
    attacker = {"REMOTE_ADDR": "203.0.113.7"}
    for _ in range(5):
        response = client.post("/login", data={"password": "guess", "csrf_token": token}, environ_base=attacker)
        assert response.status_code == 401
    blocked = client.post("/login", data={"password": PASSWORD, "csrf_token": token}, environ_base=attacker)
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    assert "Muitas tentativas" in blocked.get_data(as_text=True)
    # Another address is not affected.
    other = client.post("/login", data={"password": PASSWORD, "csrf_token": token},
                        environ_base={"REMOTE_ADDR": "198.51.100.1"})
    assert other.status_code == 302


# ---- CSRF and headers ------------------------------------------------------------------------

def test_forms_without_a_csrf_token_are_refused(app, client):
    with services(app).db.session() as s:
        user = User(phone="+5511987654321")
        s.add(user)
        s.flush()
        handoff = Handoff(user_id=user.id, reason="pediu humano", status="open")
        s.add(handoff)
        s.flush()
        handoff_id = handoff.id
    refused = client.post(f"/handoffs/{handoff_id}/close")
    assert refused.status_code == 400 and "Recarregue a página" in refused.get_data(as_text=True)
    refused_json = client.post("/simulator/messages", data={"text": "oi"}, headers={"Accept": "application/json"})
    assert refused_json.status_code == 400 and refused_json.get_json()["error"] == "csrf"
    assert app.test_client().post("/login", data={"password": PASSWORD}).status_code == 400
    with services(app).db.session() as s:
        assert s.get(Handoff, handoff_id).status == "open"


def test_twilio_webhooks_are_exempt_from_csrf(make_app, twilio_fake):
    app = make_app(start_workers=False, dashboard_password=PASSWORD)
    form = {"MessageSid": "SM" + "a" * 32, "AccountSid": twilio_fake.account_sid, "From": "whatsapp:+5511987654321",
            "To": "whatsapp:+14155238886", "Body": "Oi", "NumMedia": "0"}
    response = post_signed(app.test_client(), "/webhook/whatsapp", form, twilio_fake.auth_token)
    assert response.status_code == 200 and b"<Response/>" in response.data
    status = post_signed(app.test_client(), "/webhook/whatsapp/status",
                         {"MessageSid": "SM" + "b" * 32, "MessageStatus": "delivered"}, twilio_fake.auth_token)
    assert status.status_code == 200


@pytest.mark.parametrize("path", ["/", "/health", "/static/css/app.css", "/login", "/stats.json", "/upgrade-webhook"])
def test_security_headers_on_every_response(app, path):
    response = app.test_client().get(path)
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp and "media-src 'self' https:" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"


def test_private_pages_are_not_cached(client):
    assert client.get("/conversations").headers["Cache-Control"] == "no-store"
    assert client.get("/stats.json").headers["Cache-Control"] == "no-store"


def test_templates_have_no_inline_scripts_or_styles(app, client):
    for path in ("/", "/stats", "/conversations", "/leads", "/handoffs", "/simulator"):
        html = client.get(path).get_data(as_text=True)
        assert " style=" not in html and "<style" not in html, path
        assert not re.search(r"\son[a-z]+=", html), path
        for script in re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S):
            attrs, body = script
            assert 'src="' in attrs or 'type="application/json"' in attrs, f"inline script on {path}"


# ---- status page and system JSON ---------------------------------------------------------------

def test_status_page_shows_each_part_its_state_and_webhook_urls(make_app):
    app = make_app(start_workers=False, dashboard_password=PASSWORD)
    health = services(app).provider_health
    health.ok("storage")
    health.error("twilio", "HTTP 401 for whatsapp:+5511987654321 using token test-auth-token-0123456789abcdef")
    html = app.test_client().get("/").get_data(as_text=True)
    states = dict(re.findall(r'data-component="(\w+)" data-state="(\w+)"', html))
    assert states == {"database": "healthy", "twilio": "degraded", "openai": "offline", "elevenlabs": "offline",
                      "storage": "healthy", "realtime": "offline"}
    assert "Último erro" in html and "+55 11 9****-4321" in html
    assert "987654321" not in html and "test-auth-token-0123456789abcdef" not in html
    assert "https://bot.example.com/webhook/whatsapp<" in html
    assert "https://bot.example.com/webhook/whatsapp/status<" in html
    assert 'id="offline-banner"' in html and "Modo offline" in html


def test_status_page_without_public_base_url_uses_the_request_origin(make_app):
    app = make_app(start_workers=False, public_base_url=None, openai_api_key="sk-test-fake-0123456789")
    html = app.test_client().get("/", base_url="http://painel.local:8000").get_data(as_text=True)
    assert "http://painel.local:8000/webhook/whatsapp" in html and "PUBLIC_BASE_URL não está definida" in html
    assert 'id="offline-banner"' not in html
    assert 'data-component="openai" data-state="configured"' in html


def test_upgrade_webhook_lists_the_recommended_and_deprecated_urls(app):
    body = app.test_client().get("/upgrade-webhook").get_json()
    assert body["recommended"]["url"] == "https://bot.example.com/webhook/whatsapp"
    assert body["recommended"]["status"] == "recommended" and body["recommended"]["served"] is True
    assert body["status_callback"]["url"] == "https://bot.example.com/webhook/whatsapp/status"
    v2 = next(h for h in body["webhooks"] if h["path"] == "/webhook/whatsapp/v2")
    assert v2["status"] == "deprecated" and v2["served"] is True
    assert body["realtime"]["url"] == "https://bot.example.com/webhook/whatsapp/realtime"
    assert body["realtime"]["served"] is True and body["realtime"]["realtime_voice"] is False  # offline app
    assert [h["path"] for h in body["webhooks"]] == ["/webhook/whatsapp", "/webhook/whatsapp/status",
                                                     "/webhook/whatsapp/realtime", "/webhook/whatsapp/v2"]
    assert body["base_url_source"] == "PUBLIC_BASE_URL"


def test_advanced_status_shape(client):
    body = client.get("/system/advanced-status").get_json()
    assert body["version"] and body["python"].count(".") == 2
    assert body["libraries"]["flask"] and body["libraries"]["sqlalchemy"]
    assert body["queue"] == {"depth": 0}
    assert set(body["components"]) == {"database", "twilio", "openai", "elevenlabs", "storage", "realtime"}
    assert body["components"]["database"]["state"] == "healthy"
    config = body["config"]
    assert config["twilio"]["configured"] is True and config["twilio"]["auth_token_set"] is True
    assert config["twilio"]["phone_number"] == "+1 ******8886"  # masked by parsing: country kept, last four shown
    assert config["openai"]["configured"] is False and config["openai"]["model"]
    assert config["dashboard_password_set"] is True and config["mode"] == "offline"


def test_realtime_endpoints_without_a_key_say_why(client):
    status = client.get("/system/realtime-status").get_json()
    assert status["configured"] is False and status["reason"] and status["model"] == "gpt-realtime-2"
    assert status["sessions_today"] == 0 and status["latency_ms"] == {"p50": None, "p95": None}
    token = logged_in_token(client)
    response = client.post("/test/realtime-audio", headers={"X-CSRFToken": token})
    assert response.status_code == 503 and response.get_json()["error"] == "not_configured"
    assert "OPENAI_API_KEY" in response.get_json()["reason"]


def test_no_secret_appears_in_any_page_or_json(make_app, twilio_fake):
    secrets = {
        "twilio": twilio_fake.auth_token, "openai": "sk-proj-SECRETvalue0123456789abcdef",
        "elevenlabs": "xi-SECRET-eleven-0123456789", "password": "pw-SECRET-dashboard-987",
        "secret_key": "flask-SECRET-key-0123456789abcdef",
    }
    app = make_app(start_workers=False, openai_api_key=secrets["openai"], openai_base_url="http://127.0.0.1:9/v1",
                   elevenlabs_api_key=secrets["elevenlabs"], dashboard_password=secrets["password"],
                   secret_key=secrets["secret_key"])
    ids = seed_conversation(app)
    services(app).provider_health.error("openai", f"401 Incorrect API key provided: {secrets['openai']}")
    services(app).provider_health.error("elevenlabs", f"xi-api-key: {secrets['elevenlabs']} rejected")
    client = app.test_client()
    login(client, secrets["password"])
    values = {"user_id": ids["user"], "turn_id": ids["failed_turn"], "handoff_id": ids["handoff"],
              "message_id": ids["upload"]}
    pages = []
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.rule.startswith(("/static", "/media")):
            continue
        path = rule.rule
        for name, value in values.items():
            path = path.replace(f"<int:{name}>", str(value))
        path = path.replace("<phone>", "+5511987654321")  # the API (401 here: no token)
        assert "<" not in path, f"no sample value for {rule.rule}"
        for headers in ({}, {"Accept": "application/json"}):
            response = client.get(path, headers=headers)
            assert response.status_code < 500, path
            pages.append((path, response.data.decode(errors="replace")))
    assert len(pages) >= 24
    for path, text in pages:
        for name, secret in secrets.items():
            assert secret not in text, f"{name} secret leaked on {path}"


# ---- conversations -----------------------------------------------------------------------------

def seed_conversation(app) -> dict:
    """One WhatsApp user with text, voice and failed traffic; returns the ids tests need."""
    svc = services(app)
    stored = svc.storage.save(speech_like_ogg(1.0), "audio/ogg", ".ogg", base_url="https://bot.example.com")
    upload_dir = uploads_dir(svc.settings)
    upload_dir.mkdir(parents=True, exist_ok=True)
    (upload_dir / ("u" * 24 + ".ogg")).write_bytes(speech_like_ogg(1.0))
    base = utcnow() - dt.timedelta(hours=1)
    with svc.db.session() as s:
        user = User(phone="+5511987654321", profile_name="Maria Silva", message_count=3,
                    first_seen_at=base, last_seen_at=base + dt.timedelta(minutes=5))
        s.add(user)
        s.flush()
        ok_turn = Turn(user_id=user.id, status="answered", reply_kind="audio", created_at=base,
                       tool_calls=[{"name": "capture_lead", "ok": True, "error": None, "ms": 3.1},
                                   {"name": "search_knowledge", "ok": False, "error": "consulta vazia", "ms": 0.2}],
                       timings={"download": 120.0, "convert": 210.0, "transcribe": 812.0, "retrieve": 20.0,
                                "answer": 1500.0, "speak": 900.0, "store": 30.0, "send": 250.0,
                                "end_to_end": 3900.0})
        failed_turn = Turn(user_id=user.id, status="failed", error_kind="answer",
                           error="OpenAI timed out for +5511987654321", created_at=base + dt.timedelta(minutes=2),
                           timings={"retrieve": 15.0, "answer": 8000.0, "end_to_end": 8100.0})
        s.add_all([ok_turn, failed_turn])
        s.flush()

        def add(**kw):
            at = kw.pop("at")
            row = Message(user_id=user.id, created_at=base + dt.timedelta(seconds=at),
                          updated_at=base + dt.timedelta(seconds=at), **kw)
            s.add(row)
            s.flush()
            return row.id

        add(at=0, turn_id=ok_turn.id, direction="in", kind="audio", status="answered",
            media_url="https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
            media_type="audio/ogg", transcription="Quanto custa um site?", body="")
        add(at=5, turn_id=ok_turn.id, direction="out", kind="audio", status="read", part_index=0,
            media_url=stored.url, media_type="audio/ogg", body="Um site começa em dois mil reais.")
        add(at=6, turn_id=ok_turn.id, direction="out", kind="text", status="failed", part_index=1,
            error_code="63016", error="Outside the allowed window", body="Quer uma proposta?")
        add(at=120, turn_id=failed_turn.id, direction="in", kind="text", status="failed", body="E o prazo?")
        upload = add(at=125, direction="in", kind="audio", status="received", media_url="upload:" + "u" * 24 + ".ogg",
                     media_type="audio/ogg")
        handoff = Handoff(user_id=user.id, reason="quer falar com uma pessoa", status="open", opened_at=base)
        s.add(handoff)
        s.add(Lead(user_id=user.id, name="Maria Silva", interest="site institucional", email="maria@example.com",
                   phone="+5511987654321"))
        s.flush()
        return {"user": user.id, "ok_turn": ok_turn.id, "failed_turn": failed_turn.id, "handoff": handoff.id,
                "upload": upload, "media_key": stored.key}


def test_conversation_list_masks_phones_puts_waiting_first_and_searches(app, client):
    ids = seed_conversation(app)  # Maria: an open handoff, her last activity an hour ago
    with services(app).db.session() as s:
        for i in range(30):
            s.add(User(phone=f"+55219000{i:05d}", profile_name=f"Contato {i:02d}",
                       last_seen_at=utcnow() - dt.timedelta(minutes=i)))
    html = client.get("/conversations").get_data(as_text=True)
    assert "+55 11 9****-4321" in html and "987654321" not in html and "Maria Silva" in html
    cards = re.findall(r'data-user-id="(\d+)"', html)
    assert cards[0] == str(ids["user"])  # waiting for a person: first, although the oldest
    assert cards[1:4] == [str(i) for i in cards[1:4]] and "aguardando há" in html
    listed = client.get("/conversations.json").get_json()["conversations"]
    assert [c["name"] for c in listed[1:4]] == ["Contato 00", "Contato 01", "Contato 02"]  # then newest first
    assert listed[0]["handoff"]["waiting_seconds"] >= 3600 and listed[0]["unread"] is True
    by_name = client.get("/conversations?q=maria").get_data(as_text=True)
    assert re.findall(r'data-user-id="(\d+)"', by_name) == [str(ids["user"])]
    by_digits = client.get("/conversations.json?q=4321").get_json()["conversations"]
    assert [c["name"] for c in by_digits] == ["Maria Silva"]
    waiting = client.get("/conversations.json?view=waiting").get_json()["conversations"]
    assert [c["id"] for c in waiting] == [ids["user"]]
    assert client.get("/conversations.json?view=mine").get_json()["conversations"] == []  # nobody took it
    wildcard = client.get("/conversations?q=%25").get_data(as_text=True)
    assert "Nenhuma conversa encontrada" in wildcard and 'id="inbox-empty"' in wildcard
    client.get(f"/conversations/{ids['user']}")  # opening it marks it read for this operator
    assert client.get("/conversations.json").get_json()["conversations"][0]["unread"] is False


def test_transcript_shows_both_sides_audio_timings_and_delivery(app, client):
    ids = seed_conversation(app)
    html = client.get(f"/conversations/{ids['user']}").get_data(as_text=True)
    assert "+55 11 9****-4321" in html and "987654321" not in html
    order = [html.index(text) for text in ("Quanto custa um site?", "Um site começa em dois mil reais.",
                                           "Quer uma proposta?", "E o prazo?")]
    assert order == sorted(order)
    players = re.findall(r'<audio controls preload="metadata" src="([^"]+)"', html)
    assert len(players) == 2  # our voice reply and the simulator upload; never Twilio's URL
    assert players[0].startswith("/media/") and players[1] == f"/audio/inbound/{ids['upload']}"
    assert "api.twilio.com" not in html
    audio = client.get(players[0])
    assert audio.status_code == 200 and audio.mimetype == "audio/ogg" and audio.data[:4] == b"OggS"
    upload = client.get(players[1])
    assert upload.status_code == 200 and upload.mimetype == "audio/ogg" and upload.data[:4] == b"OggS"
    assert 'data-stage="transcribe"' in html and "812 ms" in html and "3.9 s" in html
    assert "63016" in html and "falhou" in html and "lida" in html
    assert "Tentar de novo" in html and html.count("Tentar de novo") == 1
    assert "+55 11 9****-4321" in html and "OpenAI timed out for +55 11 9****-4321" in html
    assert "Atendimento humano aberto" in html and "Lead:" in html
    assert "capture_lead" in html and 'title="consulta vazia"' in html


def test_expired_audio_links_are_signed_again_for_the_operator(make_app):
    app = make_app(start_workers=False, dashboard_password=PASSWORD, media_url_ttl_seconds=1)
    client = app.test_client()
    login(client)
    ids = seed_conversation(app)
    time.sleep(2.2)
    html = client.get(f"/conversations/{ids['user']}").get_data(as_text=True)
    src = re.findall(r'<audio controls preload="metadata" src="(/media/[^"]+)"', html)[0]
    assert client.get(src).status_code == 200


def test_retrying_a_failed_turn(app, client):
    ids = seed_conversation(app)
    token = logged_in_token(client)
    response = client.post(f"/turns/{ids['failed_turn']}/retry", data={"csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"].endswith(
        f"/conversations/{ids['user']}#turn-{ids['failed_turn']}")
    with services(app).db.session() as s:
        assert s.get(Turn, ids["failed_turn"]).status == "waiting_retry"
    again = client.post(f"/turns/{ids['failed_turn']}/retry", data={"csrf_token": token}, follow_redirects=True)
    assert "não está mais com falha" in again.get_data(as_text=True)
    assert client.post("/turns/999999/retry", data={"csrf_token": token}).status_code == 404


# ---- leads and handoffs ------------------------------------------------------------------------

def test_leads_page(app, client):
    seed_conversation(app)
    html = client.get("/leads").get_data(as_text=True)
    assert "Maria Silva" in html and "site institucional" in html and "maria@example.com" in html


def test_an_operator_closes_a_handoff(app, client):
    ids = seed_conversation(app)
    html = client.get("/handoffs").get_data(as_text=True)
    assert "quer falar com uma pessoa" in html and f'id="handoff-{ids["handoff"]}"' in html
    token = logged_in_token(client)
    response = client.post(f"/handoffs/{ids['handoff']}/close", data={"csrf_token": token, "next": "/handoffs"},
                           follow_redirects=True)
    assert "o robô volta a responder" in response.get_data(as_text=True)
    with services(app).db.session() as s:
        handoff = s.get(Handoff, ids["handoff"])
        assert handoff.status == "closed" and handoff.closed_by == "admin" and handoff.closed_at is not None
    again = client.post(f"/handoffs/{ids['handoff']}/close", data={"csrf_token": token}, follow_redirects=True)
    assert "já estava encerrado" in again.get_data(as_text=True)
    assert client.post("/handoffs/999999/close", data={"csrf_token": token}).status_code == 404
    closed_list = client.get("/handoffs?status=closed").get_data(as_text=True)
    assert "admin" in closed_list


# ---- simulator ---------------------------------------------------------------------------------

def poll_until_reply(client, after: int = 0, timeout: float = 15.0) -> list[dict]:
    messages: list[dict] = []

    def reply_arrived():
        body = client.get(f"/simulator/messages.json?after={after}").get_json()
        messages[:] = body["messages"]
        return any(m["direction"] == "out" for m in messages) and not body["waiting"]

    wait_for(reply_arrived, timeout=timeout, interval=0.1)
    return messages


def test_simulator_text_goes_through_the_pipeline_offline(make_app):
    app = make_app(dashboard_password=PASSWORD)  # workers on, no OpenAI key: offline responder
    client = app.test_client()
    login(client)
    token = logged_in_token(client)
    response = client.post("/simulator/messages", data={"text": "Quais serviços vocês oferecem?"},
                           headers={"X-CSRFToken": token, "Accept": "application/json"})
    assert response.status_code == 202 and response.get_json()["ok"] is True
    messages = poll_until_reply(client)
    assert messages[0]["direction"] == "in" and messages[0]["body"] == "Quais serviços vocês oferecem?"
    reply = next(m for m in messages if m["direction"] == "out")
    assert "• Tráfego pago" in reply["body"] and reply["status"] == "delivered"
    # Nothing went to Twilio, and the conversation is a simulator user.
    with services(app).db.session() as s:
        user = s.scalar(select(User).where(User.id == response.get_json()["user_id"]))
        assert user.channel == "simulator" and user.phone.startswith("sim:")
    # The same operator in another browser (or after logging in again) has the same conversation.
    other = app.test_client()
    login(other)
    assert [m["id"] for m in other.get("/simulator/messages.json").get_json()["messages"]] == \
        [m["id"] for m in messages]


def test_simulator_refuses_empty_input_in_portuguese(client):
    token = logged_in_token(client)
    response = client.post("/simulator/messages", data={"text": "  "},
                           headers={"X-CSRFToken": token, "Accept": "application/json"})
    assert response.status_code == 400 and response.get_json() == {
        "ok": False, "error": "Escreva uma mensagem ou envie um áudio."}
    bad_file = client.post("/simulator/messages", data={"audio": (io.BytesIO(b"not audio"), "x.ogg")},
                           headers={"X-CSRFToken": token, "Accept": "application/json"},
                           content_type="multipart/form-data")
    assert bad_file.status_code == 400 and "áudio" in bad_file.get_json()["error"]


def test_simulator_voice_note_upload_is_playable(app, client):
    token = logged_in_token(client)
    response = client.post("/simulator/messages", data={"audio": (io.BytesIO(speech_like_ogg(1.0)), "nota.ogg")},
                           headers={"X-CSRFToken": token, "Accept": "application/json"},
                           content_type="multipart/form-data")
    assert response.status_code == 202
    messages = client.get("/simulator/messages.json").get_json()["messages"]
    assert messages[0]["kind"] == "audio" and messages[0]["audio_url"].startswith("/audio/inbound/")
    played = client.get(messages[0]["audio_url"])
    assert played.status_code == 200 and played.data[:4] == b"OggS"
    reset = client.post("/simulator/reset", data={"csrf_token": token})
    assert reset.status_code == 302
    assert client.get("/simulator/messages.json").get_json()["messages"] == []


# ---- stats endpoints -----------------------------------------------------------------------------

def test_stats_json_and_page(app, client):
    seed_conversation(app)
    body = client.get("/stats.json").get_json()
    assert body["users"]["total"] == 1
    assert body["messages"]["last_30_days"]["total"] == 5
    assert body["delivery"]["by_status"]["failed"] == 1 and body["delivery"]["errors"][0]["code"] == "63016"
    assert body["latency"]["end_to_end"] == {"count": 1, "p50": 3900.0, "p95": 3900.0}
    assert body["turns"]["errors_by_kind"] == {"answer": 1}
    assert body["leads"]["total"] == 1 and body["handoffs"]["open"] == 1
    assert client.get("/stats", headers={"Accept": "application/json"}).get_json().keys() == body.keys()
    html = client.get("/stats").get_data(as_text=True)
    for canvas in ("chart-messages", "chart-delivery", "chart-latency", "chart-errors"):
        assert f'id="{canvas}"' in html
    assert 'id="stats-data"' in html and "chart.umd.min.js" in html


def test_vendored_assets_are_served_with_their_licenses(app):
    client = app.test_client()
    for path in ("vendor/bootstrap/bootstrap.min.css", "vendor/bootstrap/bootstrap.bundle.min.js",
                 "vendor/bootstrap/LICENSE", "vendor/chart.js/chart.umd.min.js", "vendor/chart.js/LICENSE.md",
                 "vendor/feather-icons/feather.min.js", "vendor/feather-icons/LICENSE",
                 "css/app.css", "js/app.js", "js/stats.js", "js/simulator.js"):
        response = client.get("/static/" + path)
        assert response.status_code == 200, path
        response.close()
    html = client.get("/").get_data(as_text=True)
    assert "cdn" not in html.lower() and "https://" not in re.sub(r"https://bot\.example\.com", "", html)
