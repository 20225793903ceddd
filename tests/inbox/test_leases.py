"""Per-user leases (app/inbox/leases.py): one processor per user across processes, renewed while a stage runs."""
from __future__ import annotations

import time

from sqlalchemy import func, select

import app.pipeline as pipeline
from app.models import Message
from tests.conftest import inbound_done, overlaps, post_signed, scalar, wait_for

PATH = "/webhook/whatsapp"


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
    assert intervals and not overlaps(intervals)
    assert scalar(first, select(func.count()).select_from(Message).where(Message.status == "answered")) == 12


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
