"""Shared test set-up: databases (SQLite always, PostgreSQL when TEST_DATABASE_URL is set),
an app factory wired to the provider emulators, Twilio-signed requests, and small helpers
to poll for a condition and read rows.
"""
from __future__ import annotations

import os
import time

import pytest
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from app import create_app
from app.config import Settings
from app.models import Message
from tests.pg_schema import throwaway_schema

pytest_plugins = ["tests.fakes.fixtures"]

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if TEST_DATABASE_URL else [])

TWILIO_NUMBER = "whatsapp:+14155238886"
# The environment a test app reads: media from the emulators on loopback over http.
EMULATOR_ENV = {"MEDIA_ALLOW_PRIVATE_HOSTS": "true"}


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    """A fresh, empty database: a SQLite file, or a throw-away schema in TEST_DATABASE_URL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    url, drop = throwaway_schema(TEST_DATABASE_URL)
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def make_settings(database_url, tmp_path, twilio_fake):
    """Settings for a test app: our database, the Twilio emulator, offline unless told otherwise."""

    def factory(**overrides) -> Settings:
        values = dict(
            database_url=database_url,
            instance_dir=str(tmp_path / "instance"),
            twilio_account_sid=twilio_fake.account_sid,
            twilio_auth_token=twilio_fake.auth_token,
            twilio_phone_number=TWILIO_NUMBER,
            twilio_api_base_url=twilio_fake.base_url,
            public_base_url="https://bot.example.com",
            coalesce_window_seconds=0.0,
            recovery_interval_seconds=0.2,
            retry_backoff_seconds=(0.2, 0.2),
            workers=4,
            secret_key="test-secret-key-123456",
        )
        values.update(overrides)
        # The emulators listen on http://127.0.0.1: allowed the way staging allows them.
        return Settings.from_env(env=EMULATOR_ENV, **values)

    return factory


@pytest.fixture
def make_app(make_settings):
    """Build apps for a test; their inbox executors are shut down and engines disposed after it."""
    apps = []

    def factory(**overrides):
        app = create_app(make_settings(**overrides))
        app.testing = True
        apps.append(app)
        return app

    yield factory
    for app in apps:
        services = app.extensions["endrigo"]
        services.inbox.shutdown(wait=True)
        services.db.dispose()


@pytest.fixture
def online_app(make_app, openai_fake):
    """Apps whose answers come from the OpenAI emulator (the real SDK on 127.0.0.1)."""

    def factory(**overrides):
        values = dict(openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url, openai_max_retries=2)
        values.update(overrides)
        return make_app(**values)

    return factory


def sign(url: str, form: dict, token: str) -> str:
    return RequestValidator(token).compute_signature(url, form)


def post_signed(client, path: str, form: dict, token: str, base="https://bot.example.com", headers=None):
    """POST ``form`` to ``path`` signed as Twilio signs it for ``base + path``."""
    headers = dict(headers or {})
    headers["X-Twilio-Signature"] = sign(base + path, form, token)
    return client.post(path, data=form, headers=headers)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def rows(app, stmt):
    with app.extensions["endrigo"].db.session() as session:
        return list(session.execute(stmt))


def scalar(app, stmt):
    with app.extensions["endrigo"].db.session() as session:
        return session.scalar(stmt)


def inbound_done(app, expected: int) -> bool:
    return scalar(app, select(func.count()).select_from(Message).where(
        Message.direction == "in", Message.status.in_(("answered", "failed")))) == expected


def overlaps(intervals):
    ordered = sorted(intervals)
    return any(b[0] < a[1] for a, b in zip(ordered, ordered[1:]))
