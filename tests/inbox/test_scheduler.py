"""The inbox scheduler (app/inbox/__init__.py, turns.py): coalescing, per-user ordering across
threads, nothing lost or duplicated, recovery of messages left behind."""
from __future__ import annotations

import threading
import time

from sqlalchemy import func, select

import app.pipeline as pipeline
from app.models import Message, Turn
from tests.conftest import inbound_done, overlaps, post_signed, rows, scalar, wait_for

PATH = "/webhook/whatsapp"


def test_three_quick_messages_make_one_turn_with_one_ordered_reply(make_app, twilio_fake, monkeypatch):
    # A turn starts at once; the slow stage keeps its first attempt busy while the burst arrives,
    # so the attempt goes stale and the grown turn is answered once.
    def slow(ctx):
        time.sleep(0.5)

    stages = list(pipeline.STAGES)
    stages.insert([name for name, _ in stages].index("answer"), ("slow", slow))
    monkeypatch.setattr(pipeline, "STAGES", stages)
    app = make_app(coalesce_window_seconds=0.6)
    client = app.test_client()
    sids = []
    for text in ("Oi", "tudo bem?", "quero saber dos serviços"):
        form = twilio_fake.inbound_form(body=text)
        sids.append(form["MessageSid"])
        assert post_signed(client, PATH, form, twilio_fake.auth_token).status_code == 200
        time.sleep(0.1)
    wait_for(lambda: inbound_done(app, 3))
    turn_ids = {r[0] for r in rows(app, select(Message.turn_id).where(Message.direction == "in"))}
    assert len(turn_ids) == 1
    assert scalar(app, select(func.count()).select_from(Turn)) == 1
    sent = [m for m in twilio_fake.sent if m["to"] == "whatsapp:+5511999990001"]
    assert len(sent) == 1
    # The one reply answered the whole turn: outbound rows belong to that same turn.
    out_turns = {r[0] for r in rows(app, select(Message.turn_id).where(Message.direction == "out"))}
    assert out_turns == turn_ids


def test_replies_go_out_in_arrival_order(make_app, twilio_fake, probe):
    app = make_app(coalesce_window_seconds=0.0)
    client = app.test_client()
    post_signed(client, PATH, twilio_fake.inbound_form(body="primeira"), twilio_fake.auth_token)
    # The first message is answered in a turn of its own before the others arrive (an undecided
    # turn would grow to take them in): at least two turns.
    wait_for(lambda: inbound_done(app, 1))
    for text in ("segunda", "terceira"):
        post_signed(client, PATH, twilio_fake.inbound_form(body=text), twilio_fake.auth_token)
    wait_for(lambda: inbound_done(app, 3))
    turn_rows = rows(app, select(Message.turn_id, Message.id).where(Message.direction == "in").order_by(Message.id))
    out_rows = rows(app, select(Message.turn_id, Message.id).where(Message.direction == "out").order_by(Message.id))
    # Outbound rows are written in the same turn order as the inbound messages arrived.
    inbound_turn_order = list(dict.fromkeys(r[0] for r in turn_rows))
    outbound_turn_order = list(dict.fromkeys(r[0] for r in out_rows))
    assert len(inbound_turn_order) >= 2
    assert outbound_turn_order == inbound_turn_order


def test_20_users_x_5_messages_nothing_lost_duplicated_or_overlapping(make_app, twilio_fake, probe):
    app = make_app(coalesce_window_seconds=0.05, workers=8)
    forms = [
        twilio_fake.inbound_form(from_=f"whatsapp:+55119{user:08d}", body=f"mensagem {n} do usuário {user}",
                                 profile_name=f"U{user}")
        for user in range(20) for n in range(5)
    ]
    errors = []

    def post_all(chunk):
        client = app.test_client()
        for form in chunk:
            response = post_signed(client, PATH, form, twilio_fake.auth_token)
            if response.status_code != 200:
                errors.append(response.status_code)

    threads = [threading.Thread(target=post_all, args=(forms[i::5],)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    wait_for(lambda: inbound_done(app, 100), timeout=60)
    assert scalar(app, select(func.count()).select_from(Message).where(Message.status == "answered")) == 100
    # Every turn was answered exactly once: one outbound row per turn, each sent to Twilio once.
    turns = scalar(app, select(func.count()).select_from(Turn))
    outbound = rows(app, select(Message.turn_id, Message.provider_sid).where(Message.direction == "out"))
    assert len(outbound) == turns == len({t for t, _ in outbound})
    assert sorted(m["sid"] for m in twilio_fake.sent) == sorted(sid for _, sid in outbound)
    assert len(probe["intervals"]) == 20
    for user_id, intervals in probe["intervals"].items():
        assert not overlaps([(a, b) for a, b, _ in intervals]), f"user {user_id} processed concurrently"


def test_recovery_takes_messages_left_received(make_app, twilio_fake):
    idle = make_app(start_workers=False)
    post_signed(idle.test_client(), PATH, twilio_fake.inbound_form(body="Oi"), twilio_fake.auth_token)
    assert twilio_fake.sent == []
    services = idle.extensions["endrigo"]
    services.inbox.start()  # start-up recovery finds the row and answers it
    wait_for(lambda: inbound_done(idle, 1))
    assert len(twilio_fake.sent) == 1
