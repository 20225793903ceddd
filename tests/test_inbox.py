"""The inbox: coalescing, per-user ordering across threads and processes, retries, idempotent sends."""
from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest
from sqlalchemy import func, select

import app.pipeline as pipeline
from app.models import Message, Turn
from app.turn import RetryableTurnError
from tests.conftest import post_signed, wait_for

PATH = "/webhook/whatsapp"


def rows(app, stmt):
    with app.extensions["endrigo"].db.session() as session:
        return list(session.execute(stmt))


def scalar(app, stmt):
    with app.extensions["endrigo"].db.session() as session:
        return session.scalar(stmt)


def inbound_done(app, expected: int) -> bool:
    return scalar(app, select(func.count()).select_from(Message).where(
        Message.direction == "in", Message.status.in_(("answered", "failed")))) == expected


@pytest.fixture
def probe(monkeypatch):
    """A pipeline stage that records, per user, when each turn ran (and may be told to fail)."""
    intervals: dict[int, list[tuple[float, float, int]]] = defaultdict(list)
    lock = threading.Lock()
    failures = {"remaining": 0}

    def stage(ctx):
        started = time.monotonic()
        time.sleep(0.02)
        with lock:
            intervals[ctx.user.id].append((started, time.monotonic(), ctx.turn_id))
            if failures["remaining"] > 0:
                failures["remaining"] -= 1
                raise RetryableTurnError("emulated provider outage")

    stages = list(pipeline.STAGES)
    index = [name for name, _ in stages].index("answer")
    stages.insert(index, ("probe", stage))
    monkeypatch.setattr(pipeline, "STAGES", stages)
    return {"intervals": intervals, "failures": failures}


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
    for text in ("primeira", "segunda", "terceira"):
        post_signed(client, PATH, twilio_fake.inbound_form(body=text), twilio_fake.auth_token)
    wait_for(lambda: inbound_done(app, 3))
    turn_rows = rows(app, select(Message.turn_id, Message.id).where(Message.direction == "in").order_by(Message.id))
    out_rows = rows(app, select(Message.turn_id, Message.id).where(Message.direction == "out").order_by(Message.id))
    # Outbound rows are written in the same turn order as the inbound messages arrived.
    inbound_turn_order = list(dict.fromkeys(r[0] for r in turn_rows))
    outbound_turn_order = list(dict.fromkeys(r[0] for r in out_rows))
    assert outbound_turn_order == inbound_turn_order


def _overlaps(intervals):
    ordered = sorted(intervals)
    return any(b[0] < a[1] for a, b in zip(ordered, ordered[1:]))


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
        assert not _overlaps([(a, b) for a, b, _ in intervals]), f"user {user_id} processed concurrently"


def test_two_processes_never_process_one_user_at_once(make_app, twilio_fake, probe):
    """Two apps on one database stand for two gunicorn workers: the lease keeps them apart."""
    first = make_app(coalesce_window_seconds=0.0)
    second = make_app(coalesce_window_seconds=0.0)
    clients = [first.test_client(), second.test_client()]
    for n in range(12):
        form = twilio_fake.inbound_form(body=f"msg {n}")
        post_signed(clients[n % 2], PATH, form, twilio_fake.auth_token)
        time.sleep(0.01)
    wait_for(lambda: inbound_done(first, 12), timeout=30)
    intervals = [(a, b) for a, b, _ in probe["intervals"][1]]
    assert intervals and not _overlaps(intervals)
    assert scalar(first, select(func.count()).select_from(Message).where(Message.status == "answered")) == 12


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


def test_recovery_takes_messages_left_received(make_app, twilio_fake):
    idle = make_app(start_workers=False)
    post_signed(idle.test_client(), PATH, twilio_fake.inbound_form(body="Oi"), twilio_fake.auth_token)
    assert twilio_fake.sent == []
    services = idle.extensions["endrigo"]
    services.inbox.start()  # start-up recovery finds the row and answers it
    wait_for(lambda: inbound_done(idle, 1))
    assert len(twilio_fake.sent) == 1


def test_maintenance_closes_expired_handoffs_and_removes_old_media(make_app, tmp_path):
    import datetime as dt
    import os

    from app.db import utcnow
    from app.models import Handoff, User

    app = make_app(start_workers=False, media_retention_days=1)
    services = app.extensions["endrigo"]
    with services.db.session() as session:
        user = User(phone="+5511912345678")
        session.add(user)
        session.flush()
        session.add_all([
            Handoff(user_id=user.id, reason="old", expires_at=utcnow() - dt.timedelta(hours=1)),
            Handoff(user_id=user.id, reason="current", expires_at=utcnow() + dt.timedelta(hours=1)),
        ])
    old = services.storage.save(b"OggS" + b"\0" * 100, "audio/ogg", ".ogg", base_url="https://x")
    fresh = services.storage.save(b"OggS" + b"\0" * 100, "audio/ogg", ".ogg", base_url="https://x")
    old_path = services.storage.path_for(old.key)
    two_days_ago = old_path.stat().st_mtime - 2 * 86400
    os.utime(old_path, (two_days_ago, two_days_ago))
    services.inbox.maintenance()
    with services.db.session() as session:
        states = {h.reason: (h.status, h.closed_by) for h in session.scalars(select(Handoff))}
    assert states == {"old": ("closed", "expired"), "current": ("open", None)}
    assert not old_path.exists() and services.storage.path_for(fresh.key).exists()


def test_a_stage_longer_than_the_lease_keeps_its_user(make_app, twilio_fake, monkeypatch):
    """The recovery loop renews held leases: a second process must not take over a slow turn."""
    runs = []

    def slow_stage(ctx):
        runs.append(ctx.turn_id)
        time.sleep(2.5)  # more than twice the lease below

    stages = list(pipeline.STAGES)
    stages.insert(0, ("slow", slow_stage))
    monkeypatch.setattr(pipeline, "STAGES", stages)
    first = make_app(lease_seconds=1.0, recovery_interval_seconds=0.2)
    second = make_app(lease_seconds=1.0, recovery_interval_seconds=0.2)
    post_signed(first.test_client(), PATH, twilio_fake.inbound_form(body="Oi"), twilio_fake.auth_token)
    wait_for(lambda: inbound_done(first, 1), timeout=20)
    assert len(runs) == 1  # the second app's recovery sweeps never re-ran the turn
    assert len(twilio_fake.sent) == 1
    assert second.extensions["endrigo"].inbox.recover() == []
