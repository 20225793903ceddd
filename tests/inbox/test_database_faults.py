"""Database faults (issue 10): PostgreSQL connections terminated mid-run, the app recovers by itself.

Every connection of the app (recognised by its own ``application_name``) is killed with
``pg_terminate_backend`` several times while messages arrive and turns run. The pool's
pre-ping and the inbox's retries must bring every message to an answer, none sent twice.
"""
from __future__ import annotations

import threading
import time
import uuid

import pytest
from sqlalchemy import create_engine, func, select, text

from app.models import Message
from tests.conftest import TEST_DATABASE_URL, post_signed
from tests.pg_schema import throwaway_schema

PATH = "/webhook/whatsapp"

pytestmark = pytest.mark.skipif(not TEST_DATABASE_URL, reason="needs TEST_DATABASE_URL (PostgreSQL)")


def test_terminated_postgresql_connections_lose_nothing_and_send_nothing_twice(make_app, twilio_fake):
    name = "endrigo_fault_" + uuid.uuid4().hex[:8]
    url, drop = throwaway_schema(TEST_DATABASE_URL)
    admin = create_engine(TEST_DATABASE_URL.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        app = make_app(database_url=url + f"&application_name={name}", retry_backoff_seconds=(0.2, 0.3, 0.5, 1.0))
        client = app.test_client()
        stop = threading.Event()
        killed = []

        def terminator():
            while not stop.wait(0.4):
                with admin.begin() as conn:
                    killed.append(conn.execute(text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :n"),
                        {"n": name}).scalar())

        thread = threading.Thread(target=terminator, daemon=True)
        thread.start()
        users = [f"whatsapp:+55119777{n:05d}" for n in range(6)]
        sent_forms = 0
        for round_ in range(4):
            for user in users:
                form = twilio_fake.inbound_form(from_=user, body=f"pergunta {round_} de {user[-4:]}")
                for _ in range(20):  # a webhook that hit a dead connection answers 5xx: Twilio retries it
                    status = post_signed(client, PATH, form, twilio_fake.auth_token).status_code
                    if status == 200:
                        break
                    time.sleep(0.1)
                assert status == 200
                sent_forms += 1
            time.sleep(0.3)
        stop.set()
        thread.join(timeout=5)
        assert sum(killed) > 0, "the test must really have terminated connections"

        db = app.extensions["endrigo"].db

        def settled() -> bool:
            with db.session() as session:
                return session.scalar(select(func.count()).select_from(Message).where(
                    Message.direction == "in", Message.status.in_(("received", "processing")))) == 0

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not settled():
            time.sleep(0.2)
        assert settled()
        with db.session() as session:
            statuses = session.scalars(select(Message.status).where(Message.direction == "in")).all()
        assert len(statuses) == sent_forms and set(statuses) == {"answered"}
        bodies = [(m["to"], m["body"]) for m in twilio_fake.sent if not m["body"].startswith("Recebi sua mensagem")]
        assert len(bodies) == len(set(bodies)), "a reply was sent twice"
        assert {to for to, _ in bodies} == set(users)
    finally:
        admin.dispose()
        drop()
