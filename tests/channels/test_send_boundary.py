"""Exactly once at the send boundary (issue 15): whatever fails after Twilio accepted a part,
that part is never sent again; every status Twilio may send is stored; a refused voice note
is followed by the text; the holding message keeps the turn's time promise.

Sends are counted at the Twilio emulator; both databases run every test.
"""
from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest
from sqlalchemy import select

import app.pipeline as pipeline
from app.channels import outbox
from app.inbox.leases import process_alive
from app.models import Message, Turn
from tests.conftest import post_signed, wait_for
from tests.fakes.twilio_fake import MESSAGE_STATUSES

PATH = "/webhook/whatsapp"
USER = "whatsapp:+5511999990001"


def post(app, twilio_fake, body: str = "Oi, vocês fazem tráfego pago?") -> None:
    form = twilio_fake.inbound_form(body=body)
    assert post_signed(app.test_client(), PATH, form, twilio_fake.auth_token).status_code == 200


def rows(app, stmt):
    with app.extensions["endrigo"].db.session() as session:
        return list(session.execute(stmt).all())


def turn_done(app) -> bool:
    return bool(rows(app, select(Turn.id).where(Turn.status.in_(("answered", "failed")))))


def outbound(app):
    return rows(app, select(Message.part_index, Message.kind, Message.status, Message.provider_sid, Message.error)
                .where(Message.direction == "out").order_by(Message.part_index))


@pytest.mark.parametrize("status", MESSAGE_STATUSES)
def test_every_status_in_twilios_201_is_stored_as_it_came_and_sent_once(make_app, twilio_fake, status):
    twilio_fake.send_status = status
    app = make_app()
    post(app, twilio_fake)
    wait_for(lambda: turn_done(app))
    time.sleep(0.3)  # a retry, if the bookkeeping had failed, would send again now
    assert len(twilio_fake.sent) == 1
    [(index, kind, stored, sid, error)] = outbound(app)
    assert (stored, error) == (status, None) and sid == twilio_fake.sent[0]["sid"]
    assert rows(app, select(Turn.status, Turn.holding_sent)) == [("answered", False)]


@pytest.mark.parametrize("status", [*MESSAGE_STATUSES, "some_status_twilio_adds_next_year"])
def test_a_status_callback_with_any_status_is_stored_and_answers_200(make_app, twilio_fake, status):
    app = make_app()
    post(app, twilio_fake)
    wait_for(lambda: turn_done(app))
    sid = twilio_fake.sent[0]["sid"]
    form = {"MessageSid": sid, "MessageStatus": status, "AccountSid": twilio_fake.account_sid}
    response = post_signed(app.test_client(), "/webhook/whatsapp/status", form, twilio_fake.auth_token)
    assert response.status_code == 200
    [(_, _, stored, _, _)] = outbound(app)
    # "queued" (the 201) may stay when the callback is older news; never anything else.
    assert stored in (status, "queued")
    if status in ("delivered", "read", "failed", "undelivered", "partially_delivered"):
        assert stored == status


def test_an_unknown_status_never_moves_a_row_backwards(make_app, twilio_fake):
    app = make_app()
    post(app, twilio_fake)
    wait_for(lambda: turn_done(app))
    sid = twilio_fake.sent[0]["sid"]
    client = app.test_client()
    for status in ("delivered", "some_status_twilio_adds_next_year", "sent"):
        form = {"MessageSid": sid, "MessageStatus": status, "AccountSid": twilio_fake.account_sid}
        assert post_signed(client, "/webhook/whatsapp/status", form, twilio_fake.auth_token).status_code == 200
    assert outbound(app)[0][2] == "delivered"


def test_a_database_error_after_the_send_does_not_send_the_part_again(make_app, twilio_fake, monkeypatch):
    real_record = outbox._record
    failures = {"left": 2}

    def flaky_record(services, row_id, *, status, sid=None, error=None, error_code=None):
        if sid and failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("database went away")
        return real_record(services, row_id, status=status, sid=sid, error=error, error_code=error_code)

    monkeypatch.setattr(outbox, "_record", flaky_record)
    app = make_app()
    post(app, twilio_fake)
    wait_for(lambda: turn_done(app))
    time.sleep(0.5)
    assert len(twilio_fake.sent) == 1
    assert outbound(app)[0][3] == twilio_fake.sent[0]["sid"]


def test_bookkeeping_that_never_recovers_is_reconciled_not_resent(make_app, twilio_fake, monkeypatch):
    # Every SID write of the first attempt fails: the row stays "sending" with no SID. The
    # pipeline then fails on purpose, so the turn is retried; the retry asks Twilio's list.
    real_record = outbox._record
    state = {"broken": True}

    def broken_record(services, row_id, *, status, sid=None, error=None, error_code=None):
        if sid and state["broken"]:
            raise RuntimeError("database went away")
        return real_record(services, row_id, status=status, sid=sid, error=error, error_code=error_code)

    def fail_after_send(ctx):
        if state["broken"]:
            state["broken"] = False
            raise RuntimeError("the process would have died here")

    monkeypatch.setattr(outbox, "_record", broken_record)
    monkeypatch.setattr(outbox, "RECORD_RETRY_DELAYS", (0.01,))
    monkeypatch.setattr(pipeline, "STAGES", [*pipeline.STAGES, ("crash", fail_after_send)])
    app = make_app(retry_backoff_seconds=(0.2, 0.2))
    post(app, twilio_fake)
    wait_for(lambda: rows(app, select(Turn.status)) == [("answered",)], timeout=15)
    answer = outbound(app)[0]
    sent_answer = [m for m in twilio_fake.sent if m["body"] == rows(app, select(Turn.reply_text))[0][0]]
    assert len(sent_answer) == 1 and answer[3] == sent_answer[0]["sid"]
    # The second attempt asked Twilio's Messages list instead of sending the part again.
    assert [r for r in twilio_fake.requests if r.method == "GET" and r.path.endswith("/Messages.json")]


def test_a_lost_answer_after_twilio_accepted_is_reconciled_not_resent(make_app, twilio_fake):
    twilio_fake.drop_sends(1)  # Twilio stores the message, then the connection dies
    app = make_app(retry_backoff_seconds=(0.2, 0.2))
    post(app, twilio_fake)
    wait_for(lambda: rows(app, select(Turn.status)) == [("answered",)], timeout=15)
    time.sleep(0.3)
    assert len(twilio_fake.sent) == 1
    [(_, _, status, sid, _)] = outbound(app)
    assert sid == twilio_fake.sent[0]["sid"] and status == "queued"


def test_a_lost_answer_of_a_send_twilio_never_took_is_sent_on_retry(make_app, twilio_fake, monkeypatch):
    # The connection dies BEFORE Twilio stored anything: the list has nothing, so the part goes out.
    from app.clients.twilio_client import TwilioGateway, TwilioSendError

    real_send = TwilioGateway.send
    state = {"first": True}

    def lost(self, *args, **kwargs):
        if state["first"]:
            state["first"] = False
            raise TwilioSendError("unreachable", "Twilio unreachable: ConnectionError", retryable=True)
        return real_send(self, *args, **kwargs)

    monkeypatch.setattr(TwilioGateway, "send", lost)
    app = make_app(retry_backoff_seconds=(0.2, 0.2))
    post(app, twilio_fake)
    wait_for(lambda: rows(app, select(Turn.status)) == [("answered",)], timeout=15)
    assert len(twilio_fake.sent) == 1


def test_a_voice_reply_refused_at_send_time_is_followed_by_the_text_once(make_app, twilio_fake, monkeypatch):
    def voice_answer(ctx):
        ctx.answer_text = "Fazemos sim! Veja https://endrigo.digital/trafego para os planos."
        ctx.reply_kind, ctx.audio_url, ctx.audio_content_type = "audio", "https://bot.example.com/media/x", "audio/ogg"
        ctx.text_after_audio = "Veja https://endrigo.digital/trafego"

    stages = [(name, stage) for name, stage in pipeline.STAGES if name not in ("answer", "speak", "store")]
    stages.insert(len(stages) - 1, ("voice", voice_answer))
    monkeypatch.setattr(pipeline, "STAGES", stages)
    twilio_fake.fail_sends(400, code=63019, times=1)  # WhatsApp refuses this media
    app = make_app()
    post(app, twilio_fake)
    wait_for(lambda: turn_done(app))
    time.sleep(0.3)
    bodies = [m["body"] for m in twilio_fake.sent]
    assert bodies == ["Fazemos sim! Veja https://endrigo.digital/trafego para os planos."]
    parts = outbound(app)
    assert [(p[0], p[1], p[2]) for p in parts] == [(0, "audio", "refused"), (1, "text", "skipped"),
                                                    (100, "text", "queued")]
    assert rows(app, select(Turn.status)) == [("answered",)]


def test_a_text_part_refused_for_good_fails_the_turn_with_the_reason(make_app, twilio_fake):
    twilio_fake.fail_sends(400, code=21211, times=1)
    app = make_app()
    post(app, twilio_fake)
    wait_for(lambda: turn_done(app))
    [(status, kind, error)] = rows(app, select(Turn.status, Turn.error_kind, Turn.error))
    assert (status, kind) == ("failed", "send") and "21211" in error
    [(message_status, message_error)] = rows(app, select(Message.status, Message.error).where(Message.direction == "in"))
    assert message_status == "failed" and "21211" in message_error
    assert twilio_fake.sent == []


def test_a_hung_model_gets_the_holding_message_at_the_turn_budget(online_app, twilio_fake, openai_fake):
    def hung(body):
        time.sleep(2.5)
        return "A resposta demorou, mas veio."

    openai_fake.set_handler(hung)
    app = online_app(turn_budget_seconds=0.8)
    post(app, twilio_fake)
    wait_for(lambda: len(twilio_fake.sent) >= 1, timeout=5)
    assert "A resposta demorou" not in twilio_fake.sent[0]["body"]  # the holding message came first
    wait_for(lambda: turn_done(app), timeout=10)
    assert [m["body"] for m in twilio_fake.sent][1] == "A resposta demorou, mas veio."
    assert len(twilio_fake.sent) == 2
    assert rows(app, select(Turn.holding_sent)) == [(True,)]


def test_a_quick_answer_sends_no_holding_message(online_app, twilio_fake, openai_fake):
    app = online_app(turn_budget_seconds=0.8)
    post(app, twilio_fake)
    wait_for(lambda: turn_done(app), timeout=5)
    time.sleep(1.0)  # past the budget: the timer must have been stopped by the decision
    assert len(twilio_fake.sent) == 1


def test_a_zombie_holds_no_lease():
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(f"/proc/{child.pid}/stat") as handle:
            if handle.read().rpartition(")")[2].split()[0] == "Z":
                break
        time.sleep(0.01)
    try:
        os.kill(child.pid, 0)  # the signal check alone says "alive" ...
        assert not process_alive(f"{socket.gethostname()}:{child.pid}:nonce")  # ... the state says dead
        assert process_alive(f"{socket.gethostname()}:{os.getpid()}:nonce")
    finally:
        child.wait()
