"""Human takeover through the real pipeline and the emulators: a handoff opened by the model's
tool or by an operator, the team notified (a webhook receiver on 127.0.0.1, WhatsApp through
the Twilio emulator), the bot silent, an operator's reply through the outbox, close → the
bot answers with the team's words in the model's input, the timeout, BUSINESS_HOURS.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import re
import threading

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from app.assistant import handoff as handoffs
from app.assistant import team_notify
from app.business_hours import BusinessHours, BusinessHoursError
from app.config import ConfigError, Settings
from app.db import utcnow
from app.localtime import SAO_PAULO
from app.models import Handoff, Message, Notification, OperatorAction, Turn, User
from app.operators import accounts
from tests.conftest import post_signed, wait_for
from tests.fakes.audio_samples import speech_like_ogg

PATH = "/webhook/whatsapp"
ANA = "whatsapp:+5511999990001"
ANA_DIGITS = "5511999990001"
AGENT_PASSWORD = "senha-da-maria-123"


class Receiver:
    """A Slack-style incoming webhook on 127.0.0.1 that records what it gets."""

    def __init__(self):
        self.posts: list[dict] = []
        self.fail_next = 0
        self.redirect_to: str | None = None
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}/hooks/team"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @Request.application
    def _app(self, request):
        self.posts.append({"path": request.path, "json": request.get_json(silent=True),
                           "content_type": request.content_type})
        if self.fail_next:
            self.fail_next -= 1
            return Response("boom", status=500)
        if self.redirect_to:
            return Response("", status=307, headers={"Location": self.redirect_to})
        return Response("ok")

    def close(self):
        self._server.shutdown()
        self._thread.join(timeout=5)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def online(make_app, openai_fake):
    def factory(**overrides):
        values = dict(openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url, openai_max_retries=0,
                      business_hours="always")
        values.update(overrides)
        return make_app(**values)

    return factory


def svc(app):
    return app.extensions["endrigo"]


def say(app, twilio_fake, body: str, from_: str = ANA) -> str:
    form = twilio_fake.inbound_form(from_=from_, body=body, profile_name="Ana")
    assert post_signed(app.test_client(), PATH, form, twilio_fake.auth_token).status_code == 200
    return form["MessageSid"]


def status_of(app, sid: str) -> str | None:
    with svc(app).db.session() as s:
        return s.scalar(select(Message.status).where(Message.provider_sid == sid))


def settle(app, sid: str, statuses=("answered", "failed", "waiting_human")) -> str:
    return wait_for(lambda: (status_of(app, sid) if status_of(app, sid) in statuses else None), timeout=15)


def sent_to(twilio_fake, to: str = ANA) -> list[dict]:
    return [m for m in twilio_fake.sent if m["to"] == to]


def agent_client(app, name: str = "maria"):
    if accounts.get(svc(app).db, name) is None:
        accounts.create(svc(app).db, name, "agent", AGENT_PASSWORD)
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"name": name, "password": AGENT_PASSWORD, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def csrf(client, path: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', client.get(path).get_data(as_text=True)).group(1)


def user_id_of(app, phone: str = "+5511999990001") -> int:
    with svc(app).db.session() as s:
        return s.scalar(select(User.id).where(User.phone == phone))


# ---- BUSINESS_HOURS ------------------------------------------------------------------------------

def local(y, m, d, hh, mm=0):
    return dt.datetime(y, m, d, hh, mm, tzinfo=SAO_PAULO)


def test_business_hours_grammar_open_and_next_opening():
    hours = BusinessHours.parse("mon-fri 08:00-12:00,13:00-18:00; sat 09:00-13:00")
    assert hours.is_open(local(2026, 12, 1, 8))          # Tuesday 08:00
    assert not hours.is_open(local(2026, 12, 1, 12, 30))  # lunch
    assert hours.next_opening(local(2026, 12, 1, 12, 30)) == local(2026, 12, 1, 13)
    assert hours.next_opening(local(2026, 12, 4, 19)) == local(2026, 12, 5, 9)  # Friday night -> Saturday
    assert hours.next_opening(local(2026, 12, 5, 14)) == local(2026, 12, 7, 8)  # Saturday afternoon -> Monday
    # Naive datetimes are UTC, as the database keeps them: 11:00 UTC is 08:00 in São Paulo.
    assert hours.is_open(dt.datetime(2026, 12, 1, 11, 0)) and not hours.is_open(dt.datetime(2026, 12, 1, 10, 59))
    assert hours.describe() == ("de segunda a sexta, das 08:00 às 12:00 e das 13:00 às 18:00; "
                                "no sábado, das 09:00 às 13:00")
    assert BusinessHours.parse(None).describe() == "de segunda a sexta, das 09:00 às 18:00"
    assert BusinessHours.parse("always").is_open(local(2026, 12, 6, 3))
    assert BusinessHours.parse("fri-mon 10:00-11:00").week[6] == ((600, 660),)  # ranges wrap the week


@pytest.mark.parametrize("spec", ["mon-fry 09:00-18:00", "mon-fri 18:00-09:00", "mon-fri", "mon-fri 9-18",
                                  "mon-fri 09:00-25:00"])
def test_bad_business_hours_stop_start_up_naming_the_variable(spec):
    with pytest.raises(BusinessHoursError):
        BusinessHours.parse(spec)
    with pytest.raises(ConfigError, match="BUSINESS_HOURS"):
        Settings.from_env(env={"BUSINESS_HOURS": spec})


def test_notification_settings_are_checked_at_start_up():
    settings = Settings.from_env(env={"HANDOFF_NOTIFY_WHATSAPP": "+55 11 99999-0000, 5521988887777"})
    assert settings.handoff_notify_whatsapp == ("whatsapp:+5511999990000", "whatsapp:+5521988887777")
    with pytest.raises(ConfigError, match="HANDOFF_NOTIFY_WEBHOOK_URL"):
        Settings.from_env(env={"HANDOFF_NOTIFY_WEBHOOK_URL": "ftp://example.com/x"})
    with pytest.raises(ConfigError, match="HANDOFF_NOTIFY_CONTENT_SID"):
        Settings.from_env(env={"HANDOFF_NOTIFY_CONTENT_SID": "template-1"})
    with pytest.raises(ConfigError, match="HANDOFF_TIMEOUT_HOURS"):
        Settings.from_env(env={"HANDOFF_TIMEOUT_HOURS": "0"})


def test_the_user_is_told_when_the_team_answers(make_app):
    settings = make_app(start_workers=False).extensions["endrigo"].settings  # default hours: mon-fri 09-18
    friday_night = local(2026, 12, 4, 20).astimezone(dt.timezone.utc).replace(tzinfo=None)
    due = handoffs.answer_deadline(settings, friday_night)
    assert due == dt.datetime(2026, 12, 7, 16, 0)  # Monday 09:00 in São Paulo (12:00 UTC) + 4 h
    text = handoffs.what_happens_next(settings, due, friday_night)
    assert "fora do horário de atendimento" in text and "segunda-feira (07/12) às 09:00" in text
    assert "de segunda a sexta, das 09:00 às 18:00" in text and "segunda-feira (07/12) às 13:00" in text
    tuesday_morning = local(2026, 12, 1, 10).astimezone(dt.timezone.utc).replace(tzinfo=None)
    text = handoffs.what_happens_next(settings, handoffs.answer_deadline(settings, tuesday_morning), tuesday_morning)
    assert "uma pessoa vai continuar a conversa por aqui" in text and "hoje às 14:00" in text


# ---- the whole loop ---------------------------------------------------------------------------

def test_tool_handoff_notifies_silences_operator_replies_close_and_the_bot_knows(
        online, openai_fake, twilio_fake, receiver):
    app = online(handoff_notify_webhook_url=receiver.url, handoff_notify_whatsapp=("+5511955550000",))
    openai_fake.queue_function_call("request_human_handoff", {"reason": "Quer negociar contrato"}, call_id="c1")
    openai_fake.queue_text("Combinado! Já avisei a equipe.")
    first = say(app, twilio_fake, "Quero falar com uma pessoa sobre o contrato")
    assert settle(app, first) == "answered"

    # The model was told what to say, true to BUSINESS_HOURS.
    tool_output = next(json.loads(i["output"]) for i in openai_fake.requests_to("/v1/responses")[1].json["input"]
                       if i.get("type") == "function_call_output")
    assert "uma pessoa vai continuar a conversa por aqui" in tool_output["message"]
    assert "todos os dias, a qualquer hora" in tool_output["message"]

    # The team is notified at once: the webhook (no full number) and WhatsApp.
    wait_for(lambda: receiver.posts, timeout=10)
    post = receiver.posts[0]
    text = post["json"]["text"]
    assert post["path"] == "/hooks/team" and post["content_type"] == "application/json"
    assert set(post["json"]) == {"text"}
    assert "+55 11 9****-0001" in text and "Quer negociar contrato" in text
    assert "Quero falar com uma pessoa sobre o contrato" in text
    assert f"https://bot.example.com/conversations/{user_id_of(app)}" in text
    assert ANA_DIGITS not in re.sub(r"\D", "", text.replace("0001", ""))  # no full number, in any spelling
    assert "99999" not in text
    team = wait_for(lambda: sent_to(twilio_fake, "whatsapp:+5511955550000"), timeout=10)
    assert "+55 11 9****-0001" in team[0]["body"] and ANA_DIGITS not in team[0]["body"]
    with svc(app).db.session() as s:
        assert {n.status for n in s.scalars(select(Notification))} == {"sent"}

    # The bot is silent: the user's message waits for a person, the model is not called.
    calls = len(openai_fake.requests_to("/v1/responses"))
    sends = len(sent_to(twilio_fake))
    waiting = say(app, twilio_fake, "Alô? Tem alguém aí?")
    assert settle(app, waiting) == "waiting_human"
    assert len(openai_fake.requests_to("/v1/responses")) == calls and len(sent_to(twilio_fake)) == sends

    # An operator answers from the transcript page: through the outbox, with the operator as author.
    maria = agent_client(app)
    user_id = user_id_of(app)
    page = maria.get(f"/conversations/{user_id}").get_data(as_text=True)
    assert "Aguardando resposta há" in page and "aguardando a equipe" in page
    promise = "Oi Ana, aqui é a Maria. Te mando a proposta do contrato amanhã às 10h."
    response = maria.post(f"/conversations/{user_id}/reply",
                          data={"text": promise, "csrf_token": csrf(maria, f"/conversations/{user_id}")})
    assert response.status_code == 302
    delivered = sent_to(twilio_fake)[-1]
    assert delivered["body"] == promise and delivered["status_callback"].startswith("https://bot.example.com/")
    assert status_of(app, waiting) == "answered"
    with svc(app).db.session() as s:
        row = s.scalar(select(Message).where(Message.direction == "out", Message.body == promise))
        assert row.operator_id == accounts.get(svc(app).db, "maria").id and row.provider_sid == delivered["sid"]
        assert s.get(Turn, row.turn_id).status == "team"
    page = maria.get(f"/conversations/{user_id}").get_data(as_text=True)
    assert promise in page and "maria · equipe" in page and "respondeu" in page
    # Its status callback moves the row forward like any reply of the bot.
    url, form, headers = twilio_fake.status_callback(delivered["sid"], "delivered")
    assert post_signed(app.test_client(), url.removeprefix("https://bot.example.com"), form,
                       twilio_fake.auth_token).status_code == 200
    with svc(app).db.session() as s:
        assert s.scalar(select(Message.status).where(Message.provider_sid == delivered["sid"])) == "delivered"

    # Close: the bot speaks again, and the model's input carries the team's words as the team's.
    assert maria.post(f"/conversations/{user_id}/close",
                      data={"csrf_token": csrf(maria, f"/conversations/{user_id}")}).status_code == 302
    openai_fake.queue_text("A Maria já combinou de te mandar a proposta amanhã às 10h.")
    after = say(app, twilio_fake, "E então, quando chega a proposta?")
    assert settle(app, after) == "answered"
    last_input = openai_fake.requests_to("/v1/responses")[-1].json["input"]
    team_items = [i for i in last_input if i.get("role") == "assistant" and "[Equipe Endrigo]" in str(i["content"])]
    assert team_items and promise in team_items[0]["content"]
    assert any(i.get("role") == "user" and "Tem alguém aí" in str(i.get("content")) for i in last_input)
    assert sent_to(twilio_fake)[-1]["body"] == "A Maria já combinou de te mandar a proposta amanhã às 10h."
    with svc(app).db.session() as s:
        actions = [(a.operator_name, a.action) for a in s.scalars(select(OperatorAction).order_by(OperatorAction.id))]
    assert ("maria", "reply") in actions and ("maria", "close") in actions


def test_an_operator_takes_over_and_the_bot_stays_silent(online, openai_fake, twilio_fake, receiver):
    app = online(handoff_notify_webhook_url=receiver.url)
    openai_fake.queue_text("Olá! Como posso ajudar?")
    assert settle(app, say(app, twilio_fake, "Oi")) == "answered"
    maria = agent_client(app)
    user_id = user_id_of(app)
    assert maria.post(f"/conversations/{user_id}/takeover",
                      data={"csrf_token": csrf(maria, f"/conversations/{user_id}")}).status_code == 302
    with svc(app).db.session() as s:
        handoff = s.scalar(select(Handoff))
        assert handoff.source == "operator" and handoff.operator_id == accounts.get(svc(app).db, "maria").id
    wait_for(lambda: receiver.posts, timeout=10)
    calls = len(openai_fake.requests_to("/v1/responses"))
    sid = say(app, twilio_fake, "Quanto custa?")
    assert settle(app, sid) == "waiting_human"
    assert len(openai_fake.requests_to("/v1/responses")) == calls and len(sent_to(twilio_fake)) == 1
    mine = maria.get("/conversations.json?view=mine").get_json()["conversations"]
    assert [c["id"] for c in mine] == [user_id] and mine[0]["handoff"]["waiting_since"]
    # Taking over twice is harmless: still one handoff, one notification.
    maria.post(f"/conversations/{user_id}/takeover", data={"csrf_token": csrf(maria, f"/conversations/{user_id}")})
    with svc(app).db.session() as s:
        assert len(s.scalars(select(Handoff)).all()) == 1 and len(s.scalars(select(Notification)).all()) == 1
    assert len(receiver.posts) == 1
    page = maria.get(f"/conversations/{user_id}").get_data(as_text=True)
    assert "assumiu a conversa" in page


def test_no_answer_in_time_the_user_is_told_and_the_bot_resumes(online, openai_fake, twilio_fake):
    app = online(start_workers=False)
    services = svc(app)
    with services.db.session() as s:
        user = User(phone="+5511999990001", profile_name="Ana")
        s.add(user)
        s.flush()
        user_id = user.id
    info = handoffs.open_handoff(services, user_id, "quer um humano", source="model")
    assert info.answer_due_at is not None
    assert handoffs.sweep(services)["timed_out"] == 0  # not due yet
    later = info.answer_due_at + dt.timedelta(minutes=1)
    assert handoffs.sweep(services, now=later)["timed_out"] == 1
    assert handoffs.sweep(services, now=later)["timed_out"] == 0  # told once
    bodies = [m["body"] for m in sent_to(twilio_fake)]
    assert bodies == [handoffs.TIMEOUT_NOTICE]
    with services.db.session() as s:
        handoff = s.get(Handoff, info.id)
        assert handoff.status == "closed" and handoff.closed_by == "timeout"


def test_an_answered_handoff_does_not_time_out(make_app, twilio_fake):
    app = make_app(start_workers=False, business_hours="always")
    services = svc(app)
    with services.db.session() as s:
        user = User(phone="+5511999990001")
        s.add(user)
        s.flush()
        user_id = user.id
    info = handoffs.open_handoff(services, user_id, "x", source="api")
    maria = accounts.create(services.db, "maria", "agent", AGENT_PASSWORD)
    assert handoffs.operator_reply(services, user_id, maria, text="Oi!").delivered
    assert handoffs.sweep(services, now=info.answer_due_at + dt.timedelta(hours=1))["timed_out"] == 0
    with services.db.session() as s:
        assert s.get(Handoff, info.id).status == "open"


def test_a_failing_webhook_is_retried_and_visible(make_app, twilio_fake, receiver):
    app = make_app(start_workers=False, business_hours="always", handoff_notify_webhook_url=receiver.url)
    services = svc(app)
    receiver.fail_next = 1
    with services.db.session() as s:
        user = User(phone="+5511999990001", profile_name="Ana")
        s.add(user)
        s.flush()
        user_id = user.id
    handoffs.open_handoff(services, user_id, "pediu atendente", source="offline")
    with services.db.session() as s:
        row = s.scalar(select(Notification))
        assert (row.status, row.attempts) == ("pending", 1) and "HTTP 500" in row.last_error
        assert row.next_attempt_at > utcnow()
    client = app.test_client()
    accounts.create(services.db, "ana.admin", "admin", AGENT_PASSWORD)
    maria = agent_client(app)
    page = maria.get(f"/conversations/{user_id}").get_data(as_text=True)
    assert "Avisos à equipe" in page and "HTTP 500" in page and "tentar de novo" in page
    assert "aviso à equipe" in maria.get("/handoffs").get_data(as_text=True)  # also on the handoffs page
    # The recovery sweep sends it once it is due.
    assert team_notify.send_due(services) == 0  # not due yet
    assert handoffs.sweep(services, now=utcnow() + dt.timedelta(minutes=5))["notifications"] == 1
    with services.db.session() as s:
        row = s.scalar(select(Notification))
        assert (row.status, row.attempts) == ("sent", 2)
    assert len(receiver.posts) == 2 and client is not None


def test_a_team_member_outside_the_window_gets_the_template(make_app, twilio_fake):
    template = "HX" + "a" * 32
    app = make_app(start_workers=False, business_hours="always", handoff_notify_whatsapp=("+5511955550000",),
                   handoff_notify_content_sid=template)
    twilio_fake.close_window("whatsapp:+5511955550000")
    services = svc(app)
    with services.db.session() as s:
        user = User(phone="+5511999990001")
        s.add(user)
        s.flush()
        user_id = user.id
    handoffs.open_handoff(services, user_id, "quer um humano", source="model")
    team = sent_to(twilio_fake, "whatsapp:+5511955550000")
    assert len(team) == 1 and team[0]["content_sid"] == template and not team[0]["body"]
    variables = json.loads(team[0]["content_variables"])
    assert variables["1"] == "+55 11 9****-0001" and variables["3"].endswith(f"/conversations/{user_id}")
    with services.db.session() as s:
        assert s.scalar(select(Notification.status)) == "sent"


def test_without_a_template_a_closed_window_fails_visibly(make_app, twilio_fake):
    app = make_app(start_workers=False, business_hours="always", handoff_notify_whatsapp=("+5511955550000",))
    twilio_fake.close_window("whatsapp:+5511955550000")
    services = svc(app)
    with services.db.session() as s:
        user = User(phone="+5511999990001")
        s.add(user)
        s.flush()
        user_id = user.id
    handoffs.open_handoff(services, user_id, "quer um humano", source="model")
    with services.db.session() as s:
        row = s.scalar(select(Notification))
        assert row.status == "failed" and "HANDOFF_NOTIFY_CONTENT_SID" in row.last_error


def test_an_operator_sends_a_voice_note_and_a_long_text(make_app, twilio_fake):
    app = make_app(start_workers=False, business_hours="always")
    services = svc(app)
    with services.db.session() as s:
        s.add(User(phone="+5511999990001", profile_name="Ana"))
    user_id = user_id_of(app)
    maria = agent_client(app)
    long_text = ("Esta é uma frase longa da equipe. " * 60).strip()  # > 1,600 characters: two parts
    token = csrf(maria, f"/conversations/{user_id}")
    response = maria.post(f"/conversations/{user_id}/reply", content_type="multipart/form-data",
                          data={"text": long_text, "csrf_token": token,
                                "file": (io.BytesIO(speech_like_ogg(1.0)), "recado.ogg", "audio/ogg")})
    assert response.status_code == 302
    sent = sent_to(twilio_fake)
    assert len(sent) == 3 and all(len(m["body"] or "") <= 1600 for m in sent)
    assert " ".join(m["body"] for m in sent[:2]) == long_text
    media_url = sent[2]["media_url"]
    assert media_url.startswith("https://bot.example.com/media/")
    served = app.test_client().get(media_url.removeprefix("https://bot.example.com"))
    assert served.status_code == 200 and served.mimetype == "audio/ogg" and served.data[:4] == b"OggS"
    with services.db.session() as s:
        kinds = [m.kind for m in s.scalars(select(Message).where(Message.direction == "out").order_by(Message.id))]
    assert kinds == ["text", "text", "audio"]
    # Files above the form limit (256 KB) but within WhatsApp's are taken.
    big = maria.post(f"/conversations/{user_id}/reply", content_type="multipart/form-data",
                     data={"csrf_token": token, "file": (io.BytesIO(b"%PDF-1.4\n" + b"0" * 600_000), "proposta.pdf",
                                                         "application/pdf")})
    assert big.status_code == 302 and len(sent_to(twilio_fake)) == 4
    with services.db.session() as s:
        assert s.scalars(select(Message.kind).where(Message.direction == "out").order_by(Message.id.desc())).first() \
            == "document"
    # A file type WhatsApp would not take is refused politely, nothing sent.
    bad = maria.post(f"/conversations/{user_id}/reply", content_type="multipart/form-data", follow_redirects=True,
                     data={"csrf_token": token, "file": (io.BytesIO(b"MZ..."), "virus.exe", "application/octet-stream")})
    assert "Tipo de arquivo não aceito" in bad.get_data(as_text=True) and len(sent_to(twilio_fake)) == 4


def test_a_refused_operator_reply_is_kept_and_resent_once(make_app, twilio_fake):
    app = make_app(start_workers=False, business_hours="always")
    services = svc(app)
    with services.db.session() as s:
        s.add(User(phone="+5511999990001"))
    user_id = user_id_of(app)
    maria = accounts.create(services.db, "maria", "agent", AGENT_PASSWORD)
    twilio_fake.fail_sends(status=500, times=1)
    result = handoffs.operator_reply(services, user_id, maria, text="Oi, tudo bem?")
    assert not result.delivered and result.error
    with services.db.session() as s:
        row = s.execute(select(Message.status, Message.error).where(Message.turn_id == result.turn_id)).one()
    # A 500 may hide an accepted message: the row keeps "sending" with the reason, and the
    # retry asks Twilio's list before sending it again.
    assert row.status == "sending" and "500" in row.error
    browser = agent_client(app)
    assert "Reenviar o que falhou" in browser.get(f"/conversations/{user_id}").get_data(as_text=True)
    again = handoffs.retry_team_turn(services, result.turn_id, maria)
    assert "Reenviar o que falhou" not in browser.get(f"/conversations/{user_id}").get_data(as_text=True)
    assert again.delivered and twilio_fake.send_counts(to=ANA, body="Oi, tudo bem?") == 1
    assert handoffs.retry_team_turn(services, result.turn_id, maria).delivered  # nothing left to send
    assert twilio_fake.send_counts(to=ANA, body="Oi, tudo bem?") == 1  # exactly once


def test_logout_and_disable_end_sessions(make_app):
    app = make_app(start_workers=False, dashboard_password="senha-do-admin-1")
    maria = agent_client(app)
    assert maria.get("/conversations").status_code == 200
    other = agent_client(app)  # the same operator on another device
    maria.post("/logout", data={"csrf_token": csrf(maria, "/conversations")})
    assert other.get("/conversations.json").status_code == 401  # logout ends every session of maria
    again = agent_client(app)
    accounts.disable(svc(app).db, "maria")
    assert again.get("/conversations.json").status_code == 401


def test_an_admin_manages_operators_and_tokens_from_the_dashboard(make_app):
    app = make_app(start_workers=False, dashboard_password="senha-do-admin-1")
    admin = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', admin.get("/login").get_data(as_text=True)).group(1)
    assert admin.post("/login", data={"password": "senha-do-admin-1", "csrf_token": token}).status_code == 302
    token = csrf(admin, "/operators")
    assert admin.post("/operators", data={"name": "Joana", "role": "agent", "password": "curta",
                                          "csrf_token": token}).status_code == 400
    assert admin.post("/operators", data={"name": "Joana", "role": "agent", "password": "senha-longa-123",
                                          "csrf_token": token}).status_code == 302
    issued = admin.post("/operators/joana/tokens", data={"csrf_token": token}).get_data(as_text=True)
    api_token = re.search(r"(edt_[A-Za-z0-9_-]{43})", issued).group(1)
    api = app.test_client()
    assert api.get("/api/v1/conversations", headers={"Authorization": f"Bearer {api_token}"}).status_code == 200
    assert api_token not in admin.get("/operators").get_data(as_text=True)  # shown once
    token_id = tokens_of(app, "joana")[0].id
    admin.post(f"/operators/joana/tokens/{token_id}/revoke", data={"csrf_token": token})
    assert api.get("/api/v1/conversations", headers={"Authorization": f"Bearer {api_token}"}).status_code == 401
    joana = agent_client_with(app, "joana", "senha-longa-123")
    assert joana.get("/operators").status_code == 403
    admin.post("/operators/joana/disable", data={"csrf_token": token})
    assert joana.get("/conversations.json").status_code == 401
    with svc(app).db.session() as s:
        actions = [a.action for a in s.scalars(select(OperatorAction).where(OperatorAction.operator_name == "admin"))]
    assert {"operator_create", "token_issue", "token_revoke", "operator_disable"} <= set(actions)


def tokens_of(app, name):
    from app.operators import tokens

    return tokens.list_tokens(svc(app).db, name)


def agent_client_with(app, name, password):
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    assert client.post("/login", data={"name": name, "password": password, "csrf_token": token}).status_code == 302
    return client


def test_the_webhook_goes_only_to_the_configured_url(make_app, twilio_fake):
    target, elsewhere = Receiver(), Receiver()
    try:
        target.redirect_to = elsewhere.url  # a receiver that tries to bounce our message on
        app = make_app(start_workers=False, business_hours="always", handoff_notify_webhook_url=target.url)
        services = svc(app)
        with services.db.session() as s:
            s.add(User(phone="+5511999990001"))
        handoffs.open_handoff(services, user_id_of(app), "quer um humano", source="model")
        assert len(target.posts) == 1 and elsewhere.posts == []
        with services.db.session() as s:
            row = s.scalar(select(Notification))
            assert row.status == "pending" and "HTTP 307" in row.last_error and target.url not in row.last_error
    finally:
        target.close()
        elsewhere.close()


def test_hourly_maintenance_prunes_old_login_attempts(make_app):
    from app.inbox import maintenance
    from app.models import LoginAttempt

    app = make_app(start_workers=False)
    with svc(app).db.session() as s:
        s.add_all([LoginAttempt(key="ip:1.2.3.4", succeeded=False, created_at=utcnow() - dt.timedelta(days=2)),
                   LoginAttempt(key="ip:1.2.3.4", succeeded=False, created_at=utcnow())])
    maintenance.hourly(svc(app))
    with svc(app).db.session() as s:
        assert len(s.scalars(select(LoginAttempt)).all()) == 1


def test_an_operator_changes_their_password_and_their_other_sessions_end(make_app):
    app = make_app(start_workers=False, dashboard_password="senha-do-admin-1")
    here, there = agent_client(app), agent_client(app)
    token = csrf(here, "/account")
    wrong = here.post("/account/password", data={"current": "errada", "new": "nova-senha-123", "again": "nova-senha-123",
                                                 "csrf_token": token})
    assert wrong.status_code == 400 and "não confere" in wrong.get_data(as_text=True)
    mismatch = here.post("/account/password", data={"current": AGENT_PASSWORD, "new": "nova-senha-123",
                                                    "again": "outra-senha-123", "csrf_token": token})
    assert mismatch.status_code == 400
    done = here.post("/account/password", data={"current": AGENT_PASSWORD, "new": "nova-senha-123",
                                                "again": "nova-senha-123", "csrf_token": token})
    assert done.status_code == 302
    assert here.get("/conversations.json").status_code == 200  # this session goes on
    assert there.get("/conversations.json").status_code == 401  # the other one ended
    assert accounts.verify_login(svc(app).db, "maria", "nova-senha-123") is not None
