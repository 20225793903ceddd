"""QUEUE_BACKEND=celery inside one process: what the web enqueues, what a worker's inbox does with it,
Redis going away and coming back, the settings and the start-up warnings.

A Redis of the test's own (tests/redis_server.py). The real workers, web instances and
kills are in tests/inbox/test_scale_out.py.
"""
from __future__ import annotations

import logging

import pytest
from sqlalchemy import func, select

from app import create_app
from app.config import ConfigError, Settings, shared_state_warnings
from app.inbox.queue import QUEUE_NAME, CeleryInbox
from app.models import ANSWERED, RECEIVED, Message, User
from tests.conftest import post_signed, wait_for
from tests.redis_server import RedisServer, unique_prefix


@pytest.fixture
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture
def celery_settings(make_settings, redis_server):
    prefix = unique_prefix()

    def factory(**overrides):
        values = dict(queue_backend="celery", celery_broker_url=redis_server.url(), celery_key_prefix=prefix)
        values.update(overrides)
        return make_settings(**values)

    return factory


@pytest.fixture
def worker_app(celery_settings):
    """An app built as app/worker.py builds it (role="worker")."""
    apps = []

    def factory(**overrides):
        app = create_app(celery_settings(**overrides), role="worker")
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["endrigo"].inbox.shutdown(wait=True)
        app.extensions["endrigo"].db.dispose()


def _web(make_app, celery_settings, **overrides):
    settings = celery_settings(**overrides)
    return make_app(**{f.name: getattr(settings, f.name) for f in settings.__dataclass_fields__.values()})


def _post(app, twilio_fake, phone: str, body: str):
    form = twilio_fake.inbound_form(from_=phone, body=body)
    return post_signed(app.test_client(), "/webhook/whatsapp", form, twilio_fake.auth_token)


def _count(app, status=None) -> int:
    db = app.extensions["endrigo"].db
    with db.session() as session:
        query = select(func.count()).select_from(Message).where(Message.direction == "in")
        if status:
            query = query.where(Message.status == status)
        return session.scalar(query)


def _waiting_tasks(app) -> int:
    inbox = app.extensions["endrigo"].inbox
    return inbox.redis.llen(inbox.prefix + QUEUE_NAME)


def test_settings_require_a_redis_broker_for_celery_and_thread_stays_the_default():
    assert Settings.from_env(env={}).queue_backend == "thread"
    with pytest.raises(ConfigError, match="CELERY_BROKER_URL"):
        Settings.from_env(env={"QUEUE_BACKEND": "celery"})
    with pytest.raises(ConfigError, match="Redis URL"):
        Settings.from_env(env={"QUEUE_BACKEND": "celery", "CELERY_BROKER_URL": "amqp://127.0.0.1//"})
    with pytest.raises(ConfigError, match="QUEUE_BACKEND"):
        Settings.from_env(env={"QUEUE_BACKEND": "rabbit"})
    settings = Settings.from_env(env={"QUEUE_BACKEND": "Celery", "CELERY_BROKER_URL": "redis://127.0.0.1:6379/3",
                                      "CELERY_VISIBILITY_TIMEOUT_SECONDS": "90", "WEB_INSTANCES": "3"})
    assert (settings.queue_backend, settings.celery_visibility_timeout_seconds, settings.web_instances) == (
        "celery", 90.0, 3)


def test_shared_state_warnings_name_local_media_and_a_per_host_secret():
    celery = dict(queue_backend="celery", celery_broker_url="redis://127.0.0.1:6379/0")
    local_with_celery = shared_state_warnings(Settings.from_env(env={}, **celery))
    assert any("MEDIA_BACKEND=local with QUEUE_BACKEND=celery" in w for w in local_with_celery)
    assert any("SECRET_KEY is not set" in w for w in local_with_celery)
    two_instances = shared_state_warnings(Settings.from_env(env={}, web_instances=2, secret_key="x" * 32))
    assert any("WEB_INSTANCES=2" in w for w in two_instances)
    assert not any("SECRET_KEY" in w for w in two_instances)
    shared_ok = shared_state_warnings(Settings.from_env(env={}, media_backend="gcs", gcs_bucket_name="b",
                                                secret_key="x" * 32, **celery))
    assert not any("SHARED STATE" in w for w in shared_ok)
    assert not any("SHARED STATE" in w for w in shared_state_warnings(Settings.from_env(env={})))


def test_web_process_only_stores_and_enqueues_one_task_per_user(make_app, celery_settings, twilio_fake, caplog):
    caplog.set_level(logging.WARNING)
    app = _web(make_app, celery_settings, secret_key=None)
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("SHARED STATE: MEDIA_BACKEND=local with QUEUE_BACKEND=celery" in m for m in logged)
    assert any("SHARED STATE: SECRET_KEY is not set" in m for m in logged)
    assert isinstance(app.extensions["endrigo"].inbox, CeleryInbox)
    for body in ("Oi", "tudo bem?", "quero um site"):
        assert _post(app, twilio_fake, "whatsapp:+5511999990001", body).status_code == 200
    assert _post(app, twilio_fake, "whatsapp:+5511999990002", "Olá").status_code == 200
    assert _count(app, RECEIVED) == 4
    # One task per user while it waits, however many messages (the SET NX key per user).
    assert _waiting_tasks(app) == 2
    assert twilio_fake.sent == []  # no turn ran in the web process


def test_a_worker_inbox_drains_what_the_web_enqueued_and_a_new_message_enqueues_again(
        make_app, celery_settings, worker_app, twilio_fake):
    web = _web(make_app, celery_settings)
    worker = worker_app()
    inbox = worker.extensions["endrigo"].inbox
    assert (inbox.role, inbox._executor) == ("worker", None)  # no thread pool in a worker
    _post(web, twilio_fake, "whatsapp:+5511999990001", "Oi")
    user_id = 1
    assert inbox.redis.exists(inbox.queued_key(user_id))
    with worker.app_context():
        inbox.run_drain(user_id)
    assert len(twilio_fake.sent) == 1 and _count(web, ANSWERED) == 1
    assert not inbox.redis.exists(inbox.queued_key(user_id))  # the running task freed the user's key
    _post(web, twilio_fake, "whatsapp:+5511999990001", "E agora?")
    assert _waiting_tasks(web) == 2  # the first task (not consumed here) and one for the new message


def test_redis_down_webhooks_still_answer_and_store_health_degrades_and_the_sweep_enqueues_the_backlog(
        make_app, celery_settings, worker_app, redis_server, twilio_fake, caplog):
    web = _web(make_app, celery_settings)
    client = web.test_client()
    assert client.get("/health").get_json()["queue"]["state"] == "ok"
    redis_server.stop()
    caplog.set_level(logging.WARNING, logger="app.inbox.queue")
    phones = [f"whatsapp:+55119999900{i:02d}" for i in range(1, 6)]
    for phone in phones:
        for body in ("Oi", "Quanto custa?"):
            assert _post(web, twilio_fake, phone, body).status_code == 200
    assert _count(web, RECEIVED) == 10
    unavailable = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(unavailable) == 1  # logged once, not per message
    health = client.get("/health")
    assert health.status_code == 200
    body = health.get_json()
    assert body["status"] == "degraded" and body["queue"] == {
        "backend": "celery", "state": "degraded", "reachable": False, "waiting_tasks": None}

    redis_server.start()  # back, empty (no persistence)
    worker = worker_app()  # its first housekeeping round is the recovery sweep
    wait_for(lambda: _waiting_tasks(web) == 5, timeout=10)
    wait_for(lambda: client.get("/health").get_json()["status"] == "ok", timeout=5)
    assert any("answers again" in r.getMessage() for r in caplog.records)
    inbox = worker.extensions["endrigo"].inbox
    with worker.extensions["endrigo"].db.session() as session:
        user_ids = list(session.scalars(select(User.id)))  # PostgreSQL's upsert skips sequence values
    assert len(user_ids) == 5
    with worker.app_context():
        for user_id in user_ids:
            inbox.run_drain(user_id)
    assert _count(web, ANSWERED) == 10
    assert sorted(twilio_fake.sends_per_recipient().values()) == [1] * 5


def test_the_recovery_round_runs_in_one_worker_at_a_time(worker_app):
    first, second = worker_app(), worker_app()
    a, b = first.extensions["endrigo"].inbox, second.extensions["endrigo"].inbox
    a.redis.delete(a.prefix + "round:probe")
    assert a.take_round("probe", 5) is True
    assert b.take_round("probe", 5) is False
    assert a.take_round("probe", 5) is False


def test_a_background_call_goes_to_the_workers_and_only_allowed_names_run(make_app, celery_settings, worker_app,
                                                                          caplog, tmp_path):
    from app.channels.outbox import send_text_fallback

    web = _web(make_app, celery_settings)
    inbox = web.extensions["endrigo"].inbox
    inbox.submit(send_text_fallback, web.extensions["endrigo"], 7)
    raw = inbox.redis.lpop(inbox.prefix + QUEUE_NAME)
    assert b"endrigo.call" in raw and b"app.channels.outbox:send_text_fallback" in raw
    worker = worker_app().extensions["endrigo"].inbox
    marker = tmp_path / "called"
    caplog.set_level(logging.WARNING, logger="app.inbox.queue")
    worker.call("os:system", False, [f"touch {marker}"])  # refused, never imported
    assert not marker.exists()
    assert any("refused a background call" in r.getMessage() for r in caplog.records)


def test_two_deliveries_of_one_users_task_in_one_worker_process_run_one_turn(
        make_app, celery_settings, worker_app, twilio_fake, openai_fake):
    """The threads of a worker share one lease owner: the second delivery must not run the turn again."""
    import threading

    openai_fake.set_latency(0.3)
    web = _web(make_app, celery_settings, openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url)
    worker = worker_app(openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url)
    inbox = worker.extensions["endrigo"].inbox
    _post(web, twilio_fake, "whatsapp:+5511999990001", "Oi")

    def deliver():
        with worker.app_context():
            inbox.run_drain(1)
    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert len(openai_fake.requests_to("/responses")) == 1
    assert len(twilio_fake.sent) == 1 and _count(web, ANSWERED) == 1


def test_a_task_queued_long_ago_is_enqueued_again(make_app, celery_settings, twilio_fake):
    """A worker that died after reserving a task, before starting it: the next notify sends another."""
    import time

    web = _web(make_app, celery_settings)
    inbox = web.extensions["endrigo"].inbox
    _post(web, twilio_fake, "whatsapp:+5511999990001", "Oi")
    _post(web, twilio_fake, "whatsapp:+5511999990001", "Alô?")
    assert _waiting_tasks(web) == 1  # fresh: deduplicated
    inbox.redis.set(inbox.queued_key(1), f"{time.time() - inbox._stale_seconds - 1:.3f}")
    _post(web, twilio_fake, "whatsapp:+5511999990001", "Tem alguém aí?")
    assert _waiting_tasks(web) == 2
    _post(web, twilio_fake, "whatsapp:+5511999990001", "?")
    assert _waiting_tasks(web) == 2  # and fresh again
