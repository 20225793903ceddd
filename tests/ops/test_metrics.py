"""GET /metrics: protected by METRICS_TOKEN, Prometheus text format, the counters and database figures
move with what happens, no personal data; multiprocess mode under gunicorn with two workers.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from app.models import Handoff, User
from tests.conftest import TWILIO_NUMBER, post_signed, sign, wait_for
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
TOKEN = "metrics-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def scrape(client) -> dict[tuple, float]:
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    return parse(response.get_data(as_text=True))


def parse(text: str) -> dict[tuple, float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_refused_unless_configured_and_without_the_bearer_token(make_app):
    unconfigured = make_app(start_workers=False).test_client()
    assert unconfigured.get("/metrics").status_code == 401
    assert unconfigured.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401
    client = make_app(start_workers=False, metrics_token=TOKEN).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert client.get("/metrics", headers=AUTH).status_code == 200


def test_webhook_outcomes_turns_stages_and_depth_are_counted_without_personal_data(make_app, twilio_fake,
                                                                                 openai_fake):
    app = make_app(metrics_token=TOKEN, openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url)
    client = app.test_client()
    before = scrape(client)
    form = twilio_fake.inbound_form(from_="whatsapp:+5511987654321", body="Quanto custa um site?")
    assert post_signed(client, "/webhook/whatsapp", form, twilio_fake.auth_token).status_code == 200
    assert post_signed(client, "/webhook/whatsapp", form, twilio_fake.auth_token).status_code == 200  # duplicate
    assert client.post("/webhook/whatsapp", data=form, headers={"X-Twilio-Signature": "forged"}).status_code == 403
    bad = dict(form, MessageSid="", SmsSid="", SmsMessageSid="")
    assert post_signed(client, "/webhook/whatsapp", bad, twilio_fake.auth_token).status_code == 400
    wait_for(lambda: len(twilio_fake.sent) == 1)
    wait_for(lambda: value(scrape(client), "endrigo_turns_total", outcome="answered") == 1)
    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)
    for outcome in ("stored", "duplicate", "bad_signature", "bad_request"):
        assert delta("endrigo_webhooks_received_total", outcome=outcome) == 1, outcome
    assert delta("endrigo_stage_duration_seconds_count", stage="answer") == 1
    assert delta("endrigo_stage_duration_seconds_count", stage="send") == 1
    assert delta("endrigo_pipeline_duration_seconds_count") == 1
    assert value(after, "endrigo_queue_depth") == 0
    assert value(after, "endrigo_database_up") == 1
    text = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    assert "987654321" not in text and "Quanto custa" not in text


def test_provider_errors_by_kind_and_messages_waiting_for_a_human(make_app, twilio_fake, openai_fake):
    app = make_app(metrics_token=TOKEN, openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url,
                   openai_max_retries=0)
    client = app.test_client()
    before = scrape(client)
    openai_fake.fail_next(401, times=1)  # an invalid key: the turn fails at once, as "auth"
    form = twilio_fake.inbound_form(from_="whatsapp:+5511999990001", body="Oi")
    post_signed(client, "/webhook/whatsapp", form, twilio_fake.auth_token)
    wait_for(lambda: value(scrape(client), "endrigo_turns_total", outcome="failed") == 1)
    after = scrape(client)
    assert (value(after, "endrigo_provider_errors_total", provider="openai", kind="auth")
            - value(before, "endrigo_provider_errors_total", provider="openai", kind="auth")) == 1

    db = app.extensions["endrigo"].db
    # A user whose conversation a human took over: the bot stays silent, the message waits.
    form = twilio_fake.inbound_form(from_="whatsapp:+5511999990002", body="Quero falar com alguém")
    post_signed(client, "/webhook/whatsapp", form, twilio_fake.auth_token)
    wait_for(lambda: value(scrape(client), "endrigo_turns_total", outcome="answered") >= 1)
    with db.session() as session:
        user = session.query(User).filter(User.phone.endswith("5511999990002")).one()
        session.add(Handoff(user_id=user.id, reason="pediu humano", status="open"))
    time.sleep(0.01)
    form = twilio_fake.inbound_form(from_="whatsapp:+5511999990002", body="Alô?")
    post_signed(client, "/webhook/whatsapp", form, twilio_fake.auth_token)
    wait_for(lambda: value(scrape(client), "endrigo_messages_waiting_for_human") == 1)
    samples = scrape(client)
    assert value(samples, "endrigo_handoffs_open") == 1


def test_multiprocess_mode_under_gunicorn_adds_up_every_workers_counts(tmp_path, twilio_fake):
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}", "PUBLIC_BASE_URL": base, "INBOX_ENABLED": "false",
        "TWILIO_ACCOUNT_SID": twilio_fake.account_sid, "TWILIO_AUTH_TOKEN": twilio_fake.auth_token,
        "TWILIO_PHONE_NUMBER": TWILIO_NUMBER, "SECRET_KEY": "multiproc-test-secret-0123456789",
        "METRICS_TOKEN": TOKEN, "PROMETHEUS_MULTIPROC_DIR": str(multiproc), "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "4",
    }
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind",
                               f"127.0.0.1:{port}", "main:app"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def ready():
            if server.poll() is not None:
                raise AssertionError(server.stderr.read().decode(errors="replace")[-2000:])
            try:
                return requests.get(base + "/health", timeout=0.5).status_code == 200
            except requests.RequestException:
                return False
        wait_for(ready, timeout=60, interval=0.1)
        url = base + "/webhook/whatsapp"
        for i in range(30):
            form = twilio_fake.inbound_form(from_=f"whatsapp:+55119999900{i % 5:02d}", body=f"m {i}")
            with requests.Session() as fresh:  # a new connection each time: both workers take some
                assert fresh.post(url, data=form, headers={"X-Twilio-Signature": sign(url, form, twilio_fake.auth_token)},
                                  timeout=5).status_code == 200
        pids = {path.name.split("_")[-1] for path in multiproc.glob("counter_*.db")}
        assert len(pids) == 2, pids  # both gunicorn workers counted some
        for _ in range(4):  # whichever worker answers the scrape, it reports all of them
            samples = parse(requests.get(base + "/metrics", headers=AUTH, timeout=5).text)
            assert value(samples, "endrigo_webhooks_received_total", outcome="stored") == 30
            assert value(samples, "endrigo_queue_depth") == 30
    finally:
        server.terminate()
        server.wait(timeout=20)
