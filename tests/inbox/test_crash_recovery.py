"""Crash recovery with the real server (``python main.py`` against the emulators), killed with SIGKILL.

- after the webhook answered, before any reply: one reply after the restart;
- between Twilio's acceptance and our bookkeeping: reconciled with Twilio's list, not resent,
  also when a newer message arrives while the server is down (it gets its own answer);
- a kill storm: many users, several kills at random moments, every message answered, none twice.
The storm's CI size is small; KILL_STORM_MESSAGES=200 KILL_STORM_USERS=20 runs the full one.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import TWILIO_NUMBER, sign, wait_for

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict, port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "main.py"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    def ready():
        if process.poll() is not None:
            raise AssertionError("server exited: " + process.stderr.read().decode(errors="replace")[-2000:])
        try:
            return requests.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # still booting, or a busy machine
            return False
    wait_for(ready, timeout=30, interval=0.1)
    return process


def server_env(port: int, database_url: str, twilio_fake, openai_fake=None) -> dict:
    base = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "PUBLIC_BASE_URL": base,
        "TWILIO_ACCOUNT_SID": twilio_fake.account_sid,
        "TWILIO_AUTH_TOKEN": twilio_fake.auth_token,
        "TWILIO_PHONE_NUMBER": TWILIO_NUMBER,
        "TWILIO_API_BASE_URL": twilio_fake.base_url,
        "SECRET_KEY": "crash-test-secret",
        "RECOVERY_INTERVAL_SECONDS": "1",
        "RETRY_BACKOFF_SECONDS": "0.5,1,2,4",
    }
    if openai_fake is not None:
        env.update(OPENAI_API_KEY=openai_fake.api_key, OPENAI_BASE_URL=openai_fake.v1_url, OPENAI_MAX_RETRIES="1")
    return env


def test_sigkill_between_webhook_and_reply_loses_nothing_and_replies_once(database_url, tmp_path, twilio_fake,
                                                                          openai_fake):
    # A slow answer: the kill lands after the webhook's 200, before any reply.
    openai_fake.set_handler(lambda body: (time.sleep(3.0), "Fazemos sim!")[1])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = server_env(port, database_url, twilio_fake, openai_fake)
    server = start_server(env, port)
    form = twilio_fake.inbound_form(body="Oi, vocês fazem tráfego pago?")
    url = base + "/webhook/whatsapp"
    try:
        response = requests.post(url, data=form, headers={"X-Twilio-Signature": sign(url, form, twilio_fake.auth_token)},
                                 timeout=5)
        assert response.status_code == 200
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        assert twilio_fake.sent == []

        openai_fake.set_handler(None)
        server = start_server(env, port)
        wait_for(lambda: len(twilio_fake.sent) >= 1, timeout=30)
        time.sleep(1.0)  # a second reply, if any, would show up now
        assert len(twilio_fake.sent) == 1
        assert twilio_fake.sent[0]["to"] == "whatsapp:+5511999990001"
        # Twilio retrying the same webhook after the restart changes nothing.
        retry = requests.post(url, data=form, headers={"X-Twilio-Signature": sign(url, form, twilio_fake.auth_token)},
                              timeout=5)
        assert retry.status_code == 200
        time.sleep(0.5)
        assert len(twilio_fake.sent) == 1
    finally:
        server.kill()
        server.wait(timeout=10)


def _post(base: str, twilio_fake, form: dict) -> None:
    url = base + "/webhook/whatsapp"
    response = requests.post(url, data=form, headers={"X-Twilio-Signature": sign(url, form, twilio_fake.auth_token)},
                             timeout=10)
    assert response.status_code == 200


def _database(database_url: str):
    from app.config import Settings
    from app.db import Database

    return Database(Settings.from_env(env={}, database_url=database_url).database_url)


def _store_while_down(database_url: str, twilio_fake, body: str) -> None:
    """A message stored by another instance while this server is dead (same intake, same table)."""
    from app.channels.twilio.inbound import parse_inbound
    from app.inbox.intake import store_inbound

    db = _database(database_url)
    try:
        store_inbound(db, parse_inbound(twilio_fake.inbound_form(body=body)), channel="whatsapp")
    finally:
        db.dispose()


@pytest.mark.parametrize("newer_message", [False, True], ids=["alone", "newer-message-while-down"])
def test_a_kill_between_twilios_201_and_our_bookkeeping_is_reconciled_not_resent(
        database_url, twilio_fake, openai_fake, newer_message):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = server_env(port, database_url, twilio_fake, openai_fake)
    server = start_server(env, port)
    killed = {"done": False}

    def kill_on_accept(record):
        # Twilio has stored the message; the app dies before it hears the 201.
        if not killed["done"]:
            killed["done"] = True
            os.kill(server.pid, signal.SIGKILL)

    twilio_fake.on_accept = kill_on_accept
    try:
        _post(base, twilio_fake, twilio_fake.inbound_form(body="Vocês fazem sites?"))
        wait_for(lambda: killed["done"], timeout=20)
        server.wait(timeout=10)
        twilio_fake.on_accept = None
        first = [m["body"] for m in twilio_fake.sent]
        assert first == ["[fake] Vocês fazem sites?"]
        if newer_message:
            _store_while_down(database_url, twilio_fake, "E quanto custa?")
        server = start_server(env, port)
        wait_for(lambda: len(twilio_fake.sent) >= (2 if newer_message else 1)
                 and not _pending(database_url), timeout=30)
        time.sleep(1.5)  # a resend, if any, would show up now
        bodies = [m["body"] for m in twilio_fake.sent]
        assert bodies.count("[fake] Vocês fazem sites?") == 1
        if newer_message:
            # The newer message made its own turn: the first answer was not rewritten.
            assert bodies == ["[fake] Vocês fazem sites?", "[fake] E quanto custa?"]
        else:
            assert bodies == ["[fake] Vocês fazem sites?"]
        assert _outbound_sids(database_url) == [m["sid"] for m in twilio_fake.sent]
    finally:
        server.kill()
        server.wait(timeout=10)


def _pending(database_url: str) -> bool:
    from sqlalchemy import func, select

    from app.models import Message

    db = _database(database_url)
    try:
        with db.session() as session:
            return bool(session.scalar(select(func.count()).select_from(Message).where(
                Message.direction == "in", Message.status.in_(("received", "processing")))))
    finally:
        db.dispose()


def _outbound_sids(database_url: str) -> list[str]:
    from sqlalchemy import select

    from app.models import Message

    db = _database(database_url)
    try:
        with db.session() as session:
            return list(session.scalars(select(Message.provider_sid).where(Message.direction == "out")
                                        .order_by(Message.id)))
    finally:
        db.dispose()


STORM_MESSAGES = int(os.environ.get("KILL_STORM_MESSAGES", "60"))
STORM_USERS = int(os.environ.get("KILL_STORM_USERS", "12"))
STORM_KILLS = int(os.environ.get("KILL_STORM_KILLS", "3"))


def test_a_kill_storm_answers_every_message_and_none_twice(database_url, twilio_fake, openai_fake):
    """Messages from many users while the server is SIGKILLed and restarted at random moments."""
    import random

    rng = random.Random(20261201)
    twilio_fake.send_latency = 0.3  # Twilio takes its time: kills land between its 201 and our write
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = server_env(port, database_url, twilio_fake, openai_fake)
    env["COALESCE_WINDOW_SECONDS"] = "0.3"
    users = [f"whatsapp:+55119{88800000 + n:08d}" for n in range(STORM_USERS)]
    plan = [(users[i % STORM_USERS], f"pergunta {i:03d}") for i in range(STORM_MESSAGES)]
    kill_at = sorted(rng.sample(range(5, STORM_MESSAGES - 5), STORM_KILLS))
    server = start_server(env, port)
    try:
        for index, (user, text) in enumerate(plan):
            if index in kill_at:
                time.sleep(rng.uniform(0.0, 0.6))
                server.send_signal(signal.SIGKILL)
                server.wait(timeout=10)
                server = start_server(env, port)
            form = twilio_fake.inbound_form(from_=user, body=text)
            for _ in range(50):  # the server may be booting: Twilio retries, so do we
                try:
                    _post(base, twilio_fake, form)
                    break
                except (requests.ConnectionError, requests.Timeout):
                    time.sleep(0.1)
            time.sleep(0.02)
        wait_for(lambda: not _pending(database_url), timeout=120, interval=0.5)
        time.sleep(2.0)
        replies = [m for m in twilio_fake.sent if m["body"].startswith("[fake] ")]
        bodies = [(m["to"], m["body"]) for m in replies]
        assert len(bodies) == len(set(bodies)), "a reply was sent twice"
        answered = [line for _, body in bodies for line in body.removeprefix("[fake] ").split("\n")]
        assert sorted(answered) == sorted(text for _, text in plan), "every message answered exactly once"
        for user in users:
            numbers = [int(line.split()[1]) for to, body in bodies if to == user
                       for line in body.removeprefix("[fake] ").split("\n")]
            assert numbers == sorted(numbers), f"replies out of order for {user[-4:]}"
    finally:
        server.kill()
        server.wait(timeout=10)
