"""Zero-wait turns (issue 13): no fixed coalescing wait, stale attempts dropped, at most two
model calls per burst, Twilio's typing indicator, and the usage of every turn stored.

Driven through the real webhook, inbox, pipeline, OpenAI SDK and the emulators; the answer
emulator is given a delay so that a burst can arrive while the first attempt is at work.
"""
from __future__ import annotations

import time

from sqlalchemy import func, select

from app.models import Message, Turn
from tests.conftest import post_signed, wait_for

PATH = "/webhook/whatsapp"
USER = "whatsapp:+5511999990001"


def slow_answers(openai_fake, seconds: float, text: str = "Resposta da Endrigo Digital."):
    calls = []

    def handler(body):
        calls.append(body)
        time.sleep(seconds)
        return text

    openai_fake.set_handler(handler)
    return calls


def post(app, twilio_fake, body: str) -> str:
    form = twilio_fake.inbound_form(body=body)
    assert post_signed(app.test_client(), PATH, form, twilio_fake.auth_token).status_code == 200
    return form["MessageSid"]


def answered(app, expected: int) -> bool:
    with app.extensions["endrigo"].db.session() as session:
        return session.scalar(select(func.count()).select_from(Message).where(
            Message.direction == "in", Message.status == "answered")) == expected


def test_a_single_message_does_not_wait_for_the_coalescing_window(online_app, twilio_fake, openai_fake):
    # Thirty seconds of "coalescing" would make this wait time out: the turn must start at once.
    app = online_app(coalesce_window_seconds=30.0)
    post(app, twilio_fake, "Quais serviços vocês oferecem?")
    wait_for(lambda: answered(app, 1), timeout=8)
    assert len(twilio_fake.sent) == 1


def test_a_burst_is_answered_once_with_everything_in_at_most_two_model_calls(online_app, twilio_fake, openai_fake):
    calls = slow_answers(openai_fake, 0.8)
    app = online_app(coalesce_window_seconds=0.5)
    for text in ("Oi", "queria saber", "quanto custa a consultoria?"):
        post(app, twilio_fake, text)
        time.sleep(0.3)
    wait_for(lambda: answered(app, 3), timeout=15)
    assert len([m for m in twilio_fake.sent if m["to"] == USER]) == 1
    assert len(calls) <= 2
    last_input = str(calls[-1]["input"])
    assert all(text in last_input for text in ("Oi", "queria saber", "quanto custa a consultoria?"))
    with app.extensions["endrigo"].db.session() as session:
        turns = session.scalars(select(Turn)).all()
    assert len(turns) == 1 and turns[0].usage["model_calls"] == len(calls)


def test_a_long_burst_still_costs_at_most_two_model_calls(online_app, twilio_fake, openai_fake):
    calls = slow_answers(openai_fake, 0.4)
    app = online_app(coalesce_window_seconds=0.3)
    for index in range(8):
        post(app, twilio_fake, f"mensagem {index}")
        time.sleep(0.15)
    wait_for(lambda: answered(app, 8), timeout=20)
    with app.extensions["endrigo"].db.session() as session:
        usage = [t.usage or {} for t in session.scalars(select(Turn)).all()]
    # Every turn (the burst may end as more than one once its second attempt is under way)
    # spent at most two calls, and every message was answered.
    assert all(u.get("model_calls", 0) <= 2 for u in usage)
    assert len(calls) == sum(u.get("model_calls", 0) for u in usage)


def test_a_dropped_attempt_sends_nothing(online_app, twilio_fake, openai_fake):
    slow_answers(openai_fake, 0.6, text="primeira resposta")
    app = online_app(coalesce_window_seconds=0.2)
    post(app, twilio_fake, "Oi")
    time.sleep(0.2)
    post(app, twilio_fake, "tudo bem?")
    wait_for(lambda: answered(app, 2), timeout=10)
    time.sleep(0.8)  # the dropped attempt's model call has long returned by now
    assert len(twilio_fake.sent) == 1


def test_the_typing_indicator_is_sent_for_the_newest_message(online_app, twilio_fake, openai_fake):
    slow_answers(openai_fake, 0.3)
    app = online_app()
    sid = post(app, twilio_fake, "Oi")
    wait_for(lambda: answered(app, 1), timeout=8)
    assert [call["message_id"] for call in twilio_fake.typing_indicators] == [sid]


def test_a_failing_typing_indicator_never_delays_or_fails_the_turn(online_app, twilio_fake, openai_fake):
    twilio_fake.fail_next(503, path_contains="/Indicators/Typing")
    app = online_app()
    post(app, twilio_fake, "Oi")
    wait_for(lambda: answered(app, 1), timeout=8)
    assert len(twilio_fake.sent) == 1


def test_the_typing_indicator_can_be_switched_off(online_app, twilio_fake, openai_fake):
    app = online_app(twilio_typing_indicator=False)
    post(app, twilio_fake, "Oi")
    wait_for(lambda: answered(app, 1), timeout=8)
    assert twilio_fake.typing_indicators == []


def test_usage_is_stored_per_turn(online_app, twilio_fake, openai_fake):
    app = online_app()
    post(app, twilio_fake, "Oi")
    wait_for(lambda: answered(app, 1), timeout=8)
    with app.extensions["endrigo"].db.session() as session:
        usage = session.scalars(select(Turn.usage)).one()
    assert usage["model_calls"] == 1 and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert "cached_tokens" in usage
