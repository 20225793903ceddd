"""The exactly-once send (app/channels/outbox.py): a part Twilio accepted is never sent again on a retry."""
from __future__ import annotations

from sqlalchemy import select

import app.pipeline as pipeline
from app.models import Message, Turn
from tests.conftest import inbound_done, post_signed, rows, wait_for

PATH = "/webhook/whatsapp"


def test_a_part_already_sent_is_not_sent_again_on_retry(make_app, twilio_fake, monkeypatch):
    from app.channels.twilio.outbound import TwilioChannel

    def long_answer(ctx):
        ctx.answer_text = "\n\n".join(f"Parágrafo {i}: " + "texto longo de resposta. " * 50 for i in range(4))

    monkeypatch.setattr(pipeline, "STAGES",
                        [(name, long_answer if name == "answer" else stage) for name, stage in pipeline.STAGES])
    original_send = TwilioChannel.send_part
    calls = {"n": 0}

    def send_then_break(self, user, part, row_id):
        calls["n"] += 1
        if calls["n"] == 2:  # Twilio answers 500 to the second part, once
            twilio_fake.fail_next(status=500, times=1)
        return original_send(self, user, part, row_id)

    monkeypatch.setattr(TwilioChannel, "send_part", send_then_break)
    app = make_app(retry_backoff_seconds=(0.2,))
    post_signed(app.test_client(), PATH, twilio_fake.inbound_form(body="Oi"), twilio_fake.auth_token)
    wait_for(lambda: inbound_done(app, 1), timeout=20)
    out = rows(app, select(Message.part_index, Message.status, Message.provider_sid)
               .where(Message.direction == "out").order_by(Message.part_index))
    assert [r[0] for r in out] == [0, 1, 2, 3]
    assert all(r[2] for r in out)
    sent = [m["body"] for m in twilio_fake.sent]
    # Part 0 went out once before the fault; the retry sent parts 1-3 only. No holding message:
    # the answer was known, so the user sees the parts in order with nothing in between.
    assert [b.split(":")[0] for b in sent] == ["Parágrafo 0", "Parágrafo 1", "Parágrafo 2", "Parágrafo 3"]
    assert rows(app, select(Turn.status, Turn.attempts))[0] == ("answered", 2)
