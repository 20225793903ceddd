"""Crash recovery with the real server: SIGKILL after the webhook answered, restart, one reply."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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


def test_sigkill_between_webhook_and_reply_loses_nothing_and_replies_once(database_url, tmp_path, twilio_fake):
    port = free_port()
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
        # A long coalescing window: the kill lands after the webhook's 200, before any reply.
        "COALESCE_WINDOW_SECONDS": "3",
        "SECRET_KEY": "crash-test-secret",
    }
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

        env["COALESCE_WINDOW_SECONDS"] = "0"
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
