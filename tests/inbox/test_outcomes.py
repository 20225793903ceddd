"""How a turn ends (app/inbox/outcomes.py): after an outage, one holding message then the
answer; after the last retry, a visible failure with an apology."""
from __future__ import annotations

from sqlalchemy import select

from app.models import Message, Turn
from tests.conftest import inbound_done, post_signed, rows, wait_for

PATH = "/webhook/whatsapp"


def test_a_provider_outage_sends_one_holding_message_then_the_answer(make_app, twilio_fake, probe):
    probe["failures"]["remaining"] = 2
    app = make_app(retry_backoff_seconds=(0.2, 0.2, 0.2))
    client = app.test_client()
    post_signed(client, PATH, twilio_fake.inbound_form(body="Oi, tudo bem?"), twilio_fake.auth_token)
    wait_for(lambda: inbound_done(app, 1), timeout=20)
    bodies = [m["body"] for m in twilio_fake.sent]
    assert len(bodies) == 2
    assert "já te respondo" in bodies[0]
    assert "já te respondo" not in bodies[1]
    turn = rows(app, select(Turn.status, Turn.attempts))[0]
    assert tuple(turn) == ("answered", 3)


def test_after_the_last_retry_the_turn_fails_visibly_with_an_apology(make_app, twilio_fake, probe):
    probe["failures"]["remaining"] = 10
    app = make_app(retry_backoff_seconds=(0.1, 0.1))
    client = app.test_client()
    post_signed(client, PATH, twilio_fake.inbound_form(body="Oi"), twilio_fake.auth_token)
    wait_for(lambda: inbound_done(app, 1), timeout=20)
    status, error = rows(app, select(Message.status, Message.error).where(Message.direction == "in"))[0]
    assert status == "failed" and "emulated provider outage" in error
    bodies = [m["body"] for m in twilio_fake.sent]
    assert len(bodies) == 2 and "já te respondo" in bodies[0] and "Desculpe" in bodies[1]
