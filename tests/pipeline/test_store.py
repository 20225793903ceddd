"""The store stage (app/pipeline/store.py): when the voice note cannot be stored, the answer
goes as text in the same turn (no retry, no holding message) and storage is marked degraded."""
from __future__ import annotations

from sqlalchemy import select

from app.models import Turn
from tests.conftest import rows, wait_for
from tests.fakes import audio_samples
from tests.pipeline.conftest import USER, finished, inbound, send_voice_note


def test_a_storage_failure_sends_the_answer_as_text(voice_app, twilio_fake, elevenlabs_fake, monkeypatch):
    app = voice_app()
    services = app.extensions["endrigo"]

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(services.storage, "save", disk_full)
    send_voice_note(app, twilio_fake, audio_samples.speech_like_ogg(3.0))
    wait_for(lambda: finished(app), timeout=30)
    assert len(elevenlabs_fake.requests_to("/v1/text-to-speech/")) == 1  # a voice reply was made ...
    sent = [m for m in twilio_fake.sent if m["to"] == USER]
    assert len(sent) == 1 and not sent[0]["media_url"]  # ... but the answer went as text
    assert sent[0]["body"].startswith("[fake]")
    assert inbound(app).status == "answered"
    assert rows(app, select(Turn.status, Turn.attempts, Turn.reply_kind)) == [("answered", 1, "text")]
    assert services.provider_health.snapshot()["storage"]["state"] == "degraded"
