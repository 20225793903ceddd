"""Configuration (app/config.py): boot normalisation, bad values named, start-up warnings, .env.example."""
from __future__ import annotations

import logging

import pytest

from app.config import ConfigError, Settings, boot_warnings, normalize_whatsapp_number


@pytest.mark.parametrize("raw", ["14155238886", "+14155238886", "whatsapp:+14155238886", " +1 (415) 523-8886 "])
def test_phone_number_is_normalised_at_boot(raw):
    assert Settings.from_env(env={"TWILIO_PHONE_NUMBER": raw}).twilio_phone_number == "whatsapp:+14155238886"
    assert normalize_whatsapp_number(raw) == "whatsapp:+14155238886"


@pytest.mark.parametrize("raw", ["hello", "whatsapp:+", "+0123", "123"])
def test_a_value_that_is_not_a_phone_number_stops_start_up_naming_the_variable(raw):
    with pytest.raises(ConfigError, match="TWILIO_PHONE_NUMBER"):
        Settings.from_env(env={"TWILIO_PHONE_NUMBER": raw})


def test_other_bad_values_name_their_variable():
    with pytest.raises(ConfigError, match="WORKERS"):
        Settings.from_env(env={"WORKERS": "many"})
    with pytest.raises(ConfigError, match="MEDIA_BACKEND"):
        Settings.from_env(env={"MEDIA_BACKEND": "ftp"})
    with pytest.raises(ConfigError, match="GCS_BUCKET_NAME"):
        Settings.from_env(env={"MEDIA_BACKEND": "gcs"})


def test_postgres_urls_use_psycopg2():
    settings = Settings.from_env(env={"DATABASE_URL": "postgres://u:p@db.example.com/x"})
    assert settings.database_url == "postgresql+psycopg2://u:p@db.example.com/x"


def test_assistant_id_and_unsigned_webhooks_warn_at_start(make_app, caplog):
    with caplog.at_level(logging.WARNING):
        make_app(start_workers=False, assistant_id="asst_123", twilio_validate_signature=False)
    text = caplog.text
    assert "Assistants API was shut down on 2026-08-26" in text and "documents/persona.md" in text
    assert "TWILIO_VALIDATE_SIGNATURE=false" in text
    warnings = boot_warnings(Settings.from_env(env={}))
    assert any("OFFLINE MODE" in w for w in warnings)


def test_every_environment_variable_read_is_documented_in_env_example():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    read = set(re.findall(r'env(?:\.get)?\(\s*(?:env,\s*)?"([A-Z_]+)"', (root / "app/config.py").read_text()))
    read |= set(re.findall(r'_(?:str|int|float)\(env, "([A-Z_]+)"', (root / "app/config.py").read_text()))
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (root / ".env.example").read_text(), re.M))
    assert read and read <= documented, f"undocumented: {sorted(read - documented)}"
