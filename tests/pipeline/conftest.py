"""Fixtures of the pipeline tests: an app with every provider on its emulator, and voice notes."""
from __future__ import annotations

import tempfile

import pytest
from sqlalchemy import select

from app.models import Message
from tests.conftest import post_signed

PATH = "/webhook/whatsapp"
USER = "whatsapp:+5511999990001"


@pytest.fixture
def voice_app(make_app, openai_fake, elevenlabs_fake, tmp_path, monkeypatch):
    """An app with every provider on its emulator; temporary files go to a folder we can inspect."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    def factory(**overrides):
        values = dict(
            openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url, openai_max_retries=0,
            elevenlabs_api_key=elevenlabs_fake.api_key, elevenlabs_base_url=elevenlabs_fake.base_url,
            media_allowed_hosts=("127.0.0.1", "localhost"),
        )
        values.update(overrides)
        app = make_app(**values)
        app.scratch = scratch
        return app

    return factory


def send_voice_note(app, twilio_fake, audio: bytes, content_type="audio/ogg", body=""):
    form = twilio_fake.inbound_form(body=body, media=(audio, content_type), MessageType="audio")
    assert post_signed(app.test_client(), PATH, form, twilio_fake.auth_token).status_code == 200
    return form


def inbound(app):
    with app.extensions["endrigo"].db.session() as session:
        return session.scalar(select(Message).where(Message.direction == "in"))


def finished(app):
    row = inbound(app)
    return row is not None and row.status in ("answered", "failed")
