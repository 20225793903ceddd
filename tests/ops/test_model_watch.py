"""Model-shutdown watch: OpenAI's shutdown_date through the real SDK against the emulator,
the shipped table when offline or when the call fails, and what operators see (/health,
the dashboard banner, the log), including refusing to boot when OpenAI says a needed
model is gone.
"""
from __future__ import annotations

import datetime as dt
import logging
import time

import openai
import pytest

from app.clients.openai_client import OpenAIError, OpenAIGateway
from app.config import ConfigError, Settings
from app.ops import model_watch
from app.ops.model_watch import ModelWatch, known_shutdown
from tests.conftest import wait_for
from tests.web.dashboard.test_dashboard import PASSWORD, login

TODAY = dt.date(2026, 12, 1)


def gateway_for(fake, **overrides) -> OpenAIGateway:
    return OpenAIGateway(Settings.from_env(env={}, openai_api_key=fake.api_key, openai_base_url=fake.v1_url,
                                           openai_max_retries=0, **overrides))


def watch_for(settings: Settings, today: dt.date = TODAY, **kwargs) -> ModelWatch:
    return ModelWatch(settings, OpenAIGateway(settings), today=lambda: today, **kwargs)


def online(fake, **overrides) -> Settings:
    return Settings.from_env(env={}, openai_api_key=fake.api_key, openai_base_url=fake.v1_url,
                             openai_max_retries=0, **overrides)


@pytest.fixture
def stop_watches():
    """Stop the daily threads of the apps a test built (they would outlive it, sleeping)."""
    apps = []
    yield apps.append
    for app in apps:
        app.extensions["model_watch"].stop()


# -- the emulator's models endpoint and the gateway, through the real SDK ----------------------
def test_model_info_reads_shutdown_date_through_the_sdk(openai_fake):
    openai_fake.set_model("gpt-legacy", "2027-03-31")
    gateway = gateway_for(openai_fake)
    assert gateway.model_info("gpt-legacy")["shutdown_date"] == "2027-03-31"
    assert gateway.model_info("gpt-5.4-mini")["shutdown_date"] is None
    assert openai_fake.requests_to("/v1/models/gpt-legacy")[0].headers["Authorization"] == f"Bearer {openai_fake.api_key}"


def test_an_unknown_model_is_none_in_the_gateway_and_404_model_not_found_on_the_wire(openai_fake):
    openai_fake.remove_model("whisper-1")
    assert gateway_for(openai_fake).model_info("whisper-1") is None
    with pytest.raises(openai.NotFoundError) as raised:
        gateway_for(openai_fake).client.models.retrieve("whisper-1")
    error = raised.value.body
    assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error" and error["message"]


def test_the_models_endpoint_checks_the_key(openai_fake):
    settings = Settings.from_env(env={}, openai_api_key="sk-wrong-key-000000", openai_base_url=openai_fake.v1_url,
                                 openai_max_retries=0)
    with pytest.raises(OpenAIError) as err:
        OpenAIGateway(settings).model_info("gpt-5.4-mini")
    assert err.value.kind == "auth" and "sk-wrong" not in err.value.reason


def test_a_404_without_model_not_found_is_an_error_not_a_gone_model(openai_fake):
    # An OpenAI-compatible server without this endpoint: its 404 says nothing about the model.
    openai_fake.fail_next(404, body={"error": {"message": "Not found", "type": "invalid_request_error",
                                               "param": None, "code": None}}, path_contains="/v1/models/")
    with pytest.raises(OpenAIError) as err:
        gateway_for(openai_fake).model_info("gpt-5.4-mini")
    assert err.value.kind == "permanent" and "404" in err.value.reason


def test_the_field_is_absent_from_the_dict_when_the_api_does_not_send_it(openai_fake):
    openai_fake.fail_next(200, body={"id": "whisper-1", "object": "model", "created": 1, "owned_by": "openai"},
                          path_contains="/v1/models/")
    assert "shutdown_date" not in gateway_for(openai_fake).model_info("whisper-1")


# -- the policy ----------------------------------------------------------------------------------
def test_the_shipped_table():
    assert known_shutdown("gpt-realtime") == known_shutdown("gpt-realtime-mini") == dt.date(2027, 1, 20)
    for model in ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"):
        assert known_shutdown(model) == dt.date(2027, 2, 26)
    for model in ("gpt-realtime-2", "gpt-transcribe", "gpt-5.4-mini", "text-embedding-3-small"):
        assert known_shutdown(model) is None


def test_online_the_api_date_wins_over_the_table(openai_fake):
    openai_fake.set_model("whisper-1", "2027-04-01")  # the API moved the date: believe it
    checks = watch_for(online(openai_fake, openai_transcribe_model="whisper-1")).check()
    whisper = next(c for c in checks if c.setting == "OPENAI_TRANSCRIBE_MODEL")
    assert whisper.shutdown_date == dt.date(2027, 4, 1) and whisper.source == "api"
    asked = {r.path for r in openai_fake.requests_to("/v1/models/")}
    assert asked == {"/v1/models/gpt-5.4-mini", "/v1/models/whisper-1", "/v1/models/text-embedding-3-small",
                     "/v1/models/gpt-realtime-2"}


def test_online_a_null_date_from_the_api_means_no_warning(openai_fake):
    openai_fake.set_model("whisper-1", None)
    watch = watch_for(online(openai_fake, openai_transcribe_model="whisper-1"))
    watch.check()
    assert watch.deprecations() == []


def test_offline_the_table_gives_the_dates(openai_fake):
    settings = Settings.from_env(env={}, openai_transcribe_model="gpt-4o-mini-transcribe",
                                 openai_realtime_model="gpt-realtime")
    watch = watch_for(settings)
    watch.check()
    assert watch.deprecations() == [
        {"setting": "OPENAI_TRANSCRIBE_MODEL", "model": "gpt-4o-mini-transcribe", "shutdown_date": "2027-02-26",
         "state": "scheduled"},
        {"setting": "OPENAI_REALTIME_MODEL", "model": "gpt-realtime", "shutdown_date": "2027-01-20",
         "state": "scheduled"},
    ]
    assert openai_fake.requests == []


@pytest.mark.parametrize("fault", ["server error", "no such endpoint", "field absent", "unreachable"])
def test_when_the_api_cannot_tell_the_table_is_used(openai_fake, fault):
    settings = online(openai_fake, openai_transcribe_model="whisper-1")
    if fault == "server error":
        openai_fake.fail_next(500, times=10, path_contains="/v1/models/")
    elif fault == "no such endpoint":
        openai_fake.fail_next(404, body={"error": {"message": "Not found", "type": "x", "param": None, "code": None}},
                              times=10, path_contains="/v1/models/")
    elif fault == "field absent":
        openai_fake.fail_next(200, body={"id": "whisper-1", "object": "model", "created": 1, "owned_by": "openai"},
                              times=10, path_contains="/v1/models/")
    else:
        settings = settings.replace(openai_base_url="http://127.0.0.1:9/v1")
    checks = watch_for(settings).check()
    whisper = next(c for c in checks if c.setting == "OPENAI_TRANSCRIBE_MODEL")
    assert whisper.shutdown_date == dt.date(2027, 2, 26) and whisper.source == "table" and not whisper.not_found


def test_the_log_warns_before_the_date_and_errs_after_it(caplog):
    settings = Settings.from_env(env={}, openai_transcribe_model="whisper-1")
    with caplog.at_level(logging.INFO, logger="app.ops.model_watch"):
        watch_for(settings, today=dt.date(2027, 2, 1)).check()
        watch_for(settings, today=dt.date(2027, 2, 26)).check()
    before, after = [r for r in caplog.records if "whisper-1" in r.getMessage()]
    assert before.levelno == logging.WARNING and "shuts down on 2027-02-26, in 25 days (shipped table)" in before.getMessage()
    assert after.levelno == logging.ERROR and "was shut down on 2027-02-26" in after.getMessage()


def test_the_daily_loop_checks_again(openai_fake):
    watch = watch_for(online(openai_fake), interval_seconds=0.05)
    watch.start(wait_seconds=5)
    try:
        wait_for(lambda: len(openai_fake.requests_to("/v1/models/gpt-5.4-mini")) >= 3, timeout=5)
    finally:
        watch.stop()


# -- in the app -----------------------------------------------------------------------------------
def test_health_and_the_status_banner_report_a_configured_model_with_a_date(make_app, openai_fake, stop_watches):
    openai_fake.set_model("whisper-1", "2027-02-26")
    app = make_app(openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url,
                   openai_transcribe_model="whisper-1", dashboard_password=PASSWORD)
    stop_watches(app)
    client = app.test_client()
    body = client.get("/health").get_json()
    assert body["deprecations"] == [{"setting": "OPENAI_TRANSCRIBE_MODEL", "model": "whisper-1",
                                     "shutdown_date": "2027-02-26", "state": "scheduled"}]
    page = client.get("/").get_data(as_text=True)
    assert 'id="model-shutdown-banner"' in page
    assert "OPENAI_TRANSCRIBE_MODEL=whisper-1" in page and "será desligado em 26/02/2027" in page
    assert 'id="model-shutdown-banner"' not in client.get("/login").get_data(as_text=True)
    login(client)
    assert "será desligado em 26/02/2027" in client.get("/conversations").get_data(as_text=True)


def test_no_banner_and_no_deprecations_with_current_models(make_app, openai_fake, stop_watches):
    app = make_app(openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url)
    stop_watches(app)
    client = app.test_client()
    assert client.get("/health").get_json()["deprecations"] == []
    assert 'id="model-shutdown-banner"' not in client.get("/").get_data(as_text=True)


def test_an_app_without_background_threads_uses_the_table_and_calls_no_one(make_app, openai_fake):
    app = make_app(start_workers=False, openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url,
                   openai_realtime_model="gpt-realtime-mini")
    assert app.test_client().get("/health").get_json()["deprecations"] == [
        {"setting": "OPENAI_REALTIME_MODEL", "model": "gpt-realtime-mini", "shutdown_date": "2027-01-20",
         "state": "scheduled"}]
    assert openai_fake.requests_to("/v1/models") == []


def test_online_a_model_openai_says_is_gone_stops_the_boot(make_app, openai_fake, caplog):
    openai_fake.remove_model("gpt-4o-mini-transcribe")
    with caplog.at_level(logging.ERROR), pytest.raises(ConfigError, match="OPENAI_TRANSCRIBE_MODEL=gpt-4o-mini"):
        make_app(openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url,
                 openai_transcribe_model="gpt-4o-mini-transcribe")
    assert "OpenAI says OPENAI_TRANSCRIBE_MODEL=gpt-4o-mini-transcribe does not exist" in caplog.text


def test_a_gone_realtime_model_is_logged_but_does_not_stop_the_boot(make_app, openai_fake, caplog, stop_watches):
    openai_fake.remove_model("gpt-realtime")
    with caplog.at_level(logging.ERROR, logger="app.ops.model_watch"):
        app = make_app(openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url,
                       openai_realtime_model="gpt-realtime")
    stop_watches(app)
    assert "OpenAI says OPENAI_REALTIME_MODEL=gpt-realtime does not exist" in caplog.text
    deprecations = app.test_client().get("/health").get_json()["deprecations"]
    assert deprecations == [{"setting": "OPENAI_REALTIME_MODEL", "model": "gpt-realtime",
                             "shutdown_date": "2027-01-20", "state": "not_found"}]


def test_offline_a_date_already_past_is_an_error_but_the_app_boots(make_app, caplog, monkeypatch):
    monkeypatch.setattr(model_watch, "utc_today", lambda: dt.date(2027, 3, 1))
    with caplog.at_level(logging.ERROR, logger="app.ops.model_watch"):
        app = make_app(start_workers=False, openai_transcribe_model="whisper-1")
    assert "OPENAI_TRANSCRIBE_MODEL=whisper-1 was shut down on 2027-02-26 (shipped table)" in caplog.text
    page = app.test_client().get("/").get_data(as_text=True)
    assert "foi desligado em 26/02/2027" in page


def test_a_slow_api_does_not_hold_the_boot(make_app, openai_fake, monkeypatch, stop_watches):
    monkeypatch.setattr(model_watch, "STARTUP_WAIT_SECONDS", 0.3)
    openai_fake.set_model("whisper-1", "2027-05-05")
    openai_fake.set_latency(1.0, path_contains="/v1/models/")
    started = time.monotonic()
    app = make_app(openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url,
                   openai_transcribe_model="whisper-1")
    stop_watches(app)
    assert time.monotonic() - started < 3.0
    client = app.test_client()
    # Until OpenAI answers, the table's date; then the API's.
    assert client.get("/health").get_json()["deprecations"][0]["shutdown_date"] == "2027-02-26"
    wait_for(lambda: client.get("/health").get_json()["deprecations"][0]["shutdown_date"] == "2027-05-05",
             timeout=15)
