"""Trust: opt-out and opt-in, limits counted in the database, the 24-hour window, the send policy."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, select, update

import app.pipeline as pipeline
from app.channels.policy import reply_refusal
from app.db import utcnow
from app.models import LimitEvent, Message, User
from app.ops import limits
from app.pipeline import notices
from app.pipeline.gate import command_of
from tests.conftest import post_signed, wait_for

PATH = "/webhook/whatsapp"
PHONE = "+5511999990001"
TO = "whatsapp:" + PHONE
CONTENT_SID = "HX" + "ab" * 16


def q(app, stmt):
    with app.extensions["endrigo"].db.session() as session:
        return session.scalar(stmt)


def inbound_statuses(app) -> list[str]:
    with app.extensions["endrigo"].db.session() as session:
        return list(session.scalars(select(Message.status).where(Message.direction == "in").order_by(Message.id)))


def settled(app, n: int) -> bool:
    return q(app, select(func.count()).select_from(Message).where(
        Message.direction == "in", Message.status.notin_(("received", "processing")))) == n


def send(app, twilio_fake, body: str, **kw):
    form = twilio_fake.inbound_form(body=body, **kw)
    response = post_signed(app.test_client(), PATH, form, twilio_fake.auth_token)
    assert response.status_code == 200
    return form


def user_row(app, phone=PHONE) -> User:
    with app.extensions["endrigo"].db.session() as session:
        return session.scalar(select(User).where(User.phone == phone))


# ---- opt-out -------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["SAIR", "sair", " Sair! ", "🚫 PARAR 🚫", "Descadastrar.", "stop", "S A I R",
                                  "cancelar 👋", "SAÍR", "*STOP*", "Páráŕ"])
def test_opt_out_words_are_recognised_in_any_dress(text):
    assert command_of(text) == "opt_out"


@pytest.mark.parametrize("text", ["quero sair", "parar de fumar", "stop it", "sairei", "", None, "SAIR " * 60])
def test_words_inside_a_sentence_are_not_commands(text):
    assert command_of(text) is None


def test_voltar_start_and_erasure_request_are_recognised():
    assert command_of("voltar") == command_of("Start 🙂") == "opt_in"
    assert command_of("Apagar meus dados!") == "erase"


def test_opt_out_one_confirmation_then_silence_until_voltar(make_app, twilio_fake, openai_fake):
    app = make_app(openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url)
    send(app, twilio_fake, "SAIR")
    wait_for(lambda: settled(app, 1))
    assert [m["body"] for m in twilio_fake.sent] == [notices.OPTED_OUT]
    assert user_row(app).opted_out_at is not None
    for text in ("Oi?", "SAIR", "alguém aí?"):
        send(app, twilio_fake, text)
    wait_for(lambda: settled(app, 4))
    assert len(twilio_fake.sent) == 1  # silence: no answer, no second confirmation, no notice
    model_calls = [r for r in openai_fake.requests_to("/v1/") if not r.path.startswith("/v1/models")]
    assert model_calls == []  # no model cost at all (listing models at start-up is not a call)
    assert inbound_statuses(app) == ["answered", "ignored", "ignored", "ignored"]
    send(app, twilio_fake, "Voltar")
    wait_for(lambda: settled(app, 5))
    assert twilio_fake.sent[-1]["body"] == notices.OPTED_IN and user_row(app).opted_out_at is None
    openai_fake.queue_text("Olá de novo!")
    send(app, twilio_fake, "Oi")
    wait_for(lambda: settled(app, 6))
    assert twilio_fake.sent[-1]["body"] == "Olá de novo!" and len(twilio_fake.sent) == 3


def test_a_turn_in_flight_when_the_user_opts_out_sends_nothing(make_app, twilio_fake, monkeypatch):
    app = make_app()
    db = app.extensions["endrigo"].db

    def user_opts_out_meanwhile(ctx):
        with db.session() as session:
            session.execute(update(User).where(User.id == ctx.user.id).values(opted_out_at=utcnow()))

    stages = list(pipeline.STAGES)
    stages.insert([n for n, _ in stages].index("send"), ("meanwhile", user_opts_out_meanwhile))
    monkeypatch.setattr(pipeline, "STAGES", stages)
    send(app, twilio_fake, "Quais são os serviços?")
    wait_for(lambda: settled(app, 1))
    assert twilio_fake.sent == []
    with db.session() as session:
        out = session.scalars(select(Message).where(Message.direction == "out")).all()
        assert out and all(m.status == "not_sent" and "opted out" in m.error for m in out)


def test_operator_reply_to_an_opted_out_user_is_refused_with_the_reason(make_app, twilio_fake):
    app = make_app(start_workers=False)
    services = app.extensions["endrigo"]
    send(app, twilio_fake, "Oi")
    user = user_row(app)
    assert reply_refusal(services, user.id) is None
    with services.db.session() as session:
        session.execute(update(User).where(User.id == user.id).values(opted_out_at=utcnow()))
    assert "pediu para não receber" in reply_refusal(services, user.id)


# ---- limits --------------------------------------------------------------------------------

def test_over_the_per_minute_limit_one_notice_then_silence_messages_stored_limited(make_app, twilio_fake):
    app = make_app(user_messages_per_minute=3, start_workers=False)
    services = app.extensions["endrigo"]
    for i in range(6):
        send(app, twilio_fake, f"mensagem {i}")
    user = user_row(app)
    services.inbox.drain(user.id)
    statuses = inbound_statuses(app)
    # All six arrived in the same batch of the same minute (one turn): three are answered.
    assert statuses.count("limited") == 3 and statuses.count("answered") == 3
    notice = notices.LIMIT_NOTICES["messages_per_minute"]
    assert twilio_fake.send_counts(body=notice) == 1
    send(app, twilio_fake, "mais uma")
    services.inbox.drain(user.id)
    assert twilio_fake.send_counts(body=notice) == 1  # one notice per window, then silence
    assert inbound_statuses(app)[-1] == "limited"
    with services.db.session() as session:
        limited = session.scalars(select(Message).where(Message.status == "limited")).all()
        assert all("over 3 messages per minute" in m.error for m in limited)
        assert session.scalar(select(func.count()).select_from(LimitEvent)) == 1


def test_an_operator_lifts_a_limit_and_the_user_is_answered_again(make_app, twilio_fake):
    app = make_app(user_messages_per_day=2, start_workers=False)
    services = app.extensions["endrigo"]
    for i in range(3):
        send(app, twilio_fake, f"pergunta {i}")
    user = user_row(app)
    services.inbox.drain(user.id)
    assert inbound_statuses(app).count("limited") == 1
    assert twilio_fake.send_counts(body=notices.LIMIT_NOTICES["messages_per_day"]) == 1
    assert limits.lift(services.db, user.id, "ana")
    sends_before = len(twilio_fake.sent)
    send(app, twilio_fake, "depois do desbloqueio")
    services.inbox.drain(user.id)
    assert inbound_statuses(app)[-1] == "answered" and len(twilio_fake.sent) == sends_before + 1


def test_voice_seconds_per_day_are_counted_from_earlier_notes(make_app, twilio_fake):
    app = make_app(user_audio_seconds_per_day=60, start_workers=False)
    services = app.extensions["endrigo"]
    send(app, twilio_fake, "oi")
    user = user_row(app)
    services.inbox.drain(user.id)
    with services.db.session() as session:  # an earlier note of 61 s today
        session.add(Message(user_id=user.id, direction="in", kind="audio", status="answered",
                            audio_seconds=61.0, created_at=utcnow()))
    send(app, twilio_fake, "", media=(b"OggS" + b"\0" * 200, "audio/ogg"))
    services.inbox.drain(user.id)
    assert inbound_statuses(app)[-1] == "limited"
    assert twilio_fake.requests_to("/Media/") == [] and not twilio_fake.requests_to("/cdn/")  # not even downloaded
    assert twilio_fake.send_counts(body=notices.LIMIT_NOTICES["audio_seconds_per_day"]) == 1


def test_the_daily_model_budget_is_shared_through_the_database(make_app, twilio_fake, openai_fake):
    online = dict(openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url, start_workers=False)
    first = make_app(**online)
    second = make_app(ai_calls_per_day=1, **online)  # another process on the same database
    openai_fake.queue_text("Primeira resposta.")
    send(first, twilio_fake, "Oi")
    first.extensions["endrigo"].inbox.drain(user_row(first).id)
    used = limits.ai_calls_today(second.extensions["endrigo"].db)
    assert used >= 1 and used == len(openai_fake.requests)
    calls_before = len(openai_fake.requests)
    send(second, twilio_fake, "Outra pergunta")
    second.extensions["endrigo"].inbox.drain(user_row(second).id)
    assert len(openai_fake.requests) == calls_before  # no model call over the budget
    assert inbound_statuses(second)[-1] == "limited"
    assert twilio_fake.sent[-1]["body"] == notices.LIMIT_NOTICES["ai_calls_per_day"]


def test_opt_out_works_even_over_a_limit(make_app, twilio_fake):
    app = make_app(user_messages_per_minute=1, start_workers=False)
    services = app.extensions["endrigo"]
    send(app, twilio_fake, "oi")
    services.inbox.drain(user_row(app).id)
    send(app, twilio_fake, "PARAR")
    services.inbox.drain(user_row(app).id)
    assert user_row(app).opted_out_at is not None and twilio_fake.sent[-1]["body"] == notices.OPTED_OUT


# ---- the 24-hour window ----------------------------------------------------------------------

def _age_last_inbound(app, hours: float) -> None:
    with app.extensions["endrigo"].db.session() as session:
        session.execute(update(User).values(last_seen_at=utcnow() - dt.timedelta(hours=hours)))


def _late_reply(app, twilio_fake, monkeypatch, hours=25):
    """A reply whose sending happens after the user's window closed (a late retry)."""
    def window_passes(ctx):
        _age_last_inbound(app, hours)

    stages = list(pipeline.STAGES)
    stages.insert([n for n, _ in stages].index("send"), ("time passes", window_passes))
    monkeypatch.setattr(pipeline, "STAGES", stages)
    send(app, twilio_fake, "Quais são os serviços?")
    app.extensions["endrigo"].inbox.drain(user_row(app).id)


def test_after_the_window_without_a_template_the_reply_is_held_with_the_reason(make_app, twilio_fake, monkeypatch):
    app = make_app(start_workers=False)
    _late_reply(app, twilio_fake, monkeypatch)
    assert twilio_fake.sent == []
    with app.extensions["endrigo"].db.session() as session:
        out = session.scalars(select(Message).where(Message.direction == "out")).all()
        assert out and all(m.status == "held" and "24-hour window" in m.error for m in out)
    assert "janela de 24 horas" in reply_refusal(app.extensions["endrigo"], user_row(app).id)


def test_after_the_window_the_reply_goes_as_the_fallback_template(make_app, twilio_fake, monkeypatch):
    app = make_app(start_workers=False, twilio_fallback_content_sid=CONTENT_SID)
    twilio_fake.close_window(TO)
    _late_reply(app, twilio_fake, monkeypatch)
    assert len(twilio_fake.sent) == 1
    sent = twilio_fake.sent[0]
    assert sent["content_sid"] == CONTENT_SID and not sent["body"]
    variables = json.loads(sent["content_variables"])
    assert set(variables) == {"1"} and "\n" not in variables["1"] and len(variables["1"]) <= 1000
    assert reply_refusal(app.extensions["endrigo"], user_row(app).id) is None  # the template can go
    with app.extensions["endrigo"].db.session() as session:
        assert session.scalar(select(Message.kind).where(Message.direction == "out")) == "template"


def test_a_63016_refusal_is_handled_like_a_closed_window(make_app, twilio_fake):
    app = make_app(start_workers=False, twilio_fallback_content_sid=CONTENT_SID)
    twilio_fake.close_window(TO)  # Twilio thinks the window is closed; our clock does not
    send(app, twilio_fake, "Oi")
    app.extensions["endrigo"].inbox.drain(user_row(app).id)
    assert len(twilio_fake.sent) == 1 and twilio_fake.sent[0]["content_sid"] == CONTENT_SID
    assert inbound_statuses(app) == ["answered"]


def test_a_63016_refusal_without_a_template_is_held_not_retried(make_app, twilio_fake):
    app = make_app(start_workers=False)
    twilio_fake.close_window(TO)
    send(app, twilio_fake, "Oi")
    app.extensions["endrigo"].inbox.drain(user_row(app).id)
    assert twilio_fake.sent == []
    with app.extensions["endrigo"].db.session() as session:
        row = session.scalar(select(Message).where(Message.direction == "out"))
        assert row.status == "held" and "63016" in row.error
    assert inbound_statuses(app) == ["answered"]


def test_a_63016_status_callback_re_sends_once_as_the_template(make_app, twilio_fake):
    app = make_app(twilio_fallback_content_sid=CONTENT_SID)
    twilio_fake.close_window(TO)
    twilio_fake.closed_window_mode = "fail"  # accepted (201), then failed 63016 by WhatsApp
    send(app, twilio_fake, "Oi")
    wait_for(lambda: settled(app, 1) and twilio_fake.sent)
    free_text = twilio_fake.sent[0]
    url, form, headers = twilio_fake.status_callback(free_text["sid"], "failed", 63016, "outside the window")
    client = app.test_client()
    response = client.post(url.replace("https://bot.example.com", ""), data=form, headers=headers)
    assert response.status_code == 200
    wait_for(lambda: len(twilio_fake.sent) == 2)
    assert twilio_fake.sent[1]["content_sid"] == CONTENT_SID
    # The same callback again (Twilio retries) sends nothing more.
    client.post(url.replace("https://bot.example.com", ""), data=form, headers=headers)
    app.extensions["endrigo"].inbox.shutdown(wait=True)
    assert len(twilio_fake.sent) == 2


def test_the_operator_reply_path_refuses_an_opted_out_user_and_sends_nothing(make_app, twilio_fake):
    from app.assistant import handoff
    from app.operators import accounts

    app = make_app(start_workers=False)
    services = app.extensions["endrigo"]
    send(app, twilio_fake, "Oi")
    user = user_row(app)
    with services.db.session() as session:
        session.execute(update(User).where(User.id == user.id).values(opted_out_at=utcnow()))
    ana = accounts.create(services.db, "ana", "agent", "senha-forte-123")
    with pytest.raises(handoff.HandoffError, match="pediu para não receber"):
        handoff.operator_reply(services, user.id, ana, text="Olá, posso ajudar?")
    assert twilio_fake.sent == []
