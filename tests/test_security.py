"""Security, through the whole app: forged and replayed webhooks, media tokens, login on every
private route, stored XSS escaped on every page, and a full run's INFO log free of secrets and
full phone numbers."""
from __future__ import annotations

import io
import logging
import re
import time

import pytest
from sqlalchemy import select

from app.db import utcnow
from app.inbox import privacy
from app.logging import RedactingFormatter
from app.models import Handoff, Lead, LimitEvent, Message, User
from tests.conftest import post_signed, sign, wait_for
from tests.fakes import audio_samples
from tests.web.dashboard.test_dashboard import PASSWORD, all_routes, concrete_path, csrf_token, login

PATH = "/webhook/whatsapp"
XSS_BODY = '<script>alert("body")</script>'
XSS_NAME = '"><img src=x onerror=alert(1)>'
US = "+14155550123"


@pytest.fixture
def app(make_app):
    return make_app(start_workers=False, dashboard_password=PASSWORD)


# ---- webhooks ------------------------------------------------------------------------------

def test_forged_signatures_are_refused(app, twilio_fake):
    client = app.test_client()
    form = twilio_fake.inbound_form()
    assert client.post(PATH, data=form).status_code == 403
    assert client.post(PATH, data=form, headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}).status_code == 403
    wrong_key = sign("https://bot.example.com" + PATH, form, "another-auth-token-0000000000")
    assert client.post(PATH, data=form, headers={"X-Twilio-Signature": wrong_key}).status_code == 403
    status = {"MessageSid": "SM" + "c" * 32, "MessageStatus": "delivered"}
    assert client.post("/webhook/whatsapp/status", data=status, headers={"X-Twilio-Signature": wrong_key}).status_code == 403
    with app.extensions["endrigo"].db.session() as session:
        assert session.scalar(select(Message)) is None


def test_a_valid_signature_replayed_with_a_changed_body_is_refused(app, twilio_fake):
    client = app.test_client()
    form = twilio_fake.inbound_form(body="Oi")
    signature = sign("https://bot.example.com" + PATH, form, twilio_fake.auth_token)
    assert client.post(PATH, data=form, headers={"X-Twilio-Signature": signature}).status_code == 200
    for change in ({"Body": "Transfira tudo"}, {"From": "whatsapp:+5511988887777"},
                   {"MessageSid": "SM" + "d" * 32}, {"Extra": "1"}):
        replay = dict(form, **change)
        assert client.post(PATH, data=replay, headers={"X-Twilio-Signature": signature}).status_code == 403
    # The same request replayed unchanged stores nothing new (MessageSid is the idempotency key).
    assert client.post(PATH, data=form, headers={"X-Twilio-Signature": signature}).status_code == 200
    with app.extensions["endrigo"].db.session() as session:
        assert len(session.scalars(select(Message)).all()) == 1


# ---- media tokens --------------------------------------------------------------------------

def test_media_tokens_expired_tampered_or_outside_the_folder_are_refused(app, monkeypatch):
    client = app.test_client()
    storage = app.extensions["endrigo"].storage
    stored = storage.save(b"OggS" + b"m" * 40, "audio/ogg", ".ogg")
    good = stored.url.split("/media/", 1)[1]
    assert client.get("/media/" + good).status_code == 200
    tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    assert client.get("/media/" + tampered).status_code == 403
    real_time = time.time
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: real_time() - storage.ttl_seconds - 60)
        expired = storage.make_token(stored.key)
    assert client.get("/media/" + expired).status_code == 410
    for name in ("../secret_key", "../endrigo.db", "/etc/passwd", stored.key + "/../x"):
        assert client.get("/media/" + storage.make_token(name)).status_code == 403


# ---- login on every private route ----------------------------------------------------------

def test_every_private_route_including_the_trust_ones_refuses_without_login(app):
    client = app.test_client()
    token = csrf_token(client)
    rules = {rule.rule for rule, _ in all_routes(app)}
    assert {"/trust", "/users/<int:user_id>/lift-limits", "/users/<int:user_id>/export.json"} <= rules
    for rule, method in all_routes(app):
        if rule.rule.startswith(("/trust", "/users/")):
            response = client.open(concrete_path(rule), method=method, headers={"X-CSRFToken": token})
            assert response.status_code in (302, 401, 403), (rule.rule, response.status_code)
            assert b"export" not in response.data.lower() or response.status_code == 302


# ---- stored XSS -----------------------------------------------------------------------------

def test_stored_xss_in_body_and_profile_name_is_escaped_on_every_page(app, twilio_fake):
    services = app.extensions["endrigo"]
    form = twilio_fake.inbound_form(body=XSS_BODY, profile_name=XSS_NAME)
    assert post_signed(app.test_client(), PATH, form, twilio_fake.auth_token).status_code == 200
    with services.db.session() as session:
        user = session.scalar(select(User))
        user.erasure_requested_at = user.opted_out_at = utcnow()
        user_id = user.id
        session.add_all([
            Lead(user_id=user_id, name=XSS_NAME, interest=XSS_BODY, email="a@example.com"),
            Handoff(user_id=user_id, reason=XSS_BODY),
            LimitEvent(user_id=user_id, limit_name="messages_per_day", window_key="x", created_at=utcnow()),
            Message(user_id=user_id, direction="out", kind="text", body=XSS_BODY, status="held", error=XSS_BODY,
                    part_index=0),
        ])
    client = app.test_client()
    login(client)
    pages = ["/", "/conversations", f"/conversations/{user_id}", "/leads", "/handoffs?status=all", "/trust",
             "/stats", "/conversations?q=" + XSS_NAME]
    for page in pages:
        html = client.get(page).get_data(as_text=True)
        assert "<script>alert" not in html and "<img src=x" not in html, page
    transcript = client.get(f"/conversations/{user_id}").get_data(as_text=True)
    assert "&lt;script&gt;alert(&#34;body&#34;)&lt;/script&gt;" in transcript  # shown, as text


# ---- the log of a full run ------------------------------------------------------------------

def test_a_full_run_logs_no_secret_and_no_full_phone_number_at_info(make_app, twilio_fake, openai_fake,
                                                                   elevenlabs_fake):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(levelname)s [%(name)s] %(message)s"))  # the app's formatter
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        app = make_app(openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url,
                       elevenlabs_api_key=elevenlabs_fake.api_key, elevenlabs_base_url=elevenlabs_fake.base_url,
                       media_allowed_hosts=("127.0.0.1",), dashboard_password=PASSWORD, log_level="INFO",
                       retry_backoff_seconds=(0.05,), openai_max_retries=0)
        services = app.extensions["endrigo"]
        client = app.test_client()
        users = ["whatsapp:+5511999990001", "whatsapp:" + US]
        forms = [
            twilio_fake.inbound_form(from_=users[0], body="Quais serviços vocês oferecem?"),
            twilio_fake.inbound_form(from_=users[1], body=f"my number is {US}", profile_name="John"),
            twilio_fake.inbound_form(from_=users[0], media=(audio_samples.speech_like_ogg(2.0, "24k"), "audio/ogg"),
                                     body="", MessageType="audio"),
        ]
        openai_fake.fail_next(401, path_contains="/v1/responses")  # an error that quotes the key
        twilio_fake.fail_sends(500, times=1)
        # A refusal whose text quotes the number (Twilio's 21211 does): logged with the turn's failure.
        twilio_fake.fail_sends(400, code=21211, message=f"Invalid 'To' Phone Number: whatsapp:{US}", times=1)
        for form in forms:
            assert post_signed(client, PATH, form, twilio_fake.auth_token).status_code == 200
            wait_for(lambda: _settled(services, form["MessageSid"]), timeout=30)
        for text in ("SAIR", "Oi?", "VOLTAR", "Apagar meus dados"):
            form = twilio_fake.inbound_form(from_=users[1], body=text)
            post_signed(client, PATH, form, twilio_fake.auth_token)
            wait_for(lambda: _settled(services, form["MessageSid"]), timeout=30)
        sent = twilio_fake.sent[-1]
        url, callback, headers = twilio_fake.status_callback(sent["sid"], "undelivered", 63016, "outside window")
        client.post(url.replace("https://bot.example.com", ""), data=callback, headers=headers)
        token = csrf_token(client)
        client.post("/login", data={"password": "wrong-" + PASSWORD, "csrf_token": token})
        login(client)
        client.get("/trust")
        us_user = privacy.find_user(services.db, US)
        privacy.erase_user(services, us_user, "cli")
        services.inbox.shutdown(wait=True)
    finally:
        root.removeHandler(handler)
    log = stream.getvalue()
    assert "turn" in log and "opted out" in log and "erased" in log  # the run did log its story
    secrets = [twilio_fake.auth_token, openai_fake.api_key, elevenlabs_fake.api_key, PASSWORD,
               "test-secret-key-123456", app.config["SECRET_KEY"]]
    for secret in secrets:
        assert secret not in log
    for number in ("5511999990001", US[1:], "4155550123", "14155238886"):
        assert number not in log, number
    assert not re.search(r"\+\d{10,}", log), re.search(r"\+\d{10,}", log)


def _settled(services, sid):
    with services.db.session() as session:
        status = session.scalar(select(Message.status).where(Message.provider_sid == sid))
    return status in ("answered", "failed", "ignored", "limited")
