"""LGPD: export and erase (CLI and dashboard), the erasure request, RETENTION_DAYS, the trust page."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, select

from app.clients.storage import GCSStorage
from app.db import utcnow
from app.inbox import maintenance
from app.models import Handoff, Lead, LimitEvent, Message, Notification, OperatorAction, Turn, User
from app.operators import audit
from app.pipeline import notices
from tests.clients.test_storage import BUCKET, gcs_emulator, gcs_settings, signing_credentials  # noqa: F401 - fixtures
from tests.conftest import post_signed
from tests.web.dashboard.test_dashboard import PASSWORD, csrf_token, login

PHONE = "+5511987654321"


def q(app, stmt):
    with app.extensions["endrigo"].db.session() as session:
        return session.scalar(stmt)


@pytest.fixture
def app(make_app):
    return make_app(start_workers=False, dashboard_password=PASSWORD)


def seed(app, phone=PHONE, days_ago: float = 0) -> int:
    """A user with a conversation: a voice note with its transcription, our voice reply (a real
    file in local storage), a lead, a handoff, a limit event and an operator action."""
    services = app.extensions["endrigo"]
    when = utcnow() - dt.timedelta(days=days_ago)
    stored = services.storage.save(b"OggS" + b"x" * 64, "audio/ogg", ".ogg")
    with services.db.session() as session:
        user = User(phone=phone, wa_id=phone[1:], profile_name="Maria Silva", first_seen_at=when, last_seen_at=when)
        session.add(user)
        session.flush()
        turn = Turn(user_id=user.id, status="answered", reply_text="Olá Maria", created_at=when)
        session.add(turn)
        session.flush()
        session.add_all([
            Message(user_id=user.id, turn_id=turn.id, direction="in", kind="audio", status="answered",
                    body="", transcription="quero saber do curso", media_url="https://api.twilio.com/x",
                    created_at=when),
            Message(user_id=user.id, turn_id=turn.id, direction="out", kind="audio", status="delivered",
                    body="Olá Maria", media_url=stored.url, part_index=0, created_at=when),
            Lead(user_id=user.id, name="Maria Silva", interest="curso", email="maria@example.com", phone=phone),
            handoff := Handoff(user_id=user.id, reason="quer falar com humano", status="closed"),
            LimitEvent(user_id=user.id, limit_name="messages_per_day", window_key="2026-12-01"),
        ])
        session.flush()
        session.add(Notification(handoff_id=handoff.id, channel="webhook", target="webhook",
                                 text="Maria pediu atendimento"))
        user_id = user.id
    audit.record(services.db, "ana", audit.REPLY, user_id=user_id, detail={"text": "Oi Maria, tudo bem?"})
    return user_id, stored.key


def test_cli_export_prints_everything_about_the_user_as_json(app):
    user_id, _key = seed(app)
    result = app.test_cli_runner().invoke(args=["users", "export", "whatsapp:+55 (11) 98765-4321"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["profile"]["phone"] == PHONE and data["profile"]["profile_name"] == "Maria Silva"
    assert [m["transcription"] for m in data["messages"] if m["direction"] == "in"] == ["quero saber do curso"]
    assert data["leads"][0]["email"] == "maria@example.com"
    assert data["handoffs"][0]["reason"] == "quer falar com humano"
    assert data["operator_actions"][0]["detail"] == {"text": "Oi Maria, tudo bem?"}
    assert q(app, select(func.count()).select_from(OperatorAction).where(OperatorAction.action == "export")) == 1


def test_cli_export_of_an_unknown_number_is_a_clear_error(app):
    result = app.test_cli_runner().invoke(args=["users", "export", "+5511000000000"])
    assert result.exit_code == 1 and "no user" in result.output


def test_cli_erase_needs_yes_then_deletes_and_anonymises(app):
    user_id, key = seed(app)
    services = app.extensions["endrigo"]
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["users", "erase", PHONE])
    assert refused.exit_code == 2 and q(app, select(func.count()).select_from(Message)) == 2
    result = runner.invoke(args=["users", "erase", PHONE, "--yes"])
    assert result.exit_code == 0, result.output
    assert services.storage.path_for(key) is None  # the voice file is gone
    for model in (Message, Turn, Lead, Handoff, LimitEvent, Notification):
        assert q(app, select(func.count()).select_from(model)) == 0, model.__name__
    with services.db.session() as session:
        user = session.get(User, user_id)
        assert (user.phone, user.wa_id, user.profile_name) == (f"erased:{user_id}", None, None)
        actions = session.scalars(select(OperatorAction).order_by(OperatorAction.id)).all()
    assert actions[0].detail == {"erased": True}  # the reply's text is gone from the trail
    erase = actions[-1]
    assert erase.action == "erase" and erase.detail["messages"] == 2 and erase.detail["media_files"] == 1
    assert "98765" not in json.dumps(erase.detail) and "Maria" not in json.dumps(erase.detail)
    assert runner.invoke(args=["users", "erase", PHONE, "--yes"]).exit_code == 1  # nobody left by that number


def test_erase_deletes_voice_files_on_gcs(gcs_settings, signing_credentials):  # noqa: F811
    store = GCSStorage(gcs_settings(), signing_credentials=signing_credentials)
    stored = store.save(b"OggS-erase-me", "audio/ogg", ".ogg")
    assert store.key_for_url(stored.url) == stored.key
    assert store.delete(stored.key) and store.bucket.get_blob(stored.key) is None
    assert not store.delete(stored.key)
    assert store.key_for_url(f"https://storage.googleapis.com/{BUCKET}/../etc/passwd") is None


def test_apagar_meus_dados_is_answered_and_shown_to_operators(app, twilio_fake):
    services = app.extensions["endrigo"]
    form = twilio_fake.inbound_form(from_="whatsapp:" + PHONE, body="Apagar meus dados!")
    assert post_signed(app.test_client(), "/webhook/whatsapp", form, twilio_fake.auth_token).status_code == 200
    user_id = q(app, select(User.id).where(User.phone == PHONE))
    services.inbox.drain(user_id)
    assert [m["body"] for m in twilio_fake.sent] == [notices.ERASURE_REQUESTED]
    assert q(app, select(User.erasure_requested_at).where(User.id == user_id)) is not None
    client = app.test_client()
    login(client)
    page = client.get("/trust").get_data(as_text=True)
    assert 'id="erasure-requests"' in page and PHONE in page  # the admin needs the number for the CLI
    assert "Pedido de exclusão" in client.get(f"/conversations/{user_id}").get_data(as_text=True)


def test_retention_days_deletes_old_conversation_content_in_the_hourly_sweep(make_app):
    app = make_app(start_workers=False, retention_days=30)
    old_user, old_key = seed(app, phone="+5511911110000", days_ago=40)
    new_user, new_key = seed(app, phone="+5511922220000", days_ago=1)
    services = app.extensions["endrigo"]
    maintenance.hourly(services)
    assert q(app, select(func.count()).select_from(Message).where(Message.user_id == old_user)) == 0
    assert q(app, select(func.count()).select_from(Turn).where(Turn.user_id == old_user)) == 0
    assert services.storage.path_for(old_key) is None
    assert q(app, select(func.count()).select_from(Message).where(Message.user_id == new_user)) == 2
    assert services.storage.path_for(new_key) is not None


def test_without_retention_days_nothing_is_deleted(app):
    seed(app, days_ago=4000)
    maintenance.hourly(app.extensions["endrigo"])
    assert q(app, select(func.count()).select_from(Message)) == 2


def test_trust_page_lift_with_csrf_and_the_export_download(app):
    user_id, _key = seed(app)
    with app.extensions["endrigo"].db.session() as session:
        session.get(User, user_id).opted_out_at = utcnow()
    client = app.test_client()
    login(client)
    page = client.get("/trust").get_data(as_text=True)
    assert "mensagens por dia" in page and 'id="opted-out"' in page and "+55 11 9****-4321" in page
    assert PHONE not in page.replace('id="erasure-requests"', "")  # masked outside the erasure list
    assert client.post(f"/users/{user_id}/lift-limits").status_code == 400  # no CSRF token
    token = csrf_token(client, "/trust")
    response = client.post(f"/users/{user_id}/lift-limits", data={"csrf_token": token})
    assert response.status_code == 302
    assert q(app, select(LimitEvent.lifted_at)) is not None
    assert q(app, select(OperatorAction.action).where(OperatorAction.action == "lift_limits")) == "lift_limits"
    download = client.get(f"/users/{user_id}/export.json")
    assert download.status_code == 200 and "attachment" in download.headers["Content-Disposition"]
    assert download.get_json()["profile"]["phone"] == PHONE
    assert q(app, select(func.count()).select_from(OperatorAction).where(OperatorAction.action == "export")) == 1
    assert app.test_client().get(f"/users/{user_id}/export.json").status_code in (302, 401)


def test_an_agent_may_not_download_a_users_data(app):
    from app.operators import accounts

    user_id, _key = seed(app)
    accounts.create(app.extensions["endrigo"].db, "agente", "agent", "senha-do-agente-1")
    agent = app.test_client()
    token = csrf_token(agent)
    assert agent.post("/login", data={"name": "agente", "password": "senha-do-agente-1",
                                      "csrf_token": token}).status_code == 302
    assert agent.get(f"/users/{user_id}/export.json").status_code == 403
    assert q(app, select(func.count()).select_from(OperatorAction).where(OperatorAction.action == "export")) == 0
