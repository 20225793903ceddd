"""Configuration, health, status callbacks, message splitting and log redaction."""
from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from app.channels.twilio.outbound import split_message
from app.config import ConfigError, Settings, boot_warnings, normalize_whatsapp_number
from app.models import Message
from app.redaction import mask_phone, redact, register_secret
from tests.conftest import post_signed, wait_for


@pytest.mark.parametrize("raw", ["14155238886", "+14155238886", "whatsapp:+14155238886", " +1 (415) 523-8886 "])
def test_phone_number_is_normalised_at_boot(raw):
    assert Settings.from_env(env={"TWILIO_PHONE_NUMBER": raw}).twilio_phone_number == "whatsapp:+14155238886"
    assert normalize_whatsapp_number(raw) == "whatsapp:+14155238886"


@pytest.mark.parametrize("raw", ["hello", "whatsapp:+", "+0123", "123"])
def test_a_value_that_is_not_a_phone_number_stops_start_up_naming_the_variable(raw):
    with pytest.raises(ConfigError, match="TWILIO_PHONE_NUMBER"):
        Settings.from_env(env={"TWILIO_PHONE_NUMBER": raw})


def test_other_bad_values_name_their_variable():
    with pytest.raises(ConfigError, match="WORKERS"):
        Settings.from_env(env={"WORKERS": "many"})
    with pytest.raises(ConfigError, match="MEDIA_BACKEND"):
        Settings.from_env(env={"MEDIA_BACKEND": "ftp"})
    with pytest.raises(ConfigError, match="GCS_BUCKET_NAME"):
        Settings.from_env(env={"MEDIA_BACKEND": "gcs"})


def test_postgres_urls_use_psycopg2():
    settings = Settings.from_env(env={"DATABASE_URL": "postgres://u:p@db.example.com/x"})
    assert settings.database_url == "postgresql+psycopg2://u:p@db.example.com/x"


def test_assistant_id_and_unsigned_webhooks_warn_at_start(make_app, caplog):
    with caplog.at_level(logging.WARNING):
        make_app(start_workers=False, assistant_id="asst_123", twilio_validate_signature=False)
    text = caplog.text
    assert "Assistants API was shut down on 2026-08-26" in text and "documents/persona.md" in text
    assert "TWILIO_VALIDATE_SIGNATURE=false" in text
    warnings = boot_warnings(Settings.from_env(env={}))
    assert any("OFFLINE MODE" in w for w in warnings)


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


def _sent_reply(app, twilio_fake):
    client = app.test_client()
    post_signed(client, "/webhook/whatsapp", twilio_fake.inbound_form(body="Oi"), twilio_fake.auth_token)
    return wait_for(lambda: twilio_fake.sent and twilio_fake.sent[0])


def test_status_callbacks_update_the_outbound_row_in_order(make_app, twilio_fake):
    app = make_app()
    sent = _sent_reply(app, twilio_fake)
    assert sent["status_callback"].startswith("https://bot.example.com/webhook/whatsapp/status?row=")
    client = app.test_client()

    def status_of():
        with app.extensions["endrigo"].db.session() as session:
            return session.scalar(select(Message).where(Message.provider_sid == sent["sid"]))

    wait_for(lambda: status_of() is not None)
    for status in ("sent", "delivered", "read", "sent"):  # the late "sent" must not win
        form = {"MessageSid": sent["sid"], "MessageStatus": status, "AccountSid": twilio_fake.account_sid}
        assert post_signed(client, "/webhook/whatsapp/status", form, twilio_fake.auth_token).status_code == 200
    assert status_of().status == "read"
    unsigned = client.post("/webhook/whatsapp/status", data={"MessageSid": sent["sid"], "MessageStatus": "failed"})
    assert unsigned.status_code == 403
    unknown = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered"}
    assert post_signed(client, "/webhook/whatsapp/status", unknown, twilio_fake.auth_token).status_code == 200


def test_failed_delivery_records_the_error_code(make_app, twilio_fake):
    app = make_app()
    sent = _sent_reply(app, twilio_fake)
    wait_for(lambda: _row(app, sent["sid"]) is not None)
    form = {"MessageSid": sent["sid"], "MessageStatus": "undelivered", "ErrorCode": "63016",
            "ErrorMessage": "Outside the allowed window"}
    post_signed(app.test_client(), "/webhook/whatsapp/status", form, twilio_fake.auth_token)
    row = _row(app, sent["sid"])
    assert (row.status, row.error_code) == ("undelivered", "63016")


def _row(app, sid):
    with app.extensions["endrigo"].db.session() as session:
        return session.scalar(select(Message).where(Message.provider_sid == sid))


def test_split_prefers_paragraphs_then_sentences_then_words():
    paragraph = "Frase curta número um. " * 40  # ~920 chars
    parts = split_message(paragraph + "\n\n" + paragraph + "\n\n" + paragraph)
    assert len(parts) == 3 and all(p.strip() == paragraph.strip() for p in parts)
    one_long_paragraph = "Esta é uma frase que termina aqui. " * 100  # 3,500 chars, no blank lines
    parts = split_message(one_long_paragraph)
    assert all(len(p) <= 1600 for p in parts) and all(p.endswith(".") for p in parts)
    assert " ".join(parts) == one_long_paragraph.strip()
    no_punctuation = "palavra " * 600
    parts = split_message(no_punctuation)
    assert all(len(p) <= 1600 for p in parts) and " ".join(parts) == no_punctuation.strip()
    assert split_message("") == [] and split_message("oi") == ["oi"]
    assert all(len(p) <= 1600 for p in split_message("x" * 5000))


def test_logs_never_show_secrets_or_full_phone_numbers():
    register_secret("my-very-secret-token")
    line = redact("auth my-very-secret-token from whatsapp:+5511987654321 key sk-proj-abcdefghijklmnop")
    assert "my-very-secret-token" not in line and "sk-proj-abcdefghijklmnop" not in line
    assert "+5511987654321" not in line and "4321" in line
    assert mask_phone("+5511987654321") == "+55 11 9****-4321"


def test_every_environment_variable_read_is_documented_in_env_example():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    read = set(re.findall(r'env(?:\.get)?\(\s*(?:env,\s*)?"([A-Z_]+)"', (root / "app/config.py").read_text()))
    read |= set(re.findall(r'_(?:str|int|float)\(env, "([A-Z_]+)"', (root / "app/config.py").read_text()))
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (root / ".env.example").read_text(), re.M))
    assert read and read <= documented, f"undocumented: {sorted(read - documented)}"


def test_a_status_callback_that_beats_the_recorded_sid_still_finds_its_row(make_app, twilio_fake):
    """Twilio may call back before we stored the SID it gave us: the row id in the URL finds it."""
    from app.channels.outbox import _record_sent
    from app.db import utcnow
    from app.models import User

    app = make_app(start_workers=False)
    services = app.extensions["endrigo"]
    with services.db.session() as session:
        user = User(phone="+5511912345678", first_seen_at=utcnow(), last_seen_at=utcnow())
        session.add(user)
        session.flush()
        row = Message(user_id=user.id, direction="out", channel="whatsapp", kind="text", body="oi",
                      status="sending", part_index=0)
        session.add(row)
        session.flush()
        row_id = row.id
    sid = "SM" + "7" * 32
    callback = services.status_callback_url(row_id)
    path = callback.replace("https://bot.example.com", "")
    form = {"MessageSid": sid, "MessageStatus": "delivered", "AccountSid": twilio_fake.account_sid}
    assert post_signed(app.test_client(), path, form, twilio_fake.auth_token).status_code == 200
    assert (_row(app, sid).id, _row(app, sid).status) == (row_id, "delivered")
    # Our own bookkeeping, arriving later with Twilio's first answer ("queued"), keeps the news.
    _record_sent(services, row_id, sid, "queued")
    assert _row(app, sid).status == "delivered"
    # A forged row id is useless: the signature covers the query string.
    forged = app.test_client().post(path.replace(f"row={row_id}", f"row={row_id + 1}"), data=form,
                                    headers={"X-Twilio-Signature": twilio_fake.sign(callback, form)})
    assert forged.status_code == 403
